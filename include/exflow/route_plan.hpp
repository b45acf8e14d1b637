// Where every token of a workload runs in an expert-parallel engine: for each token and layer,
// the GPU whose copy serves each of its k experts, where its attention runs and where its expert
// outputs are combined. Both engines of exflow-run (docs/runtime.md) follow this plan, and every
// rank computes it from the same trace and placement, so a rank knows what it will receive
// without asking. It applies the cost model of evaluate.hpp rule for rule:
//
// Baseline (DeepSpeed-MoE, data-parallel attention): sequence s is owned by GPU s mod G; at
// every layer the token's attention runs on its owner, which dispatches the token to every GPU
// of H_l (the distinct GPUs serving its k experts) but itself, and those GPUs send their expert
// outputs back to the owner (combine). owner = home = attention GPU at every layer.
//
// Context-coherent (ExFlow): every GPU holds every sequence's KV cache. At layer 0 each GPU of
// H_0 runs the token's attention itself (its input is known everywhere; no dispatch); from layer
// 1 on, the token's attention runs on h_{l-1}, which dispatches it to H_l \ {h_{l-1}}. The
// outputs of H_l \ {h_l} are combined into the home h_l: the GPU of H_l serving most of the
// token's experts, ties to column 0's GPU if it is among them, else to the lowest id.
//
// Copies: a token uses the copy of an expert on the GPU it is on (its owner; h_{l-1}; at layer 0
// the lowest-numbered copy of its column-0 expert), else the cheapest by hop cost, ties to the
// lowest GPU id.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace exflow {

class Placement;
class Topology;

namespace runtime {

struct ModelConfig;
struct Workload;

enum class ParallelMode {
  kBaseline,  // two all-to-alls per layer through the sequence's owner
  kExflow,    // context-coherent: one all-to-all per layer (top-k: combine, then dispatch)
};

std::string to_string(ParallelMode mode);  // "baseline" / "exflow"

// Marks "every GPU" in RoutePlan::attention (context-coherent layer 0).
inline constexpr std::int32_t kEveryGpu = -1;

struct RoutePlan {
  ParallelMode mode = ParallelMode::kBaseline;
  int gpus = 0;
  int layers = 0;
  int k = 0;
  std::int64_t tokens = 0;  // the workload's tokens, token id order
  std::int64_t sequence_length = 0;

  std::vector<std::int32_t> copy;       // [tokens, layers, k]: GPU serving column c
  std::vector<std::int32_t> attention;  // [tokens, layers]: GPU running the attention and
                                        // dispatching (kEveryGpu: each GPU of H_l itself)
  std::vector<std::int32_t> home;       // [tokens, layers]: GPU the outputs are combined on

  std::int32_t gpu(std::int64_t t, int l, int c) const {
    return copy[(static_cast<std::size_t>(t) * static_cast<std::size_t>(layers) +
                 static_cast<std::size_t>(l)) *
                    static_cast<std::size_t>(k) +
                static_cast<std::size_t>(c)];
  }
  std::int32_t attention_gpu(std::int64_t t, int l) const {
    return attention[static_cast<std::size_t>(t) * static_cast<std::size_t>(layers) +
                     static_cast<std::size_t>(l)];
  }
  std::int32_t home_gpu(std::int64_t t, int l) const {
    return home[static_cast<std::size_t>(t) * static_cast<std::size_t>(layers) +
                static_cast<std::size_t>(l)];
  }
  // True when GPU g serves at least one of token t's experts at layer l (g ∈ H_l).
  bool serves(std::int64_t t, int l, int g) const;
  // The GPU holding token t's residual after the last layer (its last home).
  std::int32_t final_gpu(std::int64_t t) const { return home_gpu(t, layers - 1); }
};

// routes: workload_routes(trace, config, workload), [tokens, layers, k]. Throws InputError if
// the placement's shape differs from the model's or names a GPU outside the topology.
RoutePlan plan_routes(std::span<const std::int32_t> routes, const ModelConfig& config,
                      const Workload& workload, const Placement& placement,
                      const Topology& topology, ParallelMode mode);

}  // namespace runtime
}  // namespace exflow
