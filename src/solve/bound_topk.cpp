// A lower bound on the evaluator's exact context-coherent cost of any placement without
// replicas, for top-k traces (k = 1 included).
//
// Rules (src/core/routing.hpp): at layer l a token of expert set E_l uses the GPU set H_l of
// its experts; it dispatches from its previous home h_{l-1} to every GPU of H_l but h_{l-1}
// (none at layer 0) and combines from every GPU of H_l but its home h_l, which lies in H_l.
// With c1 <= c2, d(a, b) = c1 [a != b] + (c2 - c1) [node(a) != node(b)], and a GPU set meets
// at least as many nodes as it has other nodes than one, so for every token
//   cost_l >= c1 (2 |H_l| - 1 - [h_{l-1} in H_l]) + (c2 - c1) (2 |N_l| - 1 - [n_{l-1} in N_l])
// (N_l the nodes of H_l, n_{l-1} the node of h_{l-1}; at layer 0 only |H_0| - 1 and
// |N_0| - 1). If c2 < c1 every transfer costs at least c2, and the GPU term alone counts, with
// c2. Both terms have one shape, for groups of capacity C (a GPU holds at most C experts of a
// layer, a node at most its node capacity):
//   spread   Let m be the token's distinct experts at layer l and p the pairs of them that
//            share a group. The groups' sizes s sum to m with sum s^2 = m + 2p, so the token
//            meets at least max(1, m - p, m^2 / (m + 2p), ceil(m / C)) groups. The sum over
//            tokens of each is at least its value at the totals M and P (m^2 / (m + 2p) is
//            jointly convex), and it falls as P grows. The pairs sharing a group form
//            cliques of at most C experts, a subgraph with every degree at most C - 1 of the
//            co-occurrence graph (tokens choosing experts i and j at layer l): P is at most
//            half its heaviest degree-(C - 1) subgraph in the bipartite double cover.
//   stay     [h_{l-1} in H_l] <= min(1, pairs (i in E_{l-1}, j in E_l) sharing a group), and
//            the pairs sharing a group have every degree at most C in the cross graph (tokens
//            choosing i at layer l - 1 and j at layer l): over tokens at most min(T, its
//            heaviest degree-C subgraph).
// For a top-1 trace the spread is T and the stay is the kept flow of the graph bound
// (src/solve/objective.cpp): the two bounds agree there.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/bound_matching.hpp"

namespace exflow {
namespace {

// Counts of a run of layers [first, first + count) of a trace.
struct LayerCounts {
  int first = 0;
  int count = 0;
  int experts = 0;
  std::vector<std::int64_t> distinct;     // [count]: sum over tokens of distinct experts
  std::vector<std::int64_t> spread_low;   // [count]: sum over tokens of ceil(m / C), by group
  std::vector<std::int64_t> together;     // [count, E, E], i < j: tokens choosing i and j
  std::vector<std::int64_t> consecutive;  // [count, E, E]: i at layer - 1, j at layer

  std::int64_t* together_of(int l) {
    return together.data() + static_cast<std::size_t>(l - first) * experts * experts;
  }
  std::int64_t* consecutive_of(int l) {
    return consecutive.data() + static_cast<std::size_t>(l - first) * experts * experts;
  }
};

LayerCounts empty_counts(int first, int count, int experts) {
  LayerCounts c;
  c.first = first;
  c.count = count;
  c.experts = experts;
  c.distinct.assign(static_cast<std::size_t>(count), 0);
  c.spread_low.assign(static_cast<std::size_t>(count) * 2, 0);
  const std::size_t matrix = static_cast<std::size_t>(experts) * static_cast<std::size_t>(experts);
  c.together.assign(static_cast<std::size_t>(count) * matrix, 0);
  c.consecutive.assign(static_cast<std::size_t>(count) * matrix, 0);
  return c;
}

void add_counts(LayerCounts& into, const LayerCounts& from) {
  auto add = [](std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  };
  add(into.distinct, from.distinct);
  add(into.spread_low, from.spread_low);
  add(into.together, from.together);
  add(into.consecutive, from.consecutive);
}

// The distinct experts of every token of a block at one layer, ascending: token i's are
// ids[i * k, i * k + size[i]).
struct LayerSets {
  std::vector<std::int32_t> ids;
  std::vector<int> size;

  void fill(const TraceBlock& block, int layer) {
    const int k = block.k;
    ids.resize(static_cast<std::size_t>(block.tokens) * k);
    size.resize(static_cast<std::size_t>(block.tokens));
    for (std::int64_t i = 0; i < block.tokens; ++i) {
      std::int32_t* set = ids.data() + i * k;
      for (int col = 0; col < k; ++col) set[col] = block.column(layer, col)[i];
      std::sort(set, set + k);
      size[static_cast<std::size_t>(i)] = static_cast<int>(std::unique(set, set + k) - set);
    }
  }
  std::span<const std::int32_t> of(std::int64_t i, int k) const {
    return {ids.data() + i * k, static_cast<std::size_t>(size[static_cast<std::size_t>(i)])};
  }
};

// Adds one block's tokens to `c`, layer by layer (one layer's counts stay in cache);
// `capacity` (GPU, node) gives the ceil(m / C) sums, stored as spread_low[(l - first) * 2 +
// level].
void count_block(const TraceBlock& block, const solvers::GroupCapacity& capacity, LayerCounts& c,
                 LayerSets& previous, LayerSets& current) {
  const int E = c.experts;
  const int k = block.k;
  const int first = c.first;
  for (int l = std::max(first - 1, 0); l < first + c.count; ++l) {
    current.fill(block, l);
    if (l >= first) {
      const std::size_t at = static_cast<std::size_t>(l - first);
      std::int64_t* together = c.together_of(l);
      std::int64_t* consecutive = l > 0 ? c.consecutive_of(l) : nullptr;
      for (std::int64_t i = 0; i < block.tokens; ++i) {
        const std::span<const std::int32_t> set = current.of(i, k);
        const auto m = static_cast<std::int64_t>(set.size());
        c.distinct[at] += m;
        c.spread_low[at * 2] += (m + capacity.gpu - 1) / capacity.gpu;
        c.spread_low[at * 2 + 1] += (m + capacity.node - 1) / capacity.node;
        for (std::size_t a = 0; a < set.size(); ++a) {
          for (std::size_t b = a + 1; b < set.size(); ++b)
            ++together[static_cast<std::size_t>(set[a]) * E + set[b]];
        }
        if (consecutive == nullptr) continue;
        for (std::int32_t from : previous.of(i, k)) {
          for (std::int32_t to : set) ++consecutive[static_cast<std::size_t>(from) * E + to];
        }
      }
    }
    std::swap(previous, current);
  }
}

// Counts layers [first, first + count) in one pass, one set of counts per worker, merged in
// worker order.
LayerCounts count_layers(const Trace& trace, int first, int count,
                         const solvers::GroupCapacity& capacity, int threads) {
  const auto workers = static_cast<std::size_t>(trace.workers(threads));
  std::vector<LayerCounts> part(workers, empty_counts(first, count, trace.experts()));
  std::vector<LayerSets> previous(workers);
  std::vector<LayerSets> current(workers);
  trace.for_each_block(threads, [&](int worker, const TraceBlock& block) {
    const auto w = static_cast<std::size_t>(worker);
    count_block(block, capacity, part[w], previous[w], current[w]);
  });
  for (std::size_t w = 1; w < workers; ++w) add_counts(part[0], part[w]);
  return std::move(part[0]);
}

// Lower bound on the sum over tokens of the groups a token meets at layer l.
std::int64_t spread_bound(LayerCounts& c, int l, int capacity, std::int64_t tokens,
                          std::int64_t ceil_sum) {
  const std::int64_t M = c.distinct[static_cast<std::size_t>(l - c.first)];
  std::int64_t spread = std::max(tokens, ceil_sum);
  if (M <= spread || capacity <= 1) return std::max(spread, M);
  const int E = c.experts;
  const std::int64_t* together = c.together_of(l);
  std::vector<solvers::WeightedPair> pairs;
  for (int i = 0; i < E; ++i) {
    for (int j = i + 1; j < E; ++j) {
      if (const std::int64_t w = together[static_cast<std::size_t>(i) * E + j]; w > 0) {
        pairs.push_back({i, j, w});
        pairs.push_back({j, i, w});
      }
    }
  }
  // P <= cover / 2; any P at least M - spread leaves m - p no better than `spread`, but the
  // convex term still gains from a tighter P, so the search runs to the matching's end.
  const std::int64_t cover = solvers::degree_bounded_weight(
      E, pairs, capacity - 1, std::numeric_limits<std::int64_t>::max(), solvers::kBoundWork);
  const std::int64_t P = cover / 2;
  spread = std::max(spread, M - P);
  const double md = static_cast<double>(M);
  const double convex = md * md / (md + 2.0 * static_cast<double>(P));
  // Rounded down a little below the real value: the bound must stay a bound in floating point.
  spread = std::max(spread, static_cast<std::int64_t>(std::floor(convex * (1 - 1e-12))));
  return spread;
}

// Upper bound on the tokens whose previous home's group holds one of their layer-l experts.
std::int64_t stay_bound(LayerCounts& c, int l, int capacity, std::int64_t tokens) {
  const int E = c.experts;
  const std::int64_t* consecutive = c.consecutive_of(l);
  std::vector<solvers::WeightedPair> pairs;
  for (int i = 0; i < E; ++i) {
    for (int j = 0; j < E; ++j) {
      if (const std::int64_t w = consecutive[static_cast<std::size_t>(i) * E + j]; w > 0)
        pairs.push_back({i, j, w});
    }
  }
  return solvers::degree_bounded_weight(E, pairs, capacity, tokens, solvers::kBoundWork);
}

// Memory the counts of one pass may take.
constexpr std::size_t kCountBytes = std::size_t{256} << 20;

}  // namespace

double coherent_cost_lower_bound(const Trace& trace, const Topology& topology,
                                 int min_experts_per_gpu, int threads) {
  const std::int64_t T = trace.tokens();
  const int L = trace.layers();
  const int E = trace.experts();
  if (T == 0 || L == 0) return 0.0;
  solvers::GroupCapacity capacity = solvers::group_capacity(E, topology, min_experts_per_gpu);
  capacity.gpu = std::max(capacity.gpu, 1);
  capacity.node = std::max(capacity.node, 1);
  const double c1 = topology.intra_cost();
  const double c2 = topology.inter_cost();
  const bool node_level = topology.nodes() > 1 && c2 > c1;
  const std::size_t per_layer = 2 * sizeof(std::int64_t) * static_cast<std::size_t>(E) * E;
  const auto workers = static_cast<std::size_t>(trace.workers(threads));
  const int chunk = static_cast<int>(
      std::clamp<std::size_t>(kCountBytes / (per_layer * workers), 1, static_cast<std::size_t>(L)));
  std::int64_t gpu_transfers = 0;   // the GPU term's count, summed over tokens
  std::int64_t node_transfers = 0;  // the node term's
  for (int first = 0; first < L; first += chunk) {
    const int count = std::min(chunk, L - first);
    LayerCounts counts = count_layers(trace, first, count, capacity, threads);
    for (int l = first; l < first + count; ++l) {
      const std::size_t at = static_cast<std::size_t>(l - first) * 2;
      auto level = [&](int group, std::int64_t ceil_sum) {
        const std::int64_t spread = spread_bound(counts, l, group, T, ceil_sum);
        if (l == 0) return spread - T;
        return 2 * spread - T - std::min(T, stay_bound(counts, l, group, T));
      };
      gpu_transfers += level(capacity.gpu, counts.spread_low[at]);
      if (node_level) node_transfers += level(capacity.node, counts.spread_low[at + 1]);
    }
  }
  const double bound = std::min(c1, c2) * static_cast<double>(gpu_transfers) +
                       (node_level ? (c2 - c1) * static_cast<double>(node_transfers) : 0.0);
  return std::max(0.0, bound / static_cast<double>(T));
}

}  // namespace exflow
