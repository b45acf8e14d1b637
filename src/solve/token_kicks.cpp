// Step 4 of the token search, iterated local search: shake one layer with two random swaps,
// re-optimise it and its neighbours (narrow sweeps: the few best-estimated swaps of each), keep the
// result if the cost fell, else undo every swap in reverse order (the state is a function of the
// placement, so undoing restores it exactly).
#include <algorithm>

#include "core/splitmix64.hpp"
#include "solve/token_moves.hpp"

namespace exflow::solvers::token_moves {

void kicks(TokenState& state, const SearchControl& control, TokenSearchResult& result) {
  const int L = state.layers();
  const int E = state.experts();
  const int G = state.gpus();
  SplitMix64 rng(control.options().seed);
  const int patience =
      control.options().kick_patience >= 0 ? control.options().kick_patience : 2 * L;
  int since_better = 0;
  while (since_better < patience && !control.out_of_time(state) && G > 1) {
    const int l = rng.below(L);
    const double before = state.total();
    state.start_journal();
    for (int n = 0; n < 2; ++n) {
      const int a = rng.below(E);
      const int g = rng.below(G);
      const std::vector<int>& on_g = state.members(l, g);
      if (on_g.empty()) continue;
      const int b = on_g[static_cast<std::size_t>(rng.below(static_cast<int>(on_g.size())))];
      if (!state.can_swap(l, a, b)) continue;
      state.try_swap(l, a, b);
      const bool ok = state.within_limits();
      state.clear_dload();
      if (ok) state.do_swap(l, a, b);
    }
    for (int m = std::max(0, l - 1); m <= std::min(L - 1, l + 1); ++m) {
      improve_layer(state, control, m, 0, kNarrowTries);
    }
    state.stop_journal();
    ++result.kicks;
    if (state.total() < before - 1e-9 * std::max(1.0, before)) {
      since_better = 0;
      ++result.kicks_kept;
      continue;
    }
    ++since_better;
    state.undo_journal();
  }
}

}  // namespace exflow::solvers::token_moves
