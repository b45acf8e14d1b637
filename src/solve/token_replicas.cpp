// Steps 2 and 3 of the token search for replica slots. Filling (step 2): for each layer and GPU,
// the expert most requested by tokens arriving on that GPU without a local copy, taking the
// exact delta of the best few candidates. Re-aiming (in each sweep of step 3): each slot moves
// to whichever of the most requested experts lowers the cost within the limits.
#include <algorithm>

#include "solve/token_moves.hpp"

namespace exflow::solvers::token_moves {

void replica_demand(const TokenState& state, int l, std::vector<std::int64_t>& demand) {
  const int E = state.experts();
  demand.assign(static_cast<std::size_t>(state.gpus()) * E, 0);
  for (std::int64_t t = 0; t < state.tokens(); ++t) {
    const int at = state.entry(l, t);
    const std::span<const int> ch = state.choices(l, t);
    for (int c = 0; c < state.k(); ++c) {
      if (ch[static_cast<std::size_t>(c)] != at)
        ++demand[static_cast<std::size_t>(at) * E + state.sample().id(l, t, c)];
    }
  }
}

std::vector<int> slot_candidates(const TokenState& state, int l, int g,
                                 const std::vector<std::int64_t>& demand, int n) {
  const int E = state.experts();
  std::vector<int> order;
  for (int e = 0; e < E; ++e) {
    if (!state.has_copy(l, e, g)) order.push_back(e);
  }
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return demand[static_cast<std::size_t>(g) * E + a] >
           demand[static_cast<std::size_t>(g) * E + b];
  });
  if (static_cast<int>(order.size()) > n) order.resize(static_cast<std::size_t>(n));
  return order;
}

void fill_replicas(TokenState& state, const SearchControl& control, int slots_per_gpu) {
  std::vector<std::int64_t> demand;
  const auto free_slots = [&](int l, int g) {
    return slots_per_gpu - static_cast<int>(state.members(l, g).size() + state.slots(l, g).size());
  };
  for (int l = 0; l < state.layers(); ++l) {
    // Round by round, one slot of each GPU that still has one free, until a round fills none
    // (all full, or a GPU already holds every expert).
    for (bool filled = true; filled;) {
      filled = false;
      replica_demand(state, l, demand);
      for (int g = 0; g < state.gpus(); ++g) {
        if (free_slots(l, g) <= 0) continue;
        // The best of the six most requested experts that keeps the limits; failing that,
        // of the 32 most requested; failing that, the one that exceeds them least. Past the
        // time limit, the most requested.
        int best = -1;
        double best_delta = 0;
        std::int64_t best_over = 0;
        const std::vector<int> widths =
            control.past_time_limit() ? std::vector<int>{1} : std::vector<int>{6, 32};
        for (int n : widths) {
          for (int e : slot_candidates(state, l, g, demand, n)) {
            state.add_copy(l, e, g);
            state.collect(l, e, -1);
            const double delta = state.evaluate(l);
            const std::int64_t over = state.added_excess();
            if (best < 0 || over < best_over || (over == best_over && delta < best_delta)) {
              best = e;
              best_delta = delta;
              best_over = over;
            }
            state.remove_last_copy(l, e, g);
          }
          if (best >= 0 && best_over == 0) break;
        }
        state.clear_dload();
        if (best < 0) continue;
        state.add_copy(l, best, g);
        state.collect(l, best, -1);
        state.commit(l);
        filled = true;
      }
    }
  }
}

void improve_replicas(TokenState& state, const SearchControl& control, int l, double min_gain) {
  std::vector<std::int64_t> demand;
  replica_demand(state, l, demand);
  for (int g = 0; g < state.gpus() && !control.out_of_time(state); ++g) {
    for (std::size_t i = 0; i < state.slots(l, g).size(); ++i) {
      // The cheapest improvement within the limits.
      const SlotChoice best =
          best_slot_expert(state, l, g, i, slot_candidates(state, l, g, demand, 4),
                           [min_gain](const SlotChoice& c, const SlotChoice& b) {
                             return c.within_limits &&
                                    c.delta < (b.expert < 0 ? -std::max(1e-9, min_gain) : b.delta);
                           });
      if (best.expert >= 0) aim_slot(state, l, g, i, best.expert);
    }
  }
}

SlotChoice best_slot_expert(
    TokenState& state, int l, int g, std::size_t i, const std::vector<int>& experts,
    const std::function<bool(const SlotChoice&, const SlotChoice&)>& better) {
  const int old = state.slots(l, g)[i];
  SlotChoice best;
  for (int e : experts) {
    state.set_slot(l, g, i, e);
    state.collect(l, std::min(old, e), std::max(old, e));
    SlotChoice c;
    c.expert = e;
    c.delta = state.evaluate(l);
    c.excess = state.excess(l);
    c.within_limits = state.within_limits();
    if (better(c, best)) best = c;
    state.set_slot(l, g, i, old);
  }
  state.clear_dload();
  return best;
}

void aim_slot(TokenState& state, int l, int g, std::size_t i, int e) {
  const int old = state.slots(l, g)[i];
  state.set_slot(l, g, i, e);
  state.collect(l, std::min(old, e), std::max(old, e));
  state.commit(l);
}

}  // namespace exflow::solvers::token_moves
