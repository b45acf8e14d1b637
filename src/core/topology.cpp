#include "exflow/topology.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "exflow/error.hpp"

namespace exflow {

Topology::Topology(int nodes, int gpus_per_node, double intra_cost, double inter_cost)
    : nodes_(nodes),
      gpus_per_node_(gpus_per_node),
      intra_cost_(intra_cost),
      inter_cost_(inter_cost) {
  if (nodes < 1 || gpus_per_node < 1) {
    throw UsageError("topology: nodes (" + std::to_string(nodes) + ") and GPUs per node (" +
                     std::to_string(gpus_per_node) + ") must be at least 1");
  }
  if (static_cast<std::int64_t>(nodes) * gpus_per_node > kMaxGpus) {
    throw UsageError("topology: " + std::to_string(nodes) + " x " + std::to_string(gpus_per_node) +
                     " GPUs is more than the " + std::to_string(kMaxGpus) + " supported");
  }
  // Costs are summed over every transfer of a trace: a bound far below the double range keeps
  // the sums finite.
  if (!std::isfinite(intra_cost) || !std::isfinite(inter_cost) || intra_cost < 0 ||
      inter_cost < 0 || intra_cost > kMaxHopCost || inter_cost > kMaxHopCost) {
    char costs[64];
    std::snprintf(costs, sizeof costs, "intra %g, inter %g", intra_cost, inter_cost);
    throw UsageError(std::string("topology: hop costs must be finite, from 0 to 1e12 (") + costs +
                     ")");
  }
}

int Topology::experts_per_gpu(int experts) const {
  if (experts % gpus() != 0) {
    throw UsageError(std::to_string(experts) + " experts per layer cannot be split evenly over " +
                     std::to_string(nodes_) + " node(s) x " + std::to_string(gpus_per_node_) +
                     " GPUs = " + std::to_string(gpus()) +
                     " GPUs: the expert count must be divisible by the GPU count");
  }
  return experts / gpus();
}

}  // namespace exflow
