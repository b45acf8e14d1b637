// The CBC integer program (src/solve/ilp.cpp) against exhaustive search on tiny instances.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/methods.hpp"

namespace exflow {
namespace {

using solvers::Instance;

// A top-1 trace in which each token mostly follows a fixed random successor of its expert.
AffinityGraph affine_graph(int layers, int experts, int tokens, std::uint32_t seed,
                           double follow = 0.7) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int>> successor(static_cast<std::size_t>(layers),
                                          std::vector<int>(static_cast<std::size_t>(experts)));
  for (auto& s : successor) {
    for (int e = 0; e < experts; ++e) s[static_cast<std::size_t>(e)] = e;
    std::shuffle(s.begin(), s.end(), rng);
  }
  std::uniform_int_distribution<int> any(0, experts - 1);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<std::int32_t> ids;
  for (int t = 0; t < tokens; ++t) {
    int e = any(rng);
    for (int l = 0; l < layers; ++l) {
      ids.push_back(e);
      e = unit(rng) < follow ? successor[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)]
                             : any(rng);
    }
  }
  return AffinityGraph::from_trace(Trace::from_ids(std::move(ids), tokens, layers, 1, experts), 1);
}

double objective(const AffinityGraph& graph, const Topology& topology,
                 const std::vector<std::vector<int>>& layer_gpus) {
  double total = 0;
  for (int l = 0; l + 1 < graph.layers(); ++l) {
    const auto& a = layer_gpus[static_cast<std::size_t>(l)];
    const auto& b = layer_gpus[static_cast<std::size_t>(l) + 1];
    for (int i = 0; i < graph.experts(); ++i) {
      for (int j = 0; j < graph.experts(); ++j) {
        total += static_cast<double>(graph.transition(l, i, j)) *
                 topology.cost(a[static_cast<std::size_t>(i)], b[static_cast<std::size_t>(j)]);
      }
    }
  }
  return total / static_cast<double>(graph.tokens());
}

double objective(const AffinityGraph& graph, const Topology& topology, const Placement& p) {
  std::vector<std::vector<int>> layer_gpus;
  for (int l = 0; l < p.layers(); ++l) {
    layer_gpus.emplace_back(p.gpu_of().begin() + l * p.experts(),
                            p.gpu_of().begin() + (l + 1) * p.experts());
  }
  return objective(graph, topology, layer_gpus);
}

// Every assignment of `experts` experts to `gpus` GPUs with min..max experts per GPU.
std::vector<std::vector<int>> layer_assignments(int experts, int gpus, int min, int max) {
  std::vector<std::vector<int>> out;
  std::vector<int> gpu_of(static_cast<std::size_t>(experts));
  std::vector<int> count(static_cast<std::size_t>(gpus), 0);
  auto rec = [&](auto&& self, int e) -> void {
    if (e == experts) {
      for (int c : count) {
        if (c < min) return;
      }
      out.push_back(gpu_of);
      return;
    }
    for (int g = 0; g < gpus; ++g) {
      if (count[static_cast<std::size_t>(g)] == max) continue;
      ++count[static_cast<std::size_t>(g)];
      gpu_of[static_cast<std::size_t>(e)] = g;
      self(self, e + 1);
      --count[static_cast<std::size_t>(g)];
    }
  };
  rec(rec, 0);
  return out;
}

struct Optimum {
  double objective = 0;
  Placement placement{1, 1, 1};
};

// Exhaustive search: every balanced assignment of every layer. The cost is a sum over
// consecutive layer pairs, so the minimum over all combinations is taken layer by layer
// (best[l][a] = min over a' of best[l-1][a'] + cost(a', a)) without skipping any combination.
Optimum brute_force(const Instance& instance) {
  const AffinityGraph& graph = instance.graph;
  const int layers = graph.layers();
  const int experts = graph.experts();
  const auto options =
      layer_assignments(experts, instance.gpus(), instance.min_per_gpu, instance.max_per_gpu);
  const std::size_t n = options.size();
  std::vector<double> best(n, 0.0);
  std::vector<std::vector<std::size_t>> from(static_cast<std::size_t>(layers),
                                             std::vector<std::size_t>(n, 0));
  struct Edge {
    std::size_t from;
    std::size_t to;
    double weight;
  };
  for (int l = 0; l + 1 < layers; ++l) {
    std::vector<Edge> edges;
    for (int i = 0; i < experts; ++i) {
      for (int j = 0; j < experts; ++j) {
        const auto w = graph.transition(l, i, j);
        if (w > 0) {
          edges.push_back(
              {static_cast<std::size_t>(i), static_cast<std::size_t>(j), static_cast<double>(w)});
        }
      }
    }
    std::vector<double> next(n, std::numeric_limits<double>::infinity());
    for (std::size_t a = 0; a < n; ++a) {
      for (std::size_t b = 0; b < n; ++b) {
        double c = best[a];
        for (const Edge& e : edges) {
          c += e.weight * instance.topology.cost(options[a][e.from], options[b][e.to]);
        }
        if (c < next[b]) {
          next[b] = c;
          from[static_cast<std::size_t>(l) + 1][b] = a;
        }
      }
    }
    best = next;
  }
  std::size_t last = 0;
  for (std::size_t a = 1; a < n; ++a) {
    if (best[a] < best[last]) last = a;
  }
  Optimum opt;
  opt.placement = Placement(layers, experts, instance.gpus());
  std::vector<std::vector<int>> layer_gpus(static_cast<std::size_t>(layers));
  for (int l = layers - 1; l >= 0; --l) {
    layer_gpus[static_cast<std::size_t>(l)] = options[last];
    for (int e = 0; e < experts; ++e)
      opt.placement.set(l, e, options[last][static_cast<std::size_t>(e)]);
    last = from[static_cast<std::size_t>(l)][last];
  }
  opt.objective = objective(graph, instance.topology, layer_gpus);
  EXPECT_NEAR(opt.objective,
              best.empty() ? 0
                           : *std::min_element(best.begin(), best.end()) /
                                 static_cast<double>(graph.tokens()),
              1e-9);
  return opt;
}

void expect_balanced(const Placement& p, const Instance& instance) {
  for (int l = 0; l < p.layers(); ++l) {
    std::vector<int> count(static_cast<std::size_t>(instance.gpus()), 0);
    for (int e = 0; e < p.experts(); ++e) ++count[static_cast<std::size_t>(p.gpu(l, e))];
    for (int c : count) {
      EXPECT_GE(c, instance.min_per_gpu) << "layer " << l;
      EXPECT_LE(c, instance.max_per_gpu) << "layer " << l;
    }
  }
}

// Solves with CBC and checks the result against exhaustive search.
void expect_matches_brute_force(const Instance& instance, const Placement* initial = nullptr) {
  const Optimum opt = brute_force(instance);
  SolveOptions options;
  options.time_limit = 30;
  options.initial = initial;
  const SolveResult r = solvers::solve_ilp(instance, options);
  EXPECT_EQ(r.method, Method::kIlp);
  EXPECT_TRUE(r.optimal) << r.detail;
  EXPECT_NEAR(r.objective, opt.objective, 1e-9) << r.detail;
  EXPECT_NEAR(objective(instance.graph, instance.topology, r.placement), r.objective, 1e-9);
  ASSERT_TRUE(r.lower_bound.has_value());
  EXPECT_LE(*r.lower_bound, r.objective);
  EXPECT_GE(*r.lower_bound, 0.0);
  EXPECT_FALSE(r.detail.empty());
  expect_balanced(r.placement, instance);
}

TEST(Ilp, OneNodeTwoGpusMatchesBruteForce) {
  const Topology topo(1, 2);
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    const AffinityGraph graph = affine_graph(3, 4, 40, seed);
    expect_matches_brute_force(Instance{graph, topo, 2, 2});
  }
}

TEST(Ilp, TwoNodesOneExpertPerGpuMatchesBruteForce) {
  const Topology topo(2, 2);
  for (std::uint32_t seed : {4u, 5u}) {
    const AffinityGraph graph = affine_graph(3, 4, 40, seed, 0.5);
    expect_matches_brute_force(Instance{graph, topo, 1, 1});
  }
}

TEST(Ilp, OneNodeThreeGpusMatchesBruteForce) {
  const Topology topo(1, 3);
  const AffinityGraph graph = affine_graph(2, 6, 60, 6);
  expect_matches_brute_force(Instance{graph, topo, 2, 2});
}

TEST(Ilp, TwoNodesTwoExpertsPerGpuMatchesBruteForce) {
  const Topology topo(2, 2, 1.0, 3.0);
  const AffinityGraph graph = affine_graph(2, 8, 80, 7, 0.5);
  expect_matches_brute_force(Instance{graph, topo, 2, 2});
}

TEST(Ilp, ThreeNodesOfOneGpuMatchesBruteForce) {
  const Topology topo(3, 1);
  const AffinityGraph graph = affine_graph(3, 6, 60, 8, 0.5);
  expect_matches_brute_force(Instance{graph, topo, 2, 2});
}

TEST(Ilp, FreeIntraNodeHopsMatchBruteForce) {
  const Topology topo(2, 2, 0.0, 1.0);
  const AffinityGraph graph = affine_graph(3, 4, 40, 9, 0.5);
  expect_matches_brute_force(Instance{graph, topo, 1, 1});
}

TEST(Ilp, EqualHopCostsMatchBruteForce) {
  const Topology topo(2, 2, 1.5, 1.5);
  const AffinityGraph graph = affine_graph(3, 4, 40, 10, 0.5);
  expect_matches_brute_force(Instance{graph, topo, 1, 1});
}

TEST(Ilp, RelaxedBalanceMatchesBruteForce) {
  const Topology topo(1, 2);
  for (std::uint32_t seed : {11u, 12u}) {
    const AffinityGraph graph = affine_graph(3, 4, 40, seed);
    expect_matches_brute_force(Instance{graph, topo, 1, 3});
  }
  const Topology two_nodes(2, 2);
  const AffinityGraph graph = affine_graph(3, 6, 60, 13);
  expect_matches_brute_force(Instance{graph, two_nodes, 1, 3});
}

TEST(Ilp, AcceptsTheOptimumAsMipStart) {
  const Topology topo(2, 2);
  const AffinityGraph graph = affine_graph(3, 4, 40, 14, 0.5);
  const Instance instance{graph, topo, 1, 1};
  const Placement best = brute_force(instance).placement;
  expect_matches_brute_force(instance, &best);
  // The same optimum under a node swap and a GPU swap: outside the model's canonical
  // labelling, so the start must be relabelled before CBC sees it.
  Placement moved(best.layers(), best.experts(), best.gpus());
  const int relabel[] = {3, 2, 0, 1};
  for (int l = 0; l < best.layers(); ++l) {
    for (int e = 0; e < best.experts(); ++e) moved.set(l, e, relabel[best.gpu(l, e)]);
  }
  expect_matches_brute_force(instance, &moved);
}

TEST(Ilp, MipStartOnOneNode) {
  const Topology topo(1, 3);
  const AffinityGraph graph = affine_graph(2, 6, 60, 15);
  const Instance instance{graph, topo, 2, 2};
  Placement start = vanilla_placement(2, 6, topo);
  start.set(0, 0, 2);
  start.set(0, 5, 0);
  expect_matches_brute_force(instance, &start);
}

TEST(Ilp, SingleLayerCostsNothing) {
  const Topology topo(1, 2);
  const AffinityGraph graph = affine_graph(1, 4, 10, 16);
  const SolveResult r = solvers::solve_ilp(Instance{graph, topo, 2, 2}, SolveOptions{});
  EXPECT_TRUE(r.optimal);
  EXPECT_EQ(r.objective, 0.0);
  expect_balanced(r.placement, Instance{graph, topo, 2, 2});
}

TEST(Ilp, RejectsCheaperInterNodeHops) {
  const Topology topo(2, 1, 2.0, 1.0);
  const AffinityGraph graph = affine_graph(2, 4, 10, 17);
  EXPECT_THROW(solvers::solve_ilp(Instance{graph, topo, 2, 2}, SolveOptions{}), UsageError);
}

TEST(Ilp, RefusesModelsWhoseFirstRelaxationWouldOverrunTheTimeLimit) {
  // About 1 800 expert pairs with traffic x 4 GPUs: some 7 000 rows, a few seconds of LP.
  const Topology topo(1, 4);
  const AffinityGraph graph = affine_graph(8, 16, 4000, 19, 0.0);
  SolveOptions options;
  options.time_limit = 1;
  try {
    solvers::solve_ilp(Instance{graph, topo, 4, 4}, options);
    ADD_FAILURE() << "no UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("raise time_limit"), std::string::npos) << e.what();
    EXPECT_EQ(e.options(), (std::vector<std::string>{"time_limit", "method"}));
  }
}

TEST(Ilp, RejectsAnInitialPlacementOfTheWrongShapeOrBalance) {
  const Topology topo(1, 2);
  const AffinityGraph graph = affine_graph(2, 4, 10, 18);
  SolveOptions options;
  const Placement wrong_shape(3, 4, 2);
  options.initial = &wrong_shape;
  EXPECT_THROW(solvers::solve_ilp(Instance{graph, topo, 2, 2}, options), UsageError);
  const Placement unbalanced(2, 4, 2);  // every expert on GPU 0
  options.initial = &unbalanced;
  EXPECT_THROW(solvers::solve_ilp(Instance{graph, topo, 2, 2}, options), UsageError);
}

}  // namespace
}  // namespace exflow
