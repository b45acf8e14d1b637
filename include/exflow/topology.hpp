// The cluster: N nodes of P GPUs each, G = N * P GPUs numbered node * P + local_gpu.
// Moving a token between two GPUs costs 0 on the same GPU, `intra_cost` within a node and
// `inter_cost` across nodes (1 and 2 by default, the original ExFlow's weights).
#pragma once

#include <cstdint>

namespace exflow {

// How far apart two GPUs are.
enum class Hop : std::uint8_t { kLocal = 0, kIntraNode = 1, kInterNode = 2 };

class Topology {
 public:
  static constexpr int kMaxGpus = 65536;
  static constexpr double kMaxHopCost = 1e12;

  // Throws UsageError if nodes or gpus_per_node < 1, there are more than kMaxGpus GPUs, or a
  // cost is negative, not finite or above kMaxHopCost.
  Topology(int nodes, int gpus_per_node, double intra_cost = 1.0, double inter_cost = 2.0);

  int nodes() const { return nodes_; }
  int gpus_per_node() const { return gpus_per_node_; }
  int gpus() const { return nodes_ * gpus_per_node_; }
  double intra_cost() const { return intra_cost_; }
  double inter_cost() const { return inter_cost_; }

  int node_of(int gpu) const { return gpu / gpus_per_node_; }
  Hop hop(int a, int b) const {
    if (a == b) return Hop::kLocal;
    return node_of(a) == node_of(b) ? Hop::kIntraNode : Hop::kInterNode;
  }
  double cost(Hop h) const {
    return h == Hop::kLocal ? 0.0 : (h == Hop::kIntraNode ? intra_cost_ : inter_cost_);
  }
  double cost(int a, int b) const { return cost(hop(a, b)); }

  // Experts per GPU per layer for E experts; throws UsageError naming E, N and P unless
  // E is divisible by N * P.
  int experts_per_gpu(int experts) const;

 private:
  int nodes_;
  int gpus_per_node_;
  double intra_cost_;
  double inter_cost_;
};

}  // namespace exflow
