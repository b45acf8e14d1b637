// The graph objective and its lower bound.
//
// Lower bound. For a layer pair with counts w, let kept_gpu (kept_node) be the tokens whose
// two experts share a GPU (a node). Then, with c1 <= c2,
//   cost = c2 * total - (c2 - c1) * kept_node - c1 * kept_gpu.
// A GPU hosts at most C experts of layer l + 1, so expert i of layer l shares its GPU with at
// most C experts of layer l + 1, and expert j of layer l + 1 with at most C of layer l: the
// pairs kept on a GPU form a subgraph of the pair graph with every degree at most C. The
// heaviest such subgraph (a degree-bounded matching, solved exactly by min-cost flow in
// solve/bound_matching.cpp) bounds kept_gpu from above; it is never above the older bound,
// the smaller of the row and column sums of the C largest entries, which is kept as a cap.
// With the node capacity the same bounds kept_node. Summed over the pairs, they bound the cost
// from below for every balanced placement.
//
// What a bound by pairs cannot see: a GPU's kept pairs are not any degree-C subgraph but a
// complete C x C block, and layer l's grouping serves pair (l - 1, l) and pair (l, l + 1) at
// once. docs/algorithms.md ("Lower bounds") measures how much of the gap each leaves.
#include <algorithm>
#include <functional>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "solve/bound_matching.hpp"

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
  const auto by_lines = static_cast<std::int64_t>(
      std::min(top_entries_bound(g, l, capacity, true), top_entries_bound(g, l, capacity, false)));
  const int E = g.experts();
  if (capacity >= E) return static_cast<double>(by_lines);
  std::vector<solvers::WeightedPair> pairs;
  for (int i = 0; i < E; ++i) {
    for (int j = 0; j < E; ++j) {
      if (const std::int64_t w = g.transition(l, i, j); w > 0) pairs.push_back({i, j, w});
    }
  }
  return static_cast<double>(
      solvers::degree_bounded_weight(E, pairs, capacity, by_lines, solvers::kBoundWork));
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
  const int N = topology.nodes();
  const solvers::GroupCapacity capacity =
      solvers::group_capacity(graph.experts(), topology, min_experts_per_gpu);
  const double c1 = topology.intra_cost();
  const double c2 = topology.inter_cost();
  double bound = 0;
  for (int l = 0; l + 1 < graph.layers(); ++l) {
    const double total = top_entries_bound(graph, l, graph.experts(), true);
    const double kept_gpu = kept_bound(graph, l, capacity.gpu);
    if (c2 >= c1) {
      const double kept_node = N == 1 ? total : kept_bound(graph, l, capacity.node);
      bound += c2 * total - (c2 - c1) * kept_node - c1 * kept_gpu;
    } else {
      bound += c2 * (total - kept_gpu);  // every move costs at least c2
    }
  }
  return graph.tokens() > 0 ? std::max(0.0, bound / static_cast<double>(graph.tokens())) : 0.0;
}

}  // namespace exflow
