// exflow-run's arguments and their options table (the pattern of apps/exflow/options.hpp: one
// row per option drives registration, --help and the "options" echo of --json).
#pragma once

#include <cstdint>
#include <string>

#include "options.hpp"

namespace exflow::cli {

struct RunArgs {
  std::string trace;
  std::string mode;
  std::string placement;
  int gpus_per_node = 0;  // 0: the rank count (one node)
  int nodes = 0;          // 0: ranks / gpus_per_node
  int experts = 0;        // 0: largest id + 1
  int topk = 0;           // 0: every column of the trace
  int batch = 8;
  int seq_len = 64;
  int prefill = -1;  // -1: seq_len / 2
  int hidden = 256;
  int heads = 4;
  int ffn = 512;
  std::string activation = "swiglu";
  std::string combine = "trace";
  std::uint64_t seed = 1;
  bool json = false;
};

inline constexpr const char* kRunSummary =
    "Run a Mixture-of-Experts transformer whose router replays a trace: expert-parallel on MPI "
    "(baseline, exflow, deepep; launch with mpirun -np G, one rank per GPU) or in one process "
    "(reference). See docs/runtime.md.";

const OptionTable<RunArgs>& run_options();

}  // namespace exflow::cli
