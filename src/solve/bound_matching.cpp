// Degree-bounded bipartite matching by successive shortest paths.
//
// Network: source -> row i (capacity degree), row i -> column j (capacity 1, cost -w_ij),
// column j -> sink (capacity degree). Each augmentation follows a cheapest residual path,
// found by Dijkstra on reduced costs; the potentials start feasible (row 0, column minus its
// heaviest pair, sink the least column potential) and stay so with every node's distance
// capped at the sink's, so Dijkstra stops when it reaches the sink. The path costs never
// decrease (the optimum is convex in the flow), so the search stops at the first path that
// gains nothing.
#include "solve/bound_matching.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <queue>
#include <utility>

#include "exflow/topology.hpp"

namespace exflow::solvers {
namespace {

struct Arc {
  int to;
  int capacity;
  std::int64_t cost;
};

class FlowNetwork {
 public:
  explicit FlowNetwork(int nodes) : out_(static_cast<std::size_t>(nodes)) {}

  void add(int from, int to, int capacity, std::int64_t cost) {
    out_[static_cast<std::size_t>(from)].push_back(static_cast<int>(arcs_.size()));
    arcs_.push_back({to, capacity, cost});
    out_[static_cast<std::size_t>(to)].push_back(static_cast<int>(arcs_.size()));
    arcs_.push_back({from, 0, -cost});
  }
  int nodes() const { return static_cast<int>(out_.size()); }
  const std::vector<int>& out(int node) const { return out_[static_cast<std::size_t>(node)]; }
  Arc& arc(int id) { return arcs_[static_cast<std::size_t>(id)]; }
  Arc& reverse(int id) { return arcs_[static_cast<std::size_t>(id ^ 1)]; }

 private:
  std::vector<std::vector<int>> out_;
  std::vector<Arc> arcs_;
};

constexpr std::int64_t kUnreached = std::numeric_limits<std::int64_t>::max();

}  // namespace

std::int64_t degree_bounded_weight(int side, const std::vector<WeightedPair>& pairs, int degree,
                                   std::int64_t enough, std::int64_t work) {
  if (degree <= 0 || pairs.empty() || enough <= 0) return 0;
  const std::int64_t max_flow = std::min<std::int64_t>(static_cast<std::int64_t>(side) * degree,
                                                       static_cast<std::int64_t>(pairs.size()));
  const auto arcs = static_cast<std::int64_t>(pairs.size()) + 2 * side;
  if (max_flow > work / arcs) return enough;
  const int source = 0;
  const int sink = 2 * side + 1;
  auto row_node = [](int r) { return 1 + r; };
  auto col_node = [side](int c) { return 1 + side + c; };
  FlowNetwork net(2 * side + 2);
  std::vector<std::int64_t> potential(static_cast<std::size_t>(net.nodes()), 0);
  for (int r = 0; r < side; ++r) net.add(source, row_node(r), degree, 0);
  for (const WeightedPair& p : pairs) {
    net.add(row_node(p.row), col_node(p.col), 1, -p.weight);
    std::int64_t& pc = potential[static_cast<std::size_t>(col_node(p.col))];
    pc = std::min(pc, -p.weight);
  }
  std::int64_t& sink_potential = potential[static_cast<std::size_t>(sink)];
  for (int c = 0; c < side; ++c) {
    net.add(col_node(c), sink, degree, 0);
    sink_potential = std::min(sink_potential, potential[static_cast<std::size_t>(col_node(c))]);
  }

  std::vector<std::int64_t> dist(potential.size());
  std::vector<int> via(potential.size());
  using Entry = std::pair<std::int64_t, int>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> queue;
  std::int64_t value = 0;
  for (std::int64_t flow = 0; flow < max_flow; ++flow) {
    std::fill(dist.begin(), dist.end(), kUnreached);
    queue = {};
    dist[source] = 0;
    queue.push({0, source});
    while (!queue.empty()) {
      const auto [d, u] = queue.top();
      queue.pop();
      if (d != dist[static_cast<std::size_t>(u)]) continue;
      if (u == sink) break;  // every node still queued or unseen is at least this far
      for (int id : net.out(u)) {
        const Arc& a = net.arc(id);
        if (a.capacity == 0) continue;
        const std::int64_t nd = d + a.cost + potential[static_cast<std::size_t>(u)] -
                                potential[static_cast<std::size_t>(a.to)];
        if (nd < dist[static_cast<std::size_t>(a.to)]) {
          dist[static_cast<std::size_t>(a.to)] = nd;
          via[static_cast<std::size_t>(a.to)] = id;
          queue.push({nd, a.to});
        }
      }
    }
    const std::int64_t reach = dist[static_cast<std::size_t>(sink)];
    if (reach == kUnreached) return value;
    const std::int64_t gain = -(reach + sink_potential - potential[source]);
    if (gain <= 0) return value;
    if (value + gain >= enough) return enough;
    for (std::size_t v = 0; v < potential.size(); ++v) potential[v] += std::min(dist[v], reach);
    for (int v = sink; v != source;) {
      const int id = via[static_cast<std::size_t>(v)];
      --net.arc(id).capacity;
      ++net.reverse(id).capacity;
      v = net.reverse(id).to;
    }
    value += gain;
  }
  return value;
}

GroupCapacity group_capacity(int experts, const Topology& topology, int min_experts_per_gpu) {
  const int G = topology.gpus();
  const int P = topology.gpus_per_node();
  const int N = topology.nodes();
  GroupCapacity c;
  c.gpu = min_experts_per_gpu < 0 ? topology.experts_per_gpu(experts)
                                  : experts - (G - 1) * min_experts_per_gpu;
  const int min_gpu = min_experts_per_gpu < 0 ? c.gpu : min_experts_per_gpu;
  c.node = std::min({experts, P * c.gpu, experts - (N - 1) * P * min_gpu});
  return c;
}

}  // namespace exflow::solvers
