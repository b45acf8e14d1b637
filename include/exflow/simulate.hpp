// Communication simulator: what a placement buys on a described cluster (docs/simulator.md).
//
// The evaluator (evaluate.hpp) counts, per layer and phase, the token transfers each GPU sends
// and receives within its node and across nodes, under each configuration's own scheme
// (src/core/routing.hpp states the transfers). The simulator turns them into bytes (one
// transfer = one hidden vector of `hidden · dtype_bytes` bytes), scales them to one decode step
// of `tokens_per_step` tokens (the trace's mean token), and times every collective with an α-β
// model bounded by the busiest GPU:
//   t(collective) = α + max over GPUs g of max( max(sent_intra(g), received_intra(g)) / B_intra,
//                                               max(sent_inter(g), received_inter(g)) / B_inter )
// (0 when the collective moves nothing: engines skip it). Intra-node and inter-node links run in
// parallel; each direction of a link has the full bandwidth. The same formula, fed each scheme's
// traffic, is each scheme's model:
//   standard (baseline)  owner -> every other GPU of H_l, over NVLink or the NIC by where it is.
//   deepep (normal)      an RDMA stage (owner -> the relay of every remote node, NIC bytes) and
//                        an NVLink stage (the owner's sends within its node and each relay's
//                        forwards within its node). DeepEP pipelines the two in chunks, so the
//                        dispatch takes α + max(RDMA stage, NVLink stage), each stage timed by
//                        its busiest GPU: max over g of the per-GPU max above is exactly that,
//                        with the forwards counted on the relay's NVLink (the evaluator visits
//                        relay -> g as intra-node transfers).
//   deepep-ll            one transfer per token-expert, off-node ones straight over the NIC (no
//                        NVLink forwarding in low-latency mode).
//   coherent             one all-to-all per layer plus one KV all-gather per forward step: every
//                        token's keys and values of layers 1..L-1 (layer 0's are computed on
//                        every GPU), `kv_bytes_per_token` per layer, reach the other G - 1 GPUs,
//                        each GPU contributing an equal share:
//   t(all-gather) = α + max( (P-1)/G · S / B_intra, (G-P)/G · S / B_inter ),  S = bytes gathered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "exflow/evaluate.hpp"

namespace exflow {

class Placement;
class Topology;
class Trace;

// A model's communication shape. Sources in docs/simulator.md.
struct ModelPreset {
  std::string name;
  int hidden = 0;                       // residual width: one token transfer carries this many
  std::int64_t kv_bytes_per_token = 0;  // per layer, bf16, as the model caches it
  int layers = 0;                       // MoE layers
  int experts = 0;                      // routed experts per layer
  int k = 0;                            // experts per token
  int dtype_bytes = 2;                  // activations on the wire (bf16)
  int first_dense_layers = 0;           // decoder layers before the first MoE layer
};

const std::vector<ModelPreset>& model_presets();
// Throws UsageError naming the known presets.
const ModelPreset& find_model_preset(const std::string& name);

struct Network {
  double intra_gbps = 3600;  // per GPU and direction within a node, Gbit/s (NVLink 4: 450 GB/s)
  double inter_gbps = 400;   // per GPU and direction across nodes, Gbit/s (one 400G NIC per GPU)
  double latency_us = 10;    // α of every collective, microseconds
};

struct SimulationOptions {
  int hidden = 0;
  int dtype_bytes = 2;
  std::int64_t kv_bytes_per_token = 0;
  std::int64_t tokens_per_step = 0;  // decode batch over all GPUs
  std::int64_t sequence_length = 1;  // baseline owners: whole sequences (evaluate.hpp)
  // The standard schemes' copy choice (evaluate.hpp); the context-coherent scheme always uses
  // the nearest copy.
  ReplicaChoice replica_choice = ReplicaChoice::kNearest;
  Network network;
  bool matrices = false;  // keep the GPU-pair byte matrices (L·2·G² numbers)
  int threads = 0;
};

// One collective of one layer in one decode step.
struct CollectiveTime {
  double bytes = 0;          // all GPUs' sends
  double busiest_bytes = 0;  // the busiest GPU's larger direction on its bottleneck link class
  double seconds = 0;
};

struct ConfigurationResult {
  std::string name;  // e.g. "baseline/vanilla"
  Scheme scheme = Scheme::kContextCoherent;
  std::string placement_name;            // Configuration::placement_name
  Metrics metrics;                       // the evaluator's, on the whole trace
  std::vector<CollectiveTime> dispatch;  // [L], per decode step
  std::vector<CollectiveTime> combine;   // [L]
  std::vector<std::int64_t> bytes;       // [L, 2, G, G] over the whole trace, when matrices
  double alltoall_bytes_per_step = 0;
  double alltoall_seconds_per_step = 0;
  double allgather_bytes_per_step = 0;  // context-coherent only
  double allgather_seconds_per_step = 0;
  double seconds_per_step = 0;  // all-to-alls plus all-gather
  double seconds_per_token = 0;
  double speedup = 0;  // the first configuration's seconds_per_step over this one's
};

struct Configuration {
  std::string name;
  Scheme scheme = Scheme::kContextCoherent;
  const Placement* placement = nullptr;
  std::string placement_name;  // "vanilla", a file's name, ...: what the report's columns show
};

// A placement to simulate under every scheme, with the name its configurations carry.
struct NamedPlacement {
  std::string name;
  const Placement* placement = nullptr;
};

// The prefix of a scheme's configuration names: "exflow" (context-coherent), "baseline",
// "deepep", "deepep-ll".
const char* configuration_prefix(Scheme scheme);

// Every scheme for vanilla and each placement, named "<prefix>/<placement name>": first
// baseline/vanilla (every speedup's reference), exflow/vanilla and exflow/<each placement> (what
// the simulator showed before it knew the other schemes), then baseline/<each placement>, and
// deepep and deepep-ll for vanilla and each placement.
std::vector<Configuration> scheme_configurations(const Placement& vanilla,
                                                 const std::vector<NamedPlacement>& placements);

// The index of the configuration with the least time per step (ties: the first); results must
// not be empty.
std::size_t fastest(const std::vector<ConfigurationResult>& results);

// Simulates each configuration on the trace (one evaluator pass per scheme). Throws UsageError
// for a non-positive size or bandwidth, InputError as evaluate() does.
std::vector<ConfigurationResult> simulate(const Trace& trace, const Topology& topology,
                                          const std::vector<Configuration>& configurations,
                                          const SimulationOptions& options);

}  // namespace exflow
