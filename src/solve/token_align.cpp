// Step 1c of the token search, context-coherent scheme without replica slots: re-align the
// layers' GPU labels to the tokens' homes.
//
// Relabelling the GPUs of every layer from l on by one topology automorphism pi (nodes permuted,
// GPUs permuted within a node) keeps every transfer within those layers at its hop cost, and
// changes only the dispatches from h_{l-1} into layer l: a token pays hop(h_{l-1}, pi(g)) for
// each GPU g of its H_l. With flow[x, g] the tokens whose h_{l-1} is x and whose H_l holds g,
// the best pi is the exact alignment of solve/alignment.hpp. Each layer's pi is chosen
// against its predecessor in the labels they both had before (relabelling a suffix keeps the
// pairs inside it), and the relabellings compose from layer 1 on. The home's tie-break by GPU id
// is the one thing a relabelling can change beyond that, so the result is kept only if the
// exact cost fell.
#include <numeric>

#include "core/routing.hpp"
#include "solve/alignment.hpp"
#include "solve/token_moves.hpp"

namespace exflow::solvers::token_moves {

bool realign_layers(TokenState& state, const SearchControl& control) {
  const int L = state.layers();
  const int E = state.experts();
  const int G = state.gpus();
  if (state.from_owner() || state.has_replicas() || L < 2 || G < 2) return false;
  const routing::HopTable& hops = state.hops();
  const int N = hops.nodes();
  const GroupLayout layout{N, G / N, hops.cost_of_hop(routing::kIntra),
                           hops.cost_of_hop(routing::kInter)};
  // label[l][g]: the new label of layer l's GPU g.
  std::vector<std::vector<int>> label(static_cast<std::size_t>(L), std::vector<int>(G));
  std::iota(label[0].begin(), label[0].end(), 0);
  std::vector<double> flow(static_cast<std::size_t>(G) * G);
  routing::TokenGpus gpus(state.k());
  bool any = false;
  for (int l = 1; l < L; ++l) {
    std::vector<int>& now = label[static_cast<std::size_t>(l)];
    const std::vector<int>& before = label[static_cast<std::size_t>(l) - 1];
    if (control.past_time_limit()) {
      now = before;
      continue;
    }
    std::fill(flow.begin(), flow.end(), 0.0);
    const std::span<const int> homes = state.homes(l - 1);
    for (std::int64_t t = 0; t < state.tokens(); ++t) {
      gpus.clear();
      for (int g : state.choices(l, t)) gpus.add(g);
      double* row = flow.data() + static_cast<std::size_t>(homes[static_cast<std::size_t>(t)]) * G;
      for (int j = 0; j < gpus.size(); ++j) row[gpus.gpu(j)] += 1;
    }
    const Alignment a = align_groups(flow, layout);
    for (int g = 0; g < G; ++g) {
      now[static_cast<std::size_t>(g)] =
          before[static_cast<std::size_t>(a.gpu_of_group[static_cast<std::size_t>(g)])];
      any = any || now[static_cast<std::size_t>(g)] != g;
    }
  }
  if (!any) return false;
  const double cost_before = state.total();
  std::vector<int> old_primaries(static_cast<std::size_t>(L) * E);
  std::vector<int> gpu_of(static_cast<std::size_t>(E));
  for (int l = 0; l < L; ++l) {
    const std::span<const int> p = state.primaries(l);
    std::copy(p.begin(), p.end(), old_primaries.begin() + static_cast<std::ptrdiff_t>(l) * E);
    for (int e = 0; e < E; ++e) {
      gpu_of[static_cast<std::size_t>(e)] =
          label[static_cast<std::size_t>(l)]
               [static_cast<std::size_t>(p[static_cast<std::size_t>(e)])];
    }
    state.assign_layer(l, gpu_of);
  }
  state.rebuild();
  if (state.total() < cost_before - 1e-9 * std::max(1.0, cost_before)) {
    control.log("token search: layers re-aligned to the homes, cost " +
                format_cost(cost_before / static_cast<double>(state.tokens())) + " -> " +
                format_cost(state.total() / static_cast<double>(state.tokens())));
    return true;
  }
  for (int l = 0; l < L; ++l) {
    state.assign_layer(l,
                       std::span<const int>(old_primaries)
                           .subspan(static_cast<std::size_t>(l) * E, static_cast<std::size_t>(E)));
  }
  state.rebuild();
  return false;
}

}  // namespace exflow::solvers::token_moves
