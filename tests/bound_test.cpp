// Lower bounds: the degree-bounded matching against enumeration, the graph bound and the top-k
// coherent cost bound against every balanced placement of tiny instances and against many
// random placements of larger ones, and the plan pipeline attaching the top-k bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/plan.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/bound_matching.hpp"

namespace exflow {
namespace {

using solvers::WeightedPair;

// The evaluator on one thread: the enumerations call it thousands of times on tiny traces.
EvalOptions one_thread() {
  EvalOptions o;
  o.threads = 1;
  return o;
}

// The heaviest subset of `pairs` with every row and column degree at most `degree`, by
// enumerating every subset.
std::int64_t enumerated_matching(int side, const std::vector<WeightedPair>& pairs, int degree) {
  std::int64_t best = 0;
  const std::uint32_t subsets = std::uint32_t{1} << pairs.size();
  for (std::uint32_t s = 0; s < subsets; ++s) {
    std::vector<int> row(static_cast<std::size_t>(side), 0);
    std::vector<int> col(static_cast<std::size_t>(side), 0);
    std::int64_t weight = 0;
    bool fits = true;
    for (std::size_t e = 0; e < pairs.size() && fits; ++e) {
      if ((s >> e & 1U) == 0) continue;
      weight += pairs[e].weight;
      fits = ++row[static_cast<std::size_t>(pairs[e].row)] <= degree &&
             ++col[static_cast<std::size_t>(pairs[e].col)] <= degree;
    }
    if (fits) best = std::max(best, weight);
  }
  return best;
}

std::vector<WeightedPair> random_pairs(int side, int count, std::mt19937& rng) {
  std::vector<WeightedPair> pairs;
  std::vector<int> cells(static_cast<std::size_t>(side * side));
  std::iota(cells.begin(), cells.end(), 0);
  std::shuffle(cells.begin(), cells.end(), rng);
  for (int c = 0; c < count; ++c) {
    pairs.push_back({cells[static_cast<std::size_t>(c)] / side,
                     cells[static_cast<std::size_t>(c)] % side,
                     1 + static_cast<std::int64_t>(rng() % 20)});
  }
  return pairs;
}

TEST(DegreeBoundedMatching, EqualsEnumerationUnlessOverBudget) {
  std::mt19937 rng(7);
  constexpr std::int64_t kAll = std::numeric_limits<std::int64_t>::max();
  for (int round = 0; round < 60; ++round) {
    const int side = 2 + round % 4;
    const int count = std::min(side * side, 4 + round % 11);
    const std::vector<WeightedPair> pairs = random_pairs(side, count, rng);
    for (int degree = 1; degree <= 3; ++degree) {
      const std::int64_t best = enumerated_matching(side, pairs, degree);
      EXPECT_EQ(solvers::degree_bounded_weight(side, pairs, degree, kAll, kAll), best)
          << "round " << round << " degree " << degree;
      // A search over its work budget does not start and answers `enough`.
      EXPECT_EQ(solvers::degree_bounded_weight(side, pairs, degree, 1000, 1), 1000);
      // `enough` caps the answer and never hides an optimum below it.
      const std::int64_t enough = best / 2 + 1;
      EXPECT_EQ(solvers::degree_bounded_weight(side, pairs, degree, enough, kAll),
                std::min(best, enough));
    }
  }
  EXPECT_EQ(solvers::degree_bounded_weight(3, {}, 2, kAll, kAll), 0);
  EXPECT_EQ(solvers::degree_bounded_weight(3, {{0, 0, 5}}, 0, kAll, kAll), 0);
}

// Every placement with exactly E/G experts of every layer on every GPU, each passed to `visit`.
void for_each_balanced(int layers, int experts, const Topology& topo,
                       const std::function<void(const Placement&)>& visit) {
  const int G = topo.gpus();
  const int per_gpu = experts / G;
  std::vector<std::vector<int>> layer_maps;
  std::vector<int> map(static_cast<std::size_t>(experts), 0);
  std::vector<int> used(static_cast<std::size_t>(G), 0);
  std::function<void(int)> fill = [&](int e) {
    if (e == experts) {
      layer_maps.push_back(map);
      return;
    }
    for (int g = 0; g < G; ++g) {
      if (used[static_cast<std::size_t>(g)] == per_gpu) continue;
      ++used[static_cast<std::size_t>(g)];
      map[static_cast<std::size_t>(e)] = g;
      fill(e + 1);
      --used[static_cast<std::size_t>(g)];
    }
  };
  fill(0);
  std::vector<std::size_t> pick(static_cast<std::size_t>(layers), 0);
  while (true) {
    std::vector<int> gpu_of;
    for (int l = 0; l < layers; ++l) {
      const std::vector<int>& m = layer_maps[pick[static_cast<std::size_t>(l)]];
      gpu_of.insert(gpu_of.end(), m.begin(), m.end());
    }
    visit(Placement(layers, experts, G, gpu_of));
    int l = 0;
    while (l < layers && ++pick[static_cast<std::size_t>(l)] == layer_maps.size()) {
      pick[static_cast<std::size_t>(l)] = 0;
      ++l;
    }
    if (l == layers) return;
  }
}

// Tokens of `k` distinct experts each, drawn from a skewed preference that follows the
// previous layer's experts, so that co-location pays and the bounds have something to bound.
Trace skewed_trace(int tokens, int layers, int k, int experts, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids;
  for (int t = 0; t < tokens; ++t) {
    std::vector<int> row;
    for (int l = 0; l < layers; ++l) {
      std::vector<int> next;
      while (static_cast<int>(next.size()) < k) {
        const bool follow = !row.empty() && rng() % 3 != 0;
        const int e =
            follow ? (row[next.size() % row.size()] * 3 + l + static_cast<int>(rng() % 2)) % experts
                   : static_cast<int>(rng() % static_cast<unsigned>(experts));
        if (std::find(next.begin(), next.end(), e) == next.end()) next.push_back(e);
      }
      row = next;
      ids.insert(ids.end(), row.begin(), row.end());
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

// The bound before the degree-bounded matching: per pair, the smaller of the row and the column
// sums of the C largest entries.
double row_column_bound(const AffinityGraph& g, const Topology& topo) {
  const int E = g.experts();
  const int C = topo.experts_per_gpu(E);
  double kept = 0;
  double total = 0;
  for (int l = 0; l + 1 < g.layers(); ++l) {
    double by_row = 0;
    double by_col = 0;
    for (int a = 0; a < E; ++a) {
      std::vector<std::int64_t> row;
      std::vector<std::int64_t> col;
      for (int b = 0; b < E; ++b) {
        row.push_back(g.transition(l, a, b));
        col.push_back(g.transition(l, b, a));
        total += static_cast<double>(g.transition(l, a, b));
      }
      std::sort(row.rbegin(), row.rend());
      std::sort(col.rbegin(), col.rend());
      by_row += static_cast<double>(std::accumulate(row.begin(), row.begin() + C, std::int64_t{0}));
      by_col += static_cast<double>(std::accumulate(col.begin(), col.begin() + C, std::int64_t{0}));
    }
    kept += std::min(by_row, by_col);
  }
  return topo.intra_cost() * (total - kept) / static_cast<double>(g.tokens());
}

TEST(GraphBound, HoldsOnEveryPlacementAndTightensTheRowColumnBound) {
  const Topology topo(1, 2);
  int tighter = 0;
  for (unsigned seed = 1; seed <= 12; ++seed) {
    const Trace trace = skewed_trace(60, 3, 1, 6, seed);
    const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
    double best = std::numeric_limits<double>::max();
    for_each_balanced(3, 6, topo, [&](const Placement& p) {
      best = std::min(best, graph_objective(graph, p, topo));
    });
    const double bound = objective_lower_bound(graph, topo);
    const double old_bound = row_column_bound(graph, topo);
    EXPECT_LE(bound, best + 1e-9) << "seed " << seed;
    EXPECT_GE(bound, old_bound - 1e-9) << "seed " << seed;
    tighter += bound > old_bound + 1e-9;
    // On a top-1 trace the trace bound is the graph bound.
    EXPECT_NEAR(coherent_cost_lower_bound(trace, topo), bound, 1e-9) << "seed " << seed;
  }
  EXPECT_GT(tighter, 0) << "the matching never beat the row and column sums";
}

struct TopKShape {
  int layers, experts, k, nodes, gpus_per_node;
  double intra, inter;
};

class TopKBoundEnumerated : public ::testing::TestWithParam<TopKShape> {};

TEST_P(TopKBoundEnumerated, IsAtMostTheCheapestPlacement) {
  const TopKShape s = GetParam();
  const Topology topo(s.nodes, s.gpus_per_node, s.intra, s.inter);
  int positive = 0;
  for (unsigned seed = 1; seed <= 4; ++seed) {
    const Trace trace = skewed_trace(40, s.layers, s.k, s.experts, seed);
    double best = std::numeric_limits<double>::max();
    for_each_balanced(s.layers, s.experts, topo, [&](const Placement& p) {
      best = std::min(best, evaluate(trace, p, topo, one_thread()).cost);
    });
    const double bound = coherent_cost_lower_bound(trace, topo);
    EXPECT_LE(bound, best + 1e-9) << "seed " << seed;
    EXPECT_GE(bound, 0.0);
    positive += bound > 0;
  }
  EXPECT_GT(positive, 0) << "the bound says nothing on these instances";
}

INSTANTIATE_TEST_SUITE_P(Tiny, TopKBoundEnumerated,
                         ::testing::Values(TopKShape{2, 4, 2, 1, 2, 1, 2},   // the brief's case
                                           TopKShape{3, 4, 2, 1, 2, 1, 2},   // three layers
                                           TopKShape{2, 6, 3, 1, 3, 1, 2},   // 3 GPUs
                                           TopKShape{2, 4, 2, 2, 2, 1, 3},   // two nodes
                                           TopKShape{3, 4, 2, 2, 1, 1, 3},   // nodes of one GPU
                                           TopKShape{2, 4, 3, 2, 1, 2, 1}),  // inter < intra
                         [](const auto& info) { return "shape" + std::to_string(info.index); });

TEST(TopKBound, HoldsOnRandomPlacementsOfLargerInstances) {
  std::mt19937 rng(11);
  const std::vector<TopKShape> shapes = {{4, 16, 4, 1, 4, 1, 2},
                                         {4, 16, 3, 2, 4, 1, 2},
                                         {3, 24, 6, 2, 2, 1, 4},
                                         {3, 16, 2, 4, 2, 3, 1}};
  for (const TopKShape& s : shapes) {
    const Topology topo(s.nodes, s.gpus_per_node, s.intra, s.inter);
    const Trace trace = skewed_trace(300, s.layers, s.k, s.experts, 5);
    const double bound = coherent_cost_lower_bound(trace, topo);
    EXPECT_GT(bound, 0.0);
    Placement p = vanilla_placement(s.layers, s.experts, topo);
    for (int round = 0; round < 200; ++round) {
      EXPECT_LE(bound, evaluate(trace, p, topo, one_thread()).cost + 1e-9) << "round " << round;
      // A random swap of two experts of one layer keeps the balance.
      const int l = static_cast<int>(rng() % static_cast<unsigned>(s.layers));
      const int a = static_cast<int>(rng() % static_cast<unsigned>(s.experts));
      const int b = static_cast<int>(rng() % static_cast<unsigned>(s.experts));
      const int ga = p.gpu(l, a);
      p.set(l, a, p.gpu(l, b));
      p.set(l, b, ga);
    }
  }
}

TEST(TopKBound, IsTheSameOnAnyThreadCount) {
  const Trace trace = skewed_trace(5000, 3, 4, 16, 4);
  const Topology topo(2, 2);
  const double one = coherent_cost_lower_bound(trace, topo, -1, 1);
  EXPECT_GT(one, 0.0);
  for (int threads : {2, 3, 8}) EXPECT_EQ(coherent_cost_lower_bound(trace, topo, -1, threads), one);
}

TEST(TopKBound, RelaxedBalanceBoundsEveryPlacementWithTheMinimum) {
  // At least one expert of each layer per GPU: a GPU may hold up to three of four experts.
  const Topology topo(1, 2);
  const Trace trace = skewed_trace(40, 2, 2, 4, 3);
  const double bound = coherent_cost_lower_bound(trace, topo, 1);
  EXPECT_LE(bound, coherent_cost_lower_bound(trace, topo));
  double best = std::numeric_limits<double>::max();
  for (int code = 0; code < 1 << 8; ++code) {
    std::vector<int> gpu_of;
    for (int bit = 0; bit < 8; ++bit) gpu_of.push_back(code >> bit & 1);
    bool fits = true;
    for (int l = 0; l < 2; ++l) {
      const int on_one = std::accumulate(gpu_of.begin() + l * 4, gpu_of.begin() + l * 4 + 4, 0);
      fits = fits && on_one >= 1 && on_one <= 3;
    }
    if (fits)
      best = std::min(best, evaluate(trace, Placement(2, 4, 2, gpu_of), topo, one_thread()).cost);
  }
  EXPECT_LE(bound, best + 1e-9);
}

TEST(TopKBound, PlanAttachesItOnlyWhereItHolds) {
  const Trace trace = skewed_trace(400, 4, 3, 16, 9);
  const Topology topo(2, 2);
  PlanOptions o;
  o.max_load_ratio = LoadLimit{};
  const PlanResult r = plan(trace, topo, o);
  ASSERT_TRUE(r.lower_bound.has_value());
  ASSERT_TRUE(r.gap.has_value());
  EXPECT_GT(*r.lower_bound, 0.0);
  EXPECT_LE(*r.lower_bound, r.metrics->placement.cost);
  EXPECT_NEAR(*r.lower_bound, coherent_cost_lower_bound(trace, topo), 1e-12);
  EXPECT_NEAR(*r.gap, (r.metrics->placement.cost - *r.lower_bound) / r.metrics->placement.cost,
              1e-12);
  PlanOptions replicas = o;
  replicas.redundant = 1;
  EXPECT_FALSE(plan(trace, topo, replicas).lower_bound.has_value()) << "replicas";
  PlanOptions standard = o;
  standard.scheme = Scheme::kBaseline;
  EXPECT_FALSE(plan(trace, topo, standard).lower_bound.has_value()) << "another scheme";
}

}  // namespace
}  // namespace exflow
