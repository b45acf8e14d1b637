// The search moves that make large solves fast: the graph solver's time limit, and the token
// search's re-alignment of the layers to the tokens' homes.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/token_moves.hpp"
#include "solve/token_search.hpp"
#include "solve/token_state.hpp"

namespace exflow {
namespace {

// A top-k trace whose column 0 follows a fixed successor of its previous expert with
// probability follow_percent / 100; the other columns are uniform, all distinct.
Trace chain_trace(std::int64_t tokens, int layers, int experts, int k, int follow_percent,
                  unsigned seed) {
  std::mt19937 rng(seed);
  auto below = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  std::vector<std::vector<int>> successor(static_cast<std::size_t>(layers));
  for (auto& s : successor) {
    s.resize(static_cast<std::size_t>(experts));
    for (int e = 0; e < experts; ++e) s[static_cast<std::size_t>(e)] = e;
    for (int i = experts - 1; i > 0; --i)
      std::swap(s[static_cast<std::size_t>(i)], s[static_cast<std::size_t>(below(i + 1))]);
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens) * layers * k);
  for (std::int64_t t = 0; t < tokens; ++t) {
    int prev = -1;
    for (int l = 0; l < layers; ++l) {
      std::vector<int> row;
      if (prev >= 0 && below(100) < follow_percent) {
        row.push_back(successor[static_cast<std::size_t>(l)][static_cast<std::size_t>(prev)]);
      }
      while (static_cast<int>(row.size()) < k) {
        const int e = below(experts);
        if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
      }
      for (int c = 0; c < k; ++c) {
        ids[(static_cast<std::size_t>(t) * layers + l) * k + c] = row[static_cast<std::size_t>(c)];
      }
      prev = row[0];
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

// A random balanced placement: every layer's vanilla GPU list shuffled.
Placement random_placement(int layers, int experts, const Topology& topo, unsigned seed) {
  std::mt19937 rng(seed);
  const Placement vanilla = vanilla_placement(layers, experts, topo);
  std::vector<int> gpu = vanilla.gpu_of();
  for (int l = 0; l < layers; ++l) {
    auto first = gpu.begin() + static_cast<std::ptrdiff_t>(l) * experts;
    for (int i = experts - 1; i > 0; --i) {
      std::swap(first[i], first[static_cast<int>(rng() % static_cast<unsigned>(i + 1))]);
    }
  }
  return Placement(layers, experts, topo.gpus(), gpu);
}

struct Realigned {
  bool changed;
  double cost;  // per token, as the state has it
  Placement placement;
};

Realigned realign(const Trace& trace, const Placement& start, const Topology& topo) {
  const solvers::TokenSample sample = solvers::TokenSample::from_trace(trace, trace.tokens());
  solvers::TokenState state(
      sample, topo, start, Scheme::kContextCoherent, 1,
      std::vector<std::int64_t>(static_cast<std::size_t>(trace.layers()), solvers::kNoLoadLimit));
  const solvers::TokenSearchOptions options;
  const solvers::token_moves::SearchControl control(options);
  const bool changed = solvers::token_moves::realign_layers(state, control);
  return {changed, state.total() / static_cast<double>(trace.tokens()), state.placement()};
}

TEST(TokenSearch, RealignmentNeverRaisesTheCostAndIsTheEvaluatorsCost) {
  for (auto [nodes, per_node] : {std::pair{1, 4}, std::pair{2, 2}, std::pair{2, 4}}) {
    const Topology topo(nodes, per_node, 1.0, 2.0);
    for (int k : {1, 2, 3}) {
      const Trace trace = chain_trace(400, 5, 16, k, 80, 7u + static_cast<unsigned>(k));
      const Placement start = random_placement(5, 16, topo, 11u);
      const double before = evaluate(trace, start, topo, {}).cost;
      const Realigned r = realign(trace, start, topo);
      const double after = evaluate(trace, r.placement, topo, {}).cost;
      EXPECT_NEAR(r.cost, after, 1e-9 * std::max(1.0, after));
      EXPECT_LE(after, before + 1e-9 * before) << nodes << "x" << per_node << " k " << k;
      EXPECT_EQ(r.changed, after < before - 1e-9 * before);
    }
  }
}

TEST(TokenSearch, RealignmentUndoesARelabellingOfTheLaterLayers) {
  // A placement aligned by the realignment itself, then layers 3.. relabelled by a rotation of
  // the GPUs: the tokens' homes at layer 2 no longer meet their next experts' GPUs.
  const Topology topo(1, 4, 1.0, 2.0);
  const Trace trace = chain_trace(600, 6, 16, 2, 90, 3u);
  const Realigned aligned = realign(trace, random_placement(6, 16, topo, 5u), topo);
  std::vector<int> gpu = aligned.placement.gpu_of();
  for (std::size_t i = static_cast<std::size_t>(3) * 16; i < gpu.size(); ++i)
    gpu[i] = (gpu[i] + 1) % 4;
  const Placement rotated(6, 16, 4, gpu);
  const double rotated_cost = evaluate(trace, rotated, topo, {}).cost;
  ASSERT_GT(rotated_cost, aligned.cost * 1.01);
  const Realigned r = realign(trace, rotated, topo);
  EXPECT_TRUE(r.changed);
  EXPECT_LE(r.cost, aligned.cost * (1 + 1e-9));
}

TEST(Fast, ReturnsItsBestSoFarAtTheTimeLimit) {
  // A graph whose search runs for seconds: the limit stops it with a valid placement.
  const Trace trace = chain_trace(20000, 40, 128, 1, 20, 9u);
  const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  const Topology topo(4, 8, 1.0, 2.0);
  SolveOptions o;
  o.method = Method::kFast;
  o.threads = 1;
  o.time_limit = 0.05;
  const SolveResult r = solve(graph, topo, o);
  EXPECT_EQ(r.stop, StopReason::kTimeLimit);
  EXPECT_NEAR(r.objective, graph_objective(graph, r.placement, topo), 1e-9 * r.objective);
  // Against the same search run to its end (with two starts): the limit cuts it short, a block
  // step past the limit at most, whatever the build's speed.
  o.time_limit = 0;
  o.starts = 2;
  const SolveResult full = solve(graph, topo, o);
  EXPECT_EQ(full.stop, StopReason::kConverged);
  EXPECT_LT(r.seconds, 0.25 * full.seconds);
}

}  // namespace
}  // namespace exflow
