// Step 1 of the token search, load repair: on each layer over its load limit, apply the swap
// (busiest GPU vs the least loaded) that most reduces the excess, cheapest first; if swaps
// stall, rebalance the layer by load alone (largest-first, or vanilla if that is better). With
// replicas, their slots are re-aimed first.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <span>

#include "exflow/error.hpp"
#include "solve/load_balance.hpp"
#include "solve/token_moves.hpp"

namespace exflow::solvers::token_moves {

namespace {

double mean_load(const TokenState& state) {
  return static_cast<double>(state.tokens()) * state.k() / state.gpus();
}

// The better of the contiguous layout and the load balancer's, by busiest-GPU load, each with
// the layer's present number of experts per GPU (E/G, or uneven where replica slots make up the
// difference); the assignment goes to `out` if given. With prefer_contiguous, the contiguous
// layout wherever it keeps the layer's limit (consecutive layers then line up, which a layout
// by load alone does not).
std::int64_t best_balanced_max(const TokenState& state, int l, std::vector<int>* out = nullptr,
                               bool prefer_contiguous = false) {
  const int E = state.experts();
  const int G = state.gpus();
  const std::int64_t* load = state.expert_loads(l).data();
  std::vector<int> capacity(static_cast<std::size_t>(G));
  for (int g = 0; g < G; ++g) {
    capacity[static_cast<std::size_t>(g)] = static_cast<int>(state.members(l, g).size());
  }
  std::vector<int> vanilla(static_cast<std::size_t>(E));
  for (int g = 0, e = 0; g < G; ++g) {
    for (int i = 0; i < capacity[static_cast<std::size_t>(g)]; ++i) {
      vanilla[static_cast<std::size_t>(e++)] = g;
    }
  }
  std::vector<int> balanced = balance_layer(load, E, capacity);
  const std::int64_t mv = max_gpu_load(load, vanilla.data(), E, G);
  const std::int64_t mb = max_gpu_load(load, balanced.data(), E, G);
  const bool contiguous = mv < mb || (prefer_contiguous && mv <= state.cap(l));
  if (out != nullptr) *out = contiguous ? vanilla : balanced;
  return std::min(mv, mb);
}

// Re-aims replica slots of layer l at the experts that most reduce its load excess.
void repair_replica_slots(TokenState& state, const SearchControl& control, int l) {
  std::vector<std::int64_t> demand;
  for (int round = 0; round < 4; ++round) {
    state.clear_dload();
    if (state.excess(l) == 0) return;
    replica_demand(state, l, demand);
    bool improved = false;
    for (int g = 0; g < state.gpus(); ++g) {
      for (std::size_t i = 0; i < state.slots(l, g).size(); ++i) {
        if (control.past_time_limit()) return;
        state.clear_dload();
        const std::int64_t now = state.excess(l);
        if (now == 0) return;
        // Fewest excess first, then the cheapest.
        const SlotChoice best =
            best_slot_expert(state, l, g, i, slot_candidates(state, l, g, demand, 32),
                             [&](const SlotChoice& c, const SlotChoice& b) {
                               return c.excess < (b.expert < 0 ? now : b.excess) ||
                                      (b.expert >= 0 && c.excess == b.excess && c.delta < b.delta);
                             });
        if (best.expert < 0) continue;
        aim_slot(state, l, g, i, best.expert);
        improved = true;
      }
    }
    if (!improved) return;
  }
}

}  // namespace

void check_limits_reachable(const TokenState& state, const SearchControl& control) {
  if (control.options().max_load.empty()) return;
  double worst_ratio = 0;
  int worst_layer = -1;
  for (int l = 0; l < state.layers(); ++l) {
    const std::int64_t best = best_balanced_max(state, l);
    const double ratio = static_cast<double>(best) / mean_load(state);
    if (best > state.cap(l) && (worst_layer < 0 || ratio > worst_ratio)) {
      worst_ratio = ratio;
      worst_layer = l;
    }
  }
  if (worst_layer >= 0) {
    double smallest = 0;
    for (int l = 0; l < state.layers(); ++l) {
      smallest =
          std::max(smallest, static_cast<double>(best_balanced_max(state, l)) / mean_load(state));
    }
    // Rounded up to the decimals shown, so that the ratio as printed is accepted.
    smallest = std::ceil(smallest * 1e4) / 1e4;
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "the load limit cannot be met: on layer %d the busiest GPU serves at least "
                  "%.4g x the mean in every placement found; the smallest ratio found feasible "
                  "for all layers is %.4f",
                  worst_layer, worst_ratio, smallest);
    throw UsageError(buf);
  }
}

void repair(TokenState& state, const SearchControl& control, TokenSearchResult& result,
            bool allow_reset) {
  const int E = state.experts();
  const int G = state.gpus();
  // Without replicas a layer's loads follow its own primaries alone. Then a swap moves exactly
  // the two experts' loads between their GPUs, so the excess it leaves is known without walking
  // tokens: a first pass finds the smallest excess any swap reaches, and only the swaps that reach
  // it are scored exactly, for the cost tie-break. And layers rebalanced past the time limit are
  // routed afresh once, at the end: the later layers' excess stays exact meanwhile.
  const bool loads_follow_primaries = !state.has_replicas();
  bool stale = false;
  for (int l = 0; l < state.layers(); ++l) {
    if (state.cap(l) == kNoLoadLimit) continue;
    if (!allow_reset) repair_replica_slots(state, control, l);
    const int steps = allow_reset ? 4 * E : 2 * std::max(1, E / G);
    for (int step = 0; step < steps && !control.past_time_limit(); ++step) {
      state.clear_dload();
      const std::int64_t now = state.excess(l);
      if (now == 0) break;
      int hot = 0;
      for (int g = 1; g < G; ++g) {
        if (state.load(l, g) > state.load(l, hot)) hot = g;
      }
      std::vector<int> cold(static_cast<std::size_t>(G));
      std::iota(cold.begin(), cold.end(), 0);
      std::stable_sort(cold.begin(), cold.end(),
                       [&](int x, int y) { return state.load(l, x) < state.load(l, y); });
      cold.resize(std::min<std::size_t>(cold.size(), 4));
      const std::span<const std::int64_t> eload = state.expert_loads(l);
      const auto over = [&](std::int64_t load) {
        return std::max<std::int64_t>(0, load - state.cap(l));
      };
      // The layer's excess after swapping a (on hot) with b (on g), from the loads alone.
      const auto excess_after_swap = [&](int a, int b, int g) {
        const std::int64_t shift =
            eload[static_cast<std::size_t>(a)] - eload[static_cast<std::size_t>(b)];
        return now - over(state.load(l, hot)) - over(state.load(l, g)) +
               over(state.load(l, hot) - shift) + over(state.load(l, g) + shift);
      };
      std::int64_t reachable = now;
      if (loads_follow_primaries) {
        for (int a : state.members(l, hot)) {
          for (int g : cold) {
            if (g == hot) continue;
            for (int b : state.members(l, g)) {
              if (state.can_swap(l, a, b))
                reachable = std::min(reachable, excess_after_swap(a, b, g));
            }
          }
        }
        if (reachable == now) break;
      }
      int best_a = -1, best_b = -1;
      std::int64_t best_excess = now;
      double best_delta = 0;
      // Copies of the member lists: trying a swap rewrites them (and restores them).
      for (int a : std::vector<int>(state.members(l, hot))) {
        if (control.past_time_limit()) break;
        for (int g : cold) {
          if (g == hot) continue;
          for (int b : std::vector<int>(state.members(l, g))) {
            if (!state.can_swap(l, a, b)) continue;
            if (loads_follow_primaries && excess_after_swap(a, b, g) != reachable) continue;
            const double delta = state.try_swap(l, a, b);
            const std::int64_t x = state.excess(l);
            if (x < best_excess || (x == best_excess && best_a >= 0 && delta < best_delta)) {
              if (x < now) {
                best_excess = x;
                best_delta = delta;
                best_a = a;
                best_b = b;
              }
            }
          }
        }
      }
      state.clear_dload();
      if (best_a < 0) break;
      state.do_swap(l, best_a, best_b);
    }
    state.clear_dload();
    if (state.excess(l) > 0 && allow_reset) {
      std::vector<int> layout;
      const bool late = control.past_time_limit();
      best_balanced_max(state, l, &layout, late);
      state.assign_layer(l, layout);
      ++result.layers_reset;
      if (late && loads_follow_primaries) {
        stale = true;
      } else {
        state.rebuild();
      }
    }
  }
  if (stale) state.rebuild();
}

int layers_over_limit(TokenState& state) {
  state.clear_dload();
  int n = 0;
  for (int l = 0; l < state.layers(); ++l) n += state.excess(l) > 0;
  return n;
}

}  // namespace exflow::solvers::token_moves
