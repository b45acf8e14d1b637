// Internal to exflow_mpi: the all-to-all buffers of the expert-parallel engines
// (expert_parallel.cpp) and DeepEP mode's two-stage dispatch and combine on them.
//
// DeepEP's normal mode (csrc/kernels/internode.cu) deduplicates a token's inter-node traffic by
// node: the source GPU writes the token once over RDMA to each destination node, to the GPU with
// its own local index there, and that GPU forwards it over NVLink to the token's other expert
// GPUs in its node; the combine reduces within the node first and sends one row back per node.
// Here each half is two MPI_Alltoallv calls, the stages of a DeepEPStages (route_plan.hpp):
//   dispatch  1. owner -> relays and same-node GPUs    2. relays -> the GPUs of their node
//   combine   1. GPUs -> the relay of their node        2. relays and same-node GPUs -> owner
// A stage with no transfer on any rank is skipped by every rank alike (the stages come from the
// plan every rank holds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "exflow/route_plan.hpp"

namespace exflow::runtime {

// Per-destination send buffers and per-source receive buffers of one MPI_Alltoallv.
template <typename T>
struct Exchange {
  std::vector<std::vector<T>> send;  // [G]
  std::vector<std::size_t> recv;     // [G] elements expected from each source
  std::vector<T> recv_data;
  std::vector<std::size_t> recv_offset;  // [G]

  explicit Exchange(int gpus)
      : send(static_cast<std::size_t>(gpus)),
        recv(static_cast<std::size_t>(gpus), 0),
        recv_offset(static_cast<std::size_t>(gpus), 0) {}
};

// Runs one MPI_Alltoallv of an exchange and counts what this rank sends (the engine's, which
// knows the layer and phase).
template <typename T>
using AllToAll = std::function<void(Exchange<T>&)>;

// The fixed-point partial sums [H] int64 of the rows one rank holds one for, by row.
class RowSums {
 public:
  RowSums(int rows, std::size_t hidden)
      : slot_(static_cast<std::size_t>(rows), kNone), hidden_(hidden) {}

  bool has(int row) const { return slot_[static_cast<std::size_t>(row)] != kNone; }
  // The row's sum; zero-filled when the row had none.
  std::span<std::int64_t> at(int row);

 private:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  std::vector<std::size_t> slot_;  // [rows] index of the row's sum, kNone without one
  std::vector<std::int64_t> sums_;
  std::size_t hidden_;
};

// Dispatch of one layer: residuals [rows, H] float32; the rows this rank receives (it serves
// them, or it relays them, or both) are written into it.
void deepep_dispatch(const DeepEPStages& stages, int rank, int gpus, std::span<float> residuals,
                     std::size_t hidden, const AllToAll<float>& all_to_all);

// Combine of one layer: sums holds this rank's partial sum of every row it serves. On return
// the rows this rank owns hold their totals (the relays' and same-node GPUs' partial sums
// added); a relay's row holds what it sent on.
void deepep_combine(const DeepEPStages& stages, int rank, int gpus, RowSums& sums,
                    std::size_t hidden, const AllToAll<std::int32_t>& all_to_all);

}  // namespace exflow::runtime
