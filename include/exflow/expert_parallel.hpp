// The expert-parallel engines of exflow-run on MPI (library exflow_mpi; docs/runtime.md): one
// rank per GPU, real tensors, real collectives, following a RoutePlan (route_plan.hpp).
//
// Per forward step and layer l, on every rank:
//   attention  the rows whose attention runs here: q, k, v, the KV cache, attend, Wo
//   dispatch   MPI_Alltoallv: each such row's post-attention residual [H] float32 to every other
//              GPU serving one of its experts (skipped when the plan has no transfer anywhere)
//   experts    rmsnorm, this rank's experts of each row, the fixed-point partial sum of its
//              columns (runtime.hpp, combine)
//   combine    MPI_Alltoallv: each partial sum [H] int32 to the row's home, which adds them to
//              the residual
// DeepEP mode routes as the baseline but makes each phase two exchanges, node-deduplicated:
// dispatch owner -> relays and same-node GPUs, then relays -> the GPUs of their node; combine
// GPUs -> their node's relay, then relays and same-node GPUs -> owner (src/runtime/
// deepep_exchange.hpp).
// Context-coherent mode keeps every sequence's KV cache on every rank: the keys and values a
// rank computes are all-gathered (MPI_Allgatherv) at the end of a decode step, and after each
// layer in a step of several positions (a prefill), where later positions of the same step
// attend over them. Layer 0's keys and values are computed by every rank (the inputs are known
// everywhere), so they need no all-gather.
//
// One transfer of the cost model is one row of 4·H bytes, so the bytes each (layer, phase,
// source, destination) moves are the evaluator's traffic matrix (EvalOptions::traffic, with
// sequence_length = the workload's for the baseline and DeepEP; Scheme::kDeepEP for DeepEP) times
// 4·H, exactly.
#pragma once

#include <cstdint>
#include <vector>

#include "exflow/route_plan.hpp"
#include "exflow/runtime.hpp"

namespace exflow {

class Placement;
class Topology;
class Trace;

namespace runtime {

// Wall seconds one rank spent in each part of the forward steps.
struct PhaseSeconds {
  double attention = 0;  // q, k, v, attend and output projection of the rows run here
  double experts = 0;    // expert input norm, expert FFNs, fixed-point partial sums
  double combine = 0;    // adding combined outputs to the residuals of the rows homed here
  double alltoall = 0;   // dispatch and combine exchanges, packing and unpacking included
  double allgather = 0;  // KV all-gathers, packing and unpacking included
};

struct StepRecord {
  int first_position = 0;
  int positions = 0;
  double seconds = 0;                // slowest rank, from a barrier to the end of the step
  std::int64_t alltoall_bytes = 0;   // all ranks, both phases
  std::int64_t allgather_bytes = 0;  // all ranks: bytes each sent times the G - 1 receivers
  std::int64_t alltoall_messages = 0;
  std::int64_t allgather_messages = 0;
};

struct ParallelResult {
  ParallelMode mode = ParallelMode::kBaseline;
  int ranks = 0;
  int layers = 0;
  std::int64_t tokens = 0;
  std::int64_t expert_rows = 0;  // token-expert evaluations, all ranks

  // Summed over steps. Phase 0 = dispatch, 1 = combine. A message is one non-empty buffer from
  // one rank to another in one collective call.
  std::vector<std::int64_t> alltoall_bytes;      // [L, 2, G, G]: layer, phase, source, dest
  std::vector<std::int64_t> alltoall_messages;   // [L, 2, G, G]
  std::vector<std::int64_t> allgather_bytes;     // [L, G]: keys and values rank g computed at
                                                 // layer l, times 8·H bytes, times G - 1
  std::vector<std::int64_t> allgather_messages;  // [G]: non-empty contributions times G - 1
  std::int64_t output_bytes = 0;  // final states gathered on rank 0 (not model traffic)

  std::vector<PhaseSeconds> seconds_per_rank;  // [G]
  std::vector<std::int64_t> experts_per_rank;  // [G] experts whose weights each rank made
  std::vector<StepRecord> steps;
  double seconds = 0;        // sum of the steps' seconds
  double setup_seconds = 0;  // slowest rank: plan and weights

  // Rank 0 only (empty elsewhere): final hidden states [tokens, H] in token order.
  std::vector<float> final_hidden;
  std::uint64_t checksum = 0;
  double final_rms = 0;

  std::int64_t total_alltoall_bytes() const;
  std::int64_t total_allgather_bytes() const;
};

// Runs the workload on MPI_COMM_WORLD (MPI must be initialised; the communicator's size must be
// topology.gpus(); rank g plays GPU g). Collective: every rank must call it with the same
// arguments. Complete results on rank 0; the counts and timings on every rank.
ParallelResult run_expert_parallel(const Trace& trace, const ModelConfig& config,
                                   const Workload& workload, const Placement& placement,
                                   const Topology& topology, ParallelMode mode);

}  // namespace runtime
}  // namespace exflow
