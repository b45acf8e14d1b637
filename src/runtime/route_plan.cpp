// The expert-parallel routing plan (include/exflow/route_plan.hpp): the cost model of
// src/core/evaluate.cpp applied token by token, kept per (token, layer) for the engines.
#include "exflow/route_plan.hpp"

#include <algorithm>

#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/runtime.hpp"
#include "exflow/topology.hpp"

namespace exflow::runtime {
namespace {

std::size_t sz(std::int64_t n) {
  return static_cast<std::size_t>(n);
}

// The copy of expert e at layer l a token on GPU `at` uses: the one on `at`, else the
// cheapest by hop cost, ties to the lowest GPU id (copies ascending).
int copy_used(const std::vector<int>& copies, int at, const Topology& topology) {
  int best = copies.front();
  for (int g : copies) {
    if (g == at) return g;
    if (topology.cost(at, g) < topology.cost(at, best)) best = g;
  }
  return best;
}

}  // namespace

std::string to_string(ParallelMode mode) {
  return mode == ParallelMode::kBaseline ? "baseline" : "exflow";
}

bool RoutePlan::serves(std::int64_t t, int l, int g) const {
  for (int c = 0; c < k; ++c) {
    if (gpu(t, l, c) == g) return true;
  }
  return false;
}

RoutePlan plan_routes(std::span<const std::int32_t> routes, const ModelConfig& config,
                      const Workload& workload, const Placement& placement,
                      const Topology& topology, ParallelMode mode) {
  const int L = config.layers;
  const int E = config.experts;
  const int K = config.k;
  const int G = topology.gpus();
  if (placement.layers() != L || placement.experts() != E) {
    throw InputError("placement has " + std::to_string(placement.layers()) + " layers x " +
                     std::to_string(placement.experts()) + " experts, the model " +
                     std::to_string(L) + " x " + std::to_string(E));
  }
  validate(placement, topology, Balance::kNone);
  RoutePlan plan;
  plan.mode = mode;
  plan.gpus = G;
  plan.layers = L;
  plan.k = K;
  plan.tokens = workload.tokens();
  plan.sequence_length = workload.seq_len;
  if (routes.size() != sz(plan.tokens) * sz(L) * sz(K)) {
    throw UsageError("plan_routes: routes must be [tokens, layers, k] of the workload");
  }
  plan.copy.resize(routes.size());
  plan.attention.resize(sz(plan.tokens) * sz(L));
  plan.home.resize(plan.attention.size());

  // Copies of every (layer, expert), ascending GPU ids.
  std::vector<std::vector<int>> copies(sz(L) * sz(E));
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) copies[sz(l) * sz(E) + sz(e)] = placement.copies(l, e);
  }
  std::vector<int> multiplicity(sz(G), 0);
  for (std::int64_t t = 0; t < plan.tokens; ++t) {
    const int owner = static_cast<int>((t / workload.seq_len) % G);
    int previous_home = -1;
    for (int l = 0; l < L; ++l) {
      const std::size_t tl = sz(t) * sz(L) + sz(l);
      const std::int32_t* ids = routes.data() + tl * sz(K);
      int at = owner;
      if (mode == ParallelMode::kExflow) {
        at = l > 0 ? previous_home : copies[sz(ids[0])].front();
      }
      std::int32_t* used = plan.copy.data() + tl * sz(K);
      for (int c = 0; c < K; ++c) {
        used[c] = copy_used(copies[sz(l) * sz(E) + sz(ids[c])], at, topology);
      }
      if (mode == ParallelMode::kBaseline) {
        plan.attention[tl] = owner;
        plan.home[tl] = owner;
        continue;
      }
      // Home: most of the token's experts; ties to column 0's GPU, else the lowest id.
      int best = 0;
      for (int c = 0; c < K; ++c) best = std::max(best, ++multiplicity[sz(used[c])]);
      int home = used[0];
      if (multiplicity[sz(home)] != best) {
        home = G;
        for (int c = 0; c < K; ++c) {
          if (multiplicity[sz(used[c])] == best) home = std::min(home, used[c]);
        }
      }
      for (int c = 0; c < K; ++c) multiplicity[sz(used[c])] = 0;
      plan.attention[tl] = l > 0 ? previous_home : kEveryGpu;
      plan.home[tl] = home;
      previous_home = home;
    }
  }
  return plan;
}

}  // namespace exflow::runtime
