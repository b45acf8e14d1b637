// The one evaluator: walks a trace token by token and scores a placement.
//
// Context-coherent scheme (ExFlow, DESIGN.md section 3). S_l = a token's experts at layer l,
// H_l = the distinct GPUs hosting them, h_l = the GPU of H_l holding most of S_l (ties: the
// GPU of column 0, then the lowest id). At every layer the partial results on H_l \ {h_l}
// are combined into h_l, and for layer l >= 1 the token is dispatched from h_{l-1} to every
// GPU of H_l \ {h_{l-1}}. Each transfer costs the topology's hop cost. With k = 1 this is
// the original ExFlow objective: one move per layer transition whose GPU changes.
//
// DeepEP schemes: owners as in the baseline; transfers as routing.hpp states them.
//
// Baseline scheme (DeepSpeed-MoE): token t is owned by GPU (t / S) mod G, S the sequence length
// (default 1: tokens dealt round-robin; S > 1: whole sequences dealt round-robin, as
// data-parallel attention keeps a sequence's KV cache on one GPU); at every layer it is
// dispatched from its owner to each GPU of H_l other than the owner and combined back.
//
// Redundant experts: where an expert has several copies, a token uses the copy on the GPU it
// is on (its owner in the baseline, h_{l-1} in the context-coherent scheme; at layer 0 the
// first copy of its column-0 expert), else the nearest one (lowest hop cost, ties to the
// lowest GPU id). H_l and the load count the copies used.
//
// Copy choice `even` (standard schemes): an assignment whose expert has no copy on the owner is
// spread over the expert's copies, 1/c each, and H_l holds GPU g with the probability that one
// of the token's columns lands there (columns independent): every count below is then an
// expected value (the integer totals rounded).
//
// Metrics, all per token (mean over tokens):
//   cost   = sum of hop costs of all transfers
//   intra  = transfers between GPUs of one node;  cintra = intra / (P - 1)   (0 if P = 1)
//   inter  = transfers between nodes;             cinter = inter / (P (N-1)) (0 if N = 1)
//   local_fraction[l] = share of tokens that need no transfer into layer l
//   load: per layer the token-expert assignments each GPU serves; ratio = max / mean.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace exflow {

class Placement;
class Progress;
class Topology;
class Trace;

// kContextCoherent: the seed's scheme ("coherent"); kBaseline: standard expert parallelism with
// two all-to-alls per layer ("standard", DeepSpeed-MoE); kDeepEP: DeepEP's normal mode, one
// inter-node transfer per remote node then forwards within it ("deepep"); kDeepEPLowLatency:
// DeepEP's low-latency mode, one transfer per token-expert ("deepep-ll"). The standard schemes
// (all but kContextCoherent) route from the token's owner. Rules: src/core/routing.hpp.
enum class Scheme { kContextCoherent, kBaseline, kDeepEP, kDeepEPLowLatency };

// "context-coherent", "baseline", "deepep", "deepep-ll".
const char* to_string(Scheme scheme);
// Also accepts "coherent" and "standard". Throws UsageError naming the valid names.
Scheme parse_scheme(const std::string& name);

// Which copy a token uses when its expert has several. kNearest: the copy on the GPU it is on,
// else the nearest (lowest hop cost, ties to the lowest GPU id), as exflow and SGLang's static
// dispatch with a local copy do. kEven (standard schemes only): with no copy on the owner, the
// assignment is split evenly over all copies, as expected fractions (SGLang's static dispatch
// picks one at random; deterministic here, no sampling).
enum class ReplicaChoice { kNearest, kEven };
const char* to_string(ReplicaChoice choice);  // "nearest", "even"
// Throws UsageError naming the valid names.
ReplicaChoice parse_replica_choice(const std::string& name);

struct EvalOptions {
  Scheme scheme = Scheme::kContextCoherent;
  ReplicaChoice replica_choice = ReplicaChoice::kNearest;
  // Baseline owner of token t: GPU (t / sequence_length) mod G. Must be >= 1.
  std::int64_t sequence_length = 1;
  // Fill Metrics::traffic (the GPU-pair transfer matrices of every layer: L·2·G² counts).
  bool traffic = false;
  // Fill Metrics::gpu_traffic (each GPU's sends and receives by link class: L·2·G·4 counts,
  // what a network model needs at any scale).
  bool gpu_traffic = false;
  int threads = 0;  // 0 = hardware concurrency
  Progress* progress = nullptr;
};

// One phase's transfers (dispatch: into the layer's experts; combine: their outputs back), per
// token (mean over tokens).
struct PhaseMetrics {
  double cost = 0;                      // hop costs
  double intra = 0;                     // transfers within a node
  double inter = 0;                     // transfers across nodes
  std::vector<double> cost_per_layer;   // [L]
  std::vector<double> intra_per_layer;  // [L]
  std::vector<double> inter_per_layer;  // [L]
};

struct Metrics {
  Scheme scheme = Scheme::kContextCoherent;
  std::int64_t tokens = 0;
  int layers = 0;
  int k = 0;
  int gpus = 0;

  double cost = 0;
  double intra = 0;
  double inter = 0;
  double cintra = 0;
  double cinter = 0;
  std::int64_t intra_transfers = 0;  // totals over the trace
  std::int64_t inter_transfers = 0;

  // Context-coherent: [L-1], entry l-1 for the move into layer l (local iff H_l = {h_{l-1}}).
  // Standard schemes: [L], entry l local iff H_l = {owner}.
  std::vector<double> local_fraction_per_layer;
  double local_fraction = 0;  // over all entries of local_fraction_per_layer

  std::vector<double> cost_per_layer;  // [L]: hop cost of the transfers at layer l, per token
  PhaseMetrics dispatch;               // the two phases apart: cost = dispatch.cost + combine.cost
  PhaseMetrics combine;

  std::vector<std::int64_t> gpu_load;        // [L, G] token-expert assignments served
  std::vector<double> load_ratio_per_layer;  // [L] max over GPUs / mean over GPUs
  double load_ratio_max = 0;
  double load_ratio_mean = 0;

  // Transfers by layer, phase and GPU pair, [L, 2, G, G], filled when EvalOptions::traffic:
  // traffic[((l * 2 + phase) * G + src) * G + dst], phase 0 = dispatch (context-coherent: from
  // h_{l-1} into layer l; baseline: owner to expert GPUs), phase 1 = combine (into h_l; baseline:
  // back to the owner). The sum over src != dst with hop costs is cost_per_layer[l] * tokens.
  std::vector<std::int64_t> traffic;
  // Per GPU, [L, 2, G, 4] when EvalOptions::gpu_traffic: gpu_traffic[((l * 2 + phase) * G + g) * 4
  // + i], i = 0 sent within the node, 1 sent to another node, 2 received within the node, 3
  // received from another node (transfers).
  std::vector<std::int64_t> gpu_traffic;

  std::int64_t replicas = 0;             // replica slots in the placement, all layers
  std::int64_t replica_assignments = 0;  // token-expert assignments a replica served
  double replica_share = 0;              // ... over all token-expert assignments
};

// Throws InputError if the placement's shape does not match the trace's layers and experts or
// the topology's GPU count.
Metrics evaluate(const Trace& trace, const Placement& placement, const Topology& topology,
                 const EvalOptions& options = {});

// Scores several placements in one pass over the trace (results in the order given).
std::vector<Metrics> evaluate_all(const Trace& trace,
                                  const std::vector<const Placement*>& placements,
                                  const Topology& topology, const EvalOptions& options = {});

}  // namespace exflow
