// The graph objective and its cheap lower bound.
//
// Lower bound. For a layer pair with counts w, let kept_gpu (kept_node) be the tokens whose
// two experts share a GPU (a node). Then, with c1 <= c2,
//   cost = c2 * total - (c2 - c1) * kept_node - c1 * kept_gpu.
// A GPU hosts at most C experts of layer l + 1, so expert i of layer l keeps at most the sum
// of the C largest entries of its row; likewise per column. Summing the smaller of the row and
// column bounds over the pairs bounds kept_gpu (and, with the node capacity, kept_node) from
// above for every balanced placement, and so the cost from below.
#include <algorithm>
#include <functional>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"

namespace exflow {
namespace {

// Sum over rows (or columns) of the `capacity` largest entries, for one layer pair.
double top_entries_bound(const AffinityGraph& g, int l, int capacity, bool by_row) {
  const int E = g.experts();
  if (capacity >= E) {
    double total = 0;
    for (int i = 0; i < E; ++i) {
      for (int j = 0; j < E; ++j) total += static_cast<double>(g.transition(l, i, j));
    }
    return total;
  }
  std::vector<std::int64_t> line(static_cast<std::size_t>(E));
  double sum = 0;
  for (int a = 0; a < E; ++a) {
    for (int b = 0; b < E; ++b) {
      line[static_cast<std::size_t>(b)] = by_row ? g.transition(l, a, b) : g.transition(l, b, a);
    }
    std::nth_element(line.begin(), line.begin() + capacity, line.end(), std::greater<>());
    for (int c = 0; c < capacity; ++c)
      sum += static_cast<double>(line[static_cast<std::size_t>(c)]);
  }
  return sum;
}

double kept_bound(const AffinityGraph& g, int l, int capacity) {
  return std::min(top_entries_bound(g, l, capacity, true),
                  top_entries_bound(g, l, capacity, false));
}

}  // namespace

double graph_objective(const AffinityGraph& graph, const Placement& placement,
                       const Topology& topology) {
  if (placement.layers() != graph.layers() || placement.experts() != graph.experts() ||
      placement.gpus() != topology.gpus()) {
    throw UsageError("graph_objective: placement shape does not match the graph and topology");
  }
  const int E = graph.experts();
  double sum = 0;
  for (int l = 0; l + 1 < graph.layers(); ++l) {
    for (int i = 0; i < E; ++i) {
      const int a = placement.gpu(l, i);
      for (int j = 0; j < E; ++j) {
        const std::int64_t w = graph.transition(l, i, j);
        if (w != 0) sum += static_cast<double>(w) * topology.cost(a, placement.gpu(l + 1, j));
      }
    }
  }
  return graph.tokens() > 0 ? sum / static_cast<double>(graph.tokens()) : 0.0;
}

double objective_lower_bound(const AffinityGraph& graph, const Topology& topology,
                             int min_experts_per_gpu) {
  const int E = graph.experts();
  const int G = topology.gpus();
  const int P = topology.gpus_per_node();
  const int N = topology.nodes();
  int gpu_capacity = 0;
  if (min_experts_per_gpu < 0) {
    gpu_capacity = topology.experts_per_gpu(E);
  } else {
    gpu_capacity = E - (G - 1) * min_experts_per_gpu;
  }
  const int min_gpu = min_experts_per_gpu < 0 ? gpu_capacity : min_experts_per_gpu;
  const int node_capacity = std::min({E, P * gpu_capacity, E - (N - 1) * P * min_gpu});
  const double c1 = topology.intra_cost();
  const double c2 = topology.inter_cost();
  double bound = 0;
  for (int l = 0; l + 1 < graph.layers(); ++l) {
    const double total = top_entries_bound(graph, l, E, true);
    const double kept_gpu = kept_bound(graph, l, gpu_capacity);
    if (c2 >= c1) {
      const double kept_node = N == 1 ? total : kept_bound(graph, l, node_capacity);
      bound += c2 * total - (c2 - c1) * kept_node - c1 * kept_gpu;
    } else {
      bound += c2 * (total - kept_gpu);  // every move costs at least c2
    }
  }
  return graph.tokens() > 0 ? std::max(0.0, bound / static_cast<double>(graph.tokens())) : 0.0;
}

}  // namespace exflow
