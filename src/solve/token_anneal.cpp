// Step 1b of the token search: simulated annealing of each layer's grouping, over swaps, from
// per-token GPU (and node) counts, so that a swap costs O(1) per token it touches. Keeps the
// best grouping seen.
//
// Context-coherent scheme: for layer l with the homes of layer l-1 fixed, minimises the sum over
// tokens of 2 |H_t| - [h_{l-1}(t) in H_t] (the layer's cost without the home's own tie-breaks,
// in transfers, on one node); layers in order, so each sees its predecessor's new homes.
//
// Owner-routed schemes (no replicas), the layer's exact cost for a token owned by o:
//   standard    sum over g in H, g != o, of 2 d(o, g)
//   deepep      2 intra · #{g in H : g's local index != o's} + 2 inter · #{nodes of H but o's}
//               (the GPU of a remote node with o's local index is the relay, which the RDMA
//               transfer reaches directly; every other GPU of H gets an NVLink transfer)
//   deepep-ll   sum over columns c of 2 d(o, g_c)
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/routing.hpp"
#include "core/splitmix64.hpp"
#include "solve/token_moves.hpp"

namespace exflow::solvers::token_moves {

namespace {

// 100 E (E/G) swaps per layer, fewer where that would touch over 2e9 tokens in all (5e8 for the
// owner-routed schemes, whose annealing runs on DeepSeek-scale topologies too).
std::int64_t default_anneal_swaps(const TokenState& state) {
  const int E = state.experts();
  const double per_swap = 2.0 * static_cast<double>(state.tokens()) * state.k() / E;
  const double touches = state.from_owner() ? 5e8 : 2e9;
  const double cap = touches / state.layers() / std::max(1.0, per_swap);
  const double full = 100.0 * E * std::max(1, E / state.gpus());
  return std::max<std::int64_t>(1000, static_cast<std::int64_t>(std::min(full, cap)));
}

// Anneals layer l's grouping and leaves the best one seen in the state. cnt [T, G] and
// node_cnt [T, N] are scratch. Stops early, with the best seen, once the search has run
// `stop_at` seconds (control.elapsed()).
void anneal_layer(TokenState& state, int l, std::int64_t swaps, SplitMix64& rng,
                  std::vector<std::int32_t>& cnt, std::vector<std::int32_t>& node_cnt,
                  std::vector<std::int32_t>& stamp, const SearchControl& control, double stop_at) {
  const int E = state.experts();
  const int G = state.gpus();
  const int k = state.k();
  const std::int64_t T = state.tokens();
  const routing::HopTable& hops = state.hops();
  const int N =
      static_cast<int>(node_cnt.size() / static_cast<std::size_t>(std::max<std::int64_t>(1, T)));
  const int P = G / N;
  const Scheme scheme = state.scheme();
  // cnt [T, G]: how many of token t's columns the GPU serves; node_cnt [T, N] the same by node.
  std::fill(cnt.begin(), cnt.end(), 0);
  std::fill(node_cnt.begin(), node_cnt.end(), 0);
  for (std::int64_t t = 0; t < T; ++t) {
    for (int c = 0; c < k; ++c) {
      const int g = state.primary(l, state.sample().id(l, t, c));
      ++cnt[static_cast<std::size_t>(t) * G + g];
      ++node_cnt[static_cast<std::size_t>(t) * N + hops.node_of(g)];
    }
  }
  const int* prev = state.entries(l);
  const double intra2 = 2 * hops.cost_of_hop(routing::kIntra);
  const double inter2 = 2 * hops.cost_of_hop(routing::kInter);
  std::vector<std::int64_t> gpu_load(static_cast<std::size_t>(G), 0);
  const std::int64_t* eload = state.expert_loads(l).data();
  for (int e = 0; e < E; ++e) gpu_load[static_cast<std::size_t>(state.primary(l, e))] += eload[e];
  const std::int64_t cap = state.cap(l);
  std::int32_t stamp_id = 0;
  // Cost change of moving one column of an expert from ga to gb for token t (the token's
  // counts before the move).
  auto token_delta = [&](std::int64_t t, int ga, int gb) -> double {
    const std::int32_t* ct = cnt.data() + static_cast<std::size_t>(t) * G;
    const int o = prev != nullptr ? prev[t] : -1;
    switch (scheme) {
      case Scheme::kContextCoherent: {
        int d = 0;
        if (ct[ga] == 1) d -= 2 - (o == ga ? 1 : 0);
        if (ct[gb] == 0) d += 2 - (o == gb ? 1 : 0);
        return d;
      }
      case Scheme::kBaseline:
        return (ct[ga] == 1 ? -2 * hops.cost(o, ga) : 0.0) +
               (ct[gb] == 0 ? 2 * hops.cost(o, gb) : 0.0);
      case Scheme::kDeepEPLowLatency:
        return 2 * (hops.cost(o, gb) - hops.cost(o, ga));
      case Scheme::kDeepEP: {
        double d = 0;
        if (ct[ga] == 1 && ga % P != o % P) d -= intra2;
        if (ct[gb] == 0 && gb % P != o % P) d += intra2;
        const int na = hops.node_of(ga), nb = hops.node_of(gb), no = hops.node_of(o);
        if (na != nb) {
          const std::int32_t* nt = node_cnt.data() + static_cast<std::size_t>(t) * N;
          if (nt[na] == 1 && na != no) d -= inter2;
          if (nt[nb] == 0 && nb != no) d += inter2;
        }
        return d;
      }
    }
    return 0.0;
  };
  auto swap_delta = [&](int a, int b, int ga, int gb) {
    ++stamp_id;
    const std::span<const std::int32_t> ta = state.tokens_of(l, a);
    const std::span<const std::int32_t> tb = state.tokens_of(l, b);
    for (std::int32_t t : tb) stamp[static_cast<std::size_t>(t)] = stamp_id;
    double d = 0;
    for (std::int32_t t : ta) {
      if (stamp[static_cast<std::size_t>(t)] == stamp_id)
        stamp[static_cast<std::size_t>(t)] = -2;
      else
        d += token_delta(t, ga, gb);
    }
    for (std::int32_t t : tb) {
      if (stamp[static_cast<std::size_t>(t)] == stamp_id) d += token_delta(t, gb, ga);
    }
    return d;
  };
  auto move_column = [&](std::int32_t t, int from, int to) {
    std::int32_t* ct = cnt.data() + static_cast<std::size_t>(t) * G;
    std::int32_t* nt = node_cnt.data() + static_cast<std::size_t>(t) * N;
    --ct[from];
    ++ct[to];
    --nt[hops.node_of(from)];
    ++nt[hops.node_of(to)];
  };
  auto apply = [&](int a, int b, int ga, int gb) {
    for (std::int32_t t : state.tokens_of(l, a)) move_column(t, ga, gb);
    for (std::int32_t t : state.tokens_of(l, b)) move_column(t, gb, ga);
    gpu_load[static_cast<std::size_t>(ga)] += eload[b] - eload[a];
    gpu_load[static_cast<std::size_t>(gb)] += eload[a] - eload[b];
    state.swap_primaries(l, a, b);
  };
  // Temperature: proportional to the tokens per expert (the scale of a swap's delta), from
  // 0.2 of it down to 0.001 geometrically (tuned on the ESFT traces).
  // Owner-routed schemes measure in hop costs: one transfer each way within a node is the unit.
  const double unit = scheme == Scheme::kContextCoherent ? 1.0 : intra2 / 2;
  const double per_expert = static_cast<double>(T) * k / E * unit;
  const double t0 = 0.2 * per_expert;
  const double t1 = 0.001 * per_expert;
  double current = 0, best = 0;
  std::vector<int> best_primary(state.primaries(l).begin(), state.primaries(l).end());
  // Under a load limit most swaps of experts with unlike loads are infeasible: every other
  // proposal pairs an expert with one of its 8 nearest in load on either side.
  std::vector<int> by_load(static_cast<std::size_t>(E));
  std::vector<int> rank(static_cast<std::size_t>(E));
  std::iota(by_load.begin(), by_load.end(), 0);
  std::stable_sort(by_load.begin(), by_load.end(),
                   [&](int x, int y) { return eload[x] < eload[y]; });
  for (int i = 0; i < E; ++i)
    rank[static_cast<std::size_t>(by_load[static_cast<std::size_t>(i)])] = i;
  const bool limited = cap != kNoLoadLimit;
  for (std::int64_t it = 0; it < swaps; ++it) {
    if ((it & 255) == 255 && control.elapsed() > stop_at) break;
    const double temp =
        t0 * std::pow(t1 / t0, static_cast<double>(it) / static_cast<double>(swaps));
    const int a = rng.below(E);
    int b = rng.below(E);
    if (limited && (it & 1) != 0) {
      const int r = std::clamp(rank[static_cast<std::size_t>(a)] + rng.below(17) - 8, 0, E - 1);
      b = by_load[static_cast<std::size_t>(r)];
    }
    const int ga = state.primary(l, a);
    const int gb = state.primary(l, b);
    if (ga == gb) continue;
    if (cap != kNoLoadLimit) {
      const std::int64_t d = eload[b] - eload[a];
      if (gpu_load[static_cast<std::size_t>(ga)] + d > cap ||
          gpu_load[static_cast<std::size_t>(gb)] - d > cap)
        continue;
    }
    const double d = swap_delta(a, b, ga, gb);
    if (d > 0) {
      const double u = static_cast<double>(rng.next() >> 11) * 0x1.0p-53;
      if (u >= std::exp(-d / temp)) continue;
    }
    apply(a, b, ga, gb);
    current += d;
    if (current < best - 1e-9) {
      best = current;
      std::copy(state.primaries(l).begin(), state.primaries(l).end(), best_primary.begin());
    }
  }
  state.assign_layer(l, best_primary);
}

}  // namespace

void anneal_layers(TokenState& state, const SearchControl& control) {
  std::vector<int> before;  // [L, E]
  for (int l = 0; l < state.layers(); ++l) {
    const std::span<const int> layer = state.primaries(l);
    before.insert(before.end(), layer.begin(), layer.end());
  }
  const double before_total = state.total();
  SplitMix64 rng(control.options().seed ^ 0x5eedULL);
  const std::int64_t swaps = control.options().anneal_swaps > 0 ? control.options().anneal_swaps
                                                                : default_anneal_swaps(state);
  const int nodes = state.hops().nodes();
  std::vector<std::int32_t> cnt(static_cast<std::size_t>(state.tokens()) * state.gpus());
  std::vector<std::int32_t> node_cnt(static_cast<std::size_t>(state.tokens()) * nodes);
  std::vector<std::int32_t> stamp(static_cast<std::size_t>(state.tokens()), -1);
  // Under a time limit the annealing takes at most 40% of it: after each layer, the swaps of the
  // layers left are cut to what the time left allows at the rate measured so far, and a layer
  // that runs past the share stops with the best grouping it has seen.
  const double time_limit = control.options().time_limit;
  const double started = control.elapsed();
  const double stop_at =
      time_limit > 0 ? started + 0.4 * time_limit : std::numeric_limits<double>::infinity();
  std::int64_t swaps_done = 0;
  const int L = state.layers();
  for (int l = 0; l < L && !control.past_time_limit(); ++l) {
    std::int64_t layer_swaps = swaps;
    if (time_limit > 0 && swaps_done > 0) {
      const double spent = control.elapsed() - started;
      const double left = 0.4 * time_limit - spent;
      const double per_swap = spent / static_cast<double>(swaps_done);
      layer_swaps = std::clamp<std::int64_t>(
          static_cast<std::int64_t>(left / (L - l) / std::max(1e-12, per_swap)), 100, swaps);
    }
    anneal_layer(state, l, layer_swaps, rng, cnt, node_cnt, stamp, control, stop_at);
    swaps_done += layer_swaps;
    // This layer's homes, for the next layer's annealing.
    state.rehome_layer(l);
  }
  state.rebuild();
  control.log("token search: annealed layer groupings, cost " +
              format_cost(state.total() / static_cast<double>(state.tokens())));
  if (state.total() >= before_total) {
    // The context-coherent annealing counts GPUs, not hops, and its homes are approximate.
    const std::size_t E = static_cast<std::size_t>(state.experts());
    for (int l = 0; l < state.layers(); ++l) {
      state.assign_layer(l,
                         std::span<const int>(before).subspan(static_cast<std::size_t>(l) * E, E));
    }
    state.rebuild();
    control.log("token search: kept the groupings from before the annealing");
  }
}

}  // namespace exflow::solvers::token_moves
