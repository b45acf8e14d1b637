// The expert-parallel routing plan (include/exflow/route_plan.hpp): the routing rulebook
// (src/core/routing.hpp) applied token by token, kept per (token, layer) for the engines.
#include "exflow/route_plan.hpp"

#include <algorithm>

#include "core/routing.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/runtime.hpp"
#include "exflow/topology.hpp"

namespace exflow::runtime {
namespace {

std::size_t sz(std::int64_t n) {
  return static_cast<std::size_t>(n);
}

}  // namespace

std::string to_string(ParallelMode mode) {
  switch (mode) {
    case ParallelMode::kBaseline:
      return "baseline";
    case ParallelMode::kExflow:
      return "exflow";
    case ParallelMode::kDeepEP:
      return "deepep";
  }
  return "unknown";
}

ParallelMode parse_parallel_mode(const std::string& name) {
  if (name == "baseline") return ParallelMode::kBaseline;
  if (name == "exflow") return ParallelMode::kExflow;
  if (name == "deepep") return ParallelMode::kDeepEP;
  throw UsageError("unknown parallel mode '" + name + "' (baseline, exflow, deepep)");
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

  const routing::HopTable hops(topology);
  const routing::CopyTable copies(placement);
  routing::TokenGpus h(K);
  for (std::int64_t t = 0; t < plan.tokens; ++t) {
    const int owner = routing::owner(t, workload.seq_len, G);
    int previous_home = -1;
    for (int l = 0; l < L; ++l) {
      const std::size_t tl = sz(t) * sz(L) + sz(l);
      const std::int32_t* ids = routes.data() + tl * sz(K);
      int at = owner;
      if (mode == ParallelMode::kExflow) at = l > 0 ? previous_home : copies.start(ids[0]);
      std::int32_t* used = plan.copy.data() + tl * sz(K);
      h.clear();
      for (int c = 0; c < K; ++c) {
        used[c] = copies.choose(l, ids[c], at, hops);
        h.add(used[c]);
      }
      if (mode != ParallelMode::kExflow) {
        plan.attention[tl] = owner;
        plan.home[tl] = owner;
        continue;
      }
      const int home = h.home();
      plan.attention[tl] = l > 0 ? previous_home : kEveryGpu;
      plan.home[tl] = home;
      previous_home = home;
    }
  }
  return plan;
}

DeepEPStages deepep_stages(const RoutePlan& plan, const Topology& topology,
                           std::span<const std::int64_t> row_tokens, int layer) {
  if (plan.mode == ParallelMode::kExflow) {
    throw UsageError("deepep_stages: the plan must route from owners (baseline or deepep)");
  }
  if (topology.gpus() != plan.gpus) {
    throw UsageError("deepep_stages: the topology has " + std::to_string(topology.gpus()) +
                     " GPUs, the plan " + std::to_string(plan.gpus));
  }
  const routing::HopTable hops(topology);
  routing::TokenGpus h(plan.k);
  DeepEPStages stages;
  for (std::size_t r = 0; r < row_tokens.size(); ++r) {
    const std::int64_t t = row_tokens[r];
    h.clear();
    for (int c = 0; c < plan.k; ++c) h.add(plan.gpu(t, layer, c));
    const int owner = plan.attention_gpu(t, layer);
    const int row = static_cast<int>(r);
    // The rulebook's transfers start or end on the owner exactly when they belong to the
    // exchange with the owner; the others are the relays' forwards within their node.
    routing::deepep_transfers(h, owner, hops, [&](int phase, int src, int dst) {
      if (phase == routing::kDispatch) {
        (src == owner ? stages.dispatch_from_owner : stages.dispatch_forward)
            .push_back({row, src, dst});
      } else {
        (dst == owner ? stages.combine_to_owner : stages.combine_to_relay)
            .push_back({row, src, dst});
      }
    });
  }
  return stages;
}

}  // namespace exflow::runtime
