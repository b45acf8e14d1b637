// Where every token of a workload runs in an expert-parallel engine: for each token and layer,
// the GPU whose copy serves each of its k experts, where its attention runs and where its expert
// outputs are combined. The engines of exflow-run (docs/runtime.md) follow this plan, and every
// rank computes it from the same trace and placement, so a rank knows what it will receive
// without asking. It applies the cost model of evaluate.hpp rule for rule:
//
// Baseline (DeepSpeed-MoE, data-parallel attention): sequence s is owned by GPU s mod G; at
// every layer the token's attention runs on its owner, which dispatches the token to every GPU
// of H_l (the distinct GPUs serving its k experts) but itself, and those GPUs send their expert
// outputs back to the owner (combine). owner = home = attention GPU at every layer.
//
// DeepEP (normal mode, node-deduplicated): owners and copies as the baseline's; the transfers
// differ (deepep_stages below): the owner sends a token once to each other node holding a GPU
// of H_l, to the GPU there with the owner's local index (the relay), which forwards it within
// its node; the combine mirrors this.
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
  kDeepEP,    // the baseline's owners, node-deduplicated: two exchanges per phase
};

std::string to_string(ParallelMode mode);  // "baseline" / "exflow" / "deepep"
// The mode of one of those names; UsageError naming them for any other.
ParallelMode parse_parallel_mode(const std::string& name);

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

// One transfer of one row of a step: the row (its index in the step) from GPU src to GPU dst.
struct RowTransfer {
  int row = 0;
  int src = 0;
  int dst = 0;

  friend bool operator==(const RowTransfer&, const RowTransfer&) = default;
};

// DeepEP normal mode's transfers at one layer (routing::deepep_transfers, token by token), split
// into the two exchanges of each phase. Each list is in row order, a row's transfers in the
// rulebook's order, so a sender and a receiver walking the same list agree on a buffer's layout.
struct DeepEPStages {
  // Dispatch, stage 1: owner -> relay(m) for every other node m holding a GPU of H_l (one
  // inter-node row per node), and owner -> every other GPU of H_l on the owner's node.
  std::vector<RowTransfer> dispatch_from_owner;
  // Dispatch, stage 2: relay(m) -> every other GPU of H_l on node m (within the node).
  std::vector<RowTransfer> dispatch_forward;
  // Combine, stage 1: every GPU of H_l on node m but the relay -> relay(m) (within the node).
  std::vector<RowTransfer> combine_to_relay;
  // Combine, stage 2: relay(m) -> owner (its own and the forwarded partial sums in one row), and
  // every GPU of H_l on the owner's node -> owner.
  std::vector<RowTransfer> combine_to_owner;
};

// The stages of `layer` for the rows of a step, row r being token row_tokens[r] of a baseline
// or DeepEP plan (owner = the attention GPU). UsageError for a context-coherent plan or a
// topology of another GPU count.
DeepEPStages deepep_stages(const RoutePlan& plan, const Topology& topology,
                           std::span<const std::int64_t> row_tokens, int layer);

}  // namespace runtime
}  // namespace exflow
