// Strategies and method choice: trace slices and graph sums (what --incremental counts with),
// the incremental steps against from-scratch prefix graphs, auto's choice between exact and
// fast by exact's estimated time, and --bipart on node and GPU counts that are not powers of
// two.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/methods.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using test::error_of;
using test::TempDir;

// C-order ids [tokens, layers, k] of a top-k trace: every row holds k distinct experts, the
// first column follows a per-layer successor of the previous layer's first expert with
// probability `follow`.
std::vector<std::int32_t> topk_ids(std::int64_t tokens, int layers, int experts, int k,
                                   unsigned seed, double follow = 0.7) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int>> successor(static_cast<std::size_t>(layers),
                                          std::vector<int>(static_cast<std::size_t>(experts)));
  for (auto& s : successor) {
    for (int e = 0; e < experts; ++e) s[static_cast<std::size_t>(e)] = e;
    for (int i = experts - 1; i > 0; --i)
      std::swap(s[static_cast<std::size_t>(i)], s[rng() % static_cast<unsigned>(i + 1)]);
  }
  std::vector<std::int32_t> ids;
  ids.reserve(static_cast<std::size_t>(tokens) * layers * k);
  for (std::int64_t t = 0; t < tokens; ++t) {
    int e = static_cast<int>(rng() % static_cast<unsigned>(experts));
    for (int l = 0; l < layers; ++l) {
      if (l > 0) {
        e = static_cast<int>(rng() % 1000) < follow * 1000
                ? successor[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)]
                : static_cast<int>(rng() % static_cast<unsigned>(experts));
      }
      for (int c = 0; c < k; ++c) ids.push_back((e + c) % experts);
    }
  }
  return ids;
}

Trace topk_trace(std::int64_t tokens, int layers, int experts, int k, unsigned seed,
                 double follow = 0.7) {
  return Trace::from_ids(topk_ids(tokens, layers, experts, k, seed, follow), tokens, layers, k,
                         experts);
}

void expect_same_graph(const AffinityGraph& a, const AffinityGraph& b, const std::string& what) {
  EXPECT_EQ(a.layers(), b.layers()) << what;
  EXPECT_EQ(a.experts(), b.experts()) << what;
  EXPECT_EQ(a.tokens(), b.tokens()) << what;
  EXPECT_EQ(a.transitions(), b.transitions()) << what;
  EXPECT_EQ(a.loads(), b.loads()) << what;
}

TEST(TraceSlice, HoldsTheTokensOfItsRange) {
  const std::int64_t n = 5000;  // more than two blocks of kTraceBlockTokens
  const std::vector<std::int32_t> ids = topk_ids(n, 3, 9, 2, 4);
  TempDir dir;
  std::vector<std::int64_t> values(ids.begin(), ids.end());
  test::write_npy(dir.path() + "/c.npy", values, {n, 3, 2});
  const Trace memory = Trace::from_ids(ids, n, 3, 2);
  const Trace file = Trace::open(dir.path() + "/c.npy");
  for (const Trace* whole : {&memory, &file}) {
    for (auto [begin, end] : {std::pair<std::int64_t, std::int64_t>{0, 1},
                              {1, n},
                              {2047, 2049},
                              {2048, 4500},
                              {n - 1, n}}) {
      const Trace part = whole->slice(begin, end);
      ASSERT_EQ(part.tokens(), end - begin);
      EXPECT_EQ(part.experts(), whole->experts());
      for (std::int64_t t : {std::int64_t{0}, (end - begin) / 2, end - begin - 1}) {
        for (int l = 0; l < 3; ++l) {
          for (int c = 0; c < 2; ++c) {
            EXPECT_EQ(part.at(t, l, c), whole->at(begin + t, l, c))
                << whole->source() << " [" << begin << ", " << end << ") token " << t;
          }
        }
      }
    }
    // A slice of a slice, and a prefix of a slice, count from their own first token.
    const Trace inner = whole->slice(1000, 4000).slice(100, 2500).prefix(50);
    EXPECT_EQ(inner.tokens(), 50);
    EXPECT_EQ(inner.at(49, 2, 1), whole->at(1149, 2, 1));
  }
  for (auto [begin, end] :
       {std::pair<std::int64_t, std::int64_t>{-1, 3}, {3, 3}, {4, 3}, {0, n + 1}}) {
    EXPECT_NE(error_of<UsageError>([&] {
                (void)memory.slice(begin, end);
              }).find("tokens [" + std::to_string(begin) + ", " + std::to_string(end) + ")"),
              std::string::npos);
  }
}

TEST(AffinityAdd, PrefixGraphPlusRestIsTheWholeGraph) {
  const std::int64_t n = 6000;
  const Trace trace = topk_trace(n, 5, 12, 3, 7);
  const AffinityGraph whole = AffinityGraph::from_trace(trace, 2);
  for (std::int64_t split :
       {std::int64_t{1}, std::int64_t{2047}, std::int64_t{2048}, std::int64_t{3001}, n - 1}) {
    AffinityGraph sum = AffinityGraph::from_trace(trace.prefix(split), 2);
    sum.add(AffinityGraph::from_trace(trace.slice(split, n), 1));
    expect_same_graph(sum, whole, "split at " + std::to_string(split));
  }
  // As --incremental counts: each step adds the graph of the tokens after the previous prefix.
  const std::int64_t step = 1100;
  AffinityGraph running = AffinityGraph::from_trace(trace.prefix(step), 2);
  for (std::int64_t counted = step; counted < n;) {
    const std::int64_t tokens = std::min(n, counted + step);
    running.add(AffinityGraph::from_trace(trace.slice(counted, tokens), 2));
    expect_same_graph(running, AffinityGraph::from_trace(trace.prefix(tokens), 2),
                      "prefix of " + std::to_string(tokens));
    counted = tokens;
  }
  AffinityGraph other(5, 11);
  AffinityGraph copy = whole;
  EXPECT_NE(error_of<UsageError>([&] { copy.add(other); }).find("cannot add 5 layers x 11"),
            std::string::npos);
  expect_same_graph(copy, whole, "after a refused add");
}

TEST(AffinityAdd, SumsPastInt64AreRefused) {
  const std::int64_t big = std::int64_t{1} << 62;
  AffinityGraph a(2, 2, 1, {big, 0, 0, 0}, {big, 0, big, 0});
  const AffinityGraph b = a;
  EXPECT_NE(error_of<InputError>([&] { a.add(b); }).find("int64"), std::string::npos);
}

TEST(Incremental, StepsAddTokensUntilSteady) {
  // The affinity changes halfway (another seed's successors), so the placement does not
  // settle on the first prefixes and the strategy takes several steps.
  const int L = 4, E = 8;
  std::vector<std::int32_t> ids = topk_ids(3000, L, E, 2, 11, 0.9);
  const std::vector<std::int32_t> second = topk_ids(3000, L, E, 2, 12, 0.9);
  ids.insert(ids.end(), second.begin(), second.end());
  const Trace trace = Trace::from_ids(ids, 6000, L, 2, E);
  const Topology topo(2, 2);
  SolveOptions o;
  o.method = Method::kFast;
  o.threads = 1;
  std::int64_t used = 0;
  SolveResult r = solve_incremental(trace, topo, o, 700, &used, 2);
  ASSERT_GE(r.steps.size(), 2u);
  for (std::size_t s = 0; s < r.steps.size(); ++s) {
    const auto tokens = std::min<std::int64_t>(6000, 700 * static_cast<std::int64_t>(s + 1));
    EXPECT_EQ(r.steps[s].rfind(std::to_string(tokens) + " tokens: fast objective", 0), 0u)
        << r.steps[s];
  }
  // The answer's objective is its objective on the from-scratch graph of the prefix used.
  const AffinityGraph prefix = AffinityGraph::from_trace(trace.prefix(used), 1);
  EXPECT_DOUBLE_EQ(r.objective, graph_objective(prefix, r.placement, topo));
}

TEST(Auto, PicksFastWhereExactWouldTakeLong) {
  // 16 experts on 2 GPUs: 6 435 groupings per layer, which exact accepts for a few layers but
  // needs seconds per layer pair for.
  const Trace trace = topk_trace(1200, 4, 16, 2, 3);
  const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  const Topology topo(1, 2);
  const solvers::Instance instance{graph, topo, 8, 8};
  ASSERT_EQ(solvers::exact_refusal(instance), "");
  EXPECT_GT(solvers::exact_seconds_estimate(instance), 1.0);
  SolveOptions o;
  o.threads = 1;
  SolveResult r = solve(graph, topo, o);
  EXPECT_EQ(r.method, Method::kFast);
  EXPECT_EQ(r.detail.rfind("auto: fast, exact estimated at", 0), 0u) << r.detail;
  EXPECT_NE(r.detail.find("over the 1 s budget"), std::string::npos) << r.detail;
  EXPECT_DOUBLE_EQ(r.objective, graph_objective(graph, r.placement, topo));
}

TEST(Auto, SaysWhyWhenExactRefuses) {
  const Trace trace = topk_trace(300, 3, 64, 1, 5);
  const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  SolveOptions o;
  o.threads = 1;
  SolveResult r = solve(graph, Topology(2, 4), o);
  EXPECT_EQ(r.method, Method::kFast);
  EXPECT_EQ(r.detail.rfind("auto: fast, exact refuses (64 experts on 2 x 4 GPUs have", 0), 0u)
      << r.detail;
}

TEST(Auto, ProvesTheMixtralShapes) {
  // Mixtral: 32 layers of 8 experts, top-2.
  const Trace trace = topk_trace(1200, 32, 8, 2, 9);
  const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  for (auto [nodes, gpus] : {std::pair<int, int>{1, 2}, {1, 4}, {1, 8}, {2, 2}, {2, 4}, {4, 2}}) {
    const Topology topo(nodes, gpus);
    const int per_gpu = 8 / topo.gpus();
    EXPECT_LT(solvers::exact_seconds_estimate({graph, topo, per_gpu, per_gpu}), 1.0);
    SolveOptions o;
    o.threads = 1;
    SolveResult r = solve(graph, topo, o);
    EXPECT_EQ(r.method, Method::kExact) << nodes << " x " << gpus;
    EXPECT_TRUE(r.optimal) << nodes << " x " << gpus;
    EXPECT_EQ(*r.lower_bound, r.objective) << nodes << " x " << gpus;
    EXPECT_EQ(r.detail.rfind("auto: exact, exact estimated at", 0), 0u) << r.detail;
  }
}

// Experts of every layer on every GPU of `placement`, which must be E/G each.
void expect_balanced(const Placement& p, const Topology& topo, const std::string& what) {
  for (int l = 0; l < p.layers(); ++l) {
    std::vector<int> count(static_cast<std::size_t>(topo.gpus()), 0);
    for (int e = 0; e < p.experts(); ++e) ++count[static_cast<std::size_t>(p.gpu(l, e))];
    for (int c : count) EXPECT_EQ(c, p.experts() / topo.gpus()) << what << ", layer " << l;
  }
}

TEST(Bipart, SplitsAnyNodeAndGpuCountBySmallestPrimeFactor) {
  struct Case {
    int nodes, gpus, experts;
    std::size_t splits;  // the top split, then every part's, down to single GPUs
    std::string top;     // how the first step names the top split
  };
  for (const Case& c : {Case{3, 2, 12, 1 + 3, "split GPUs 0-5 (nodes) in 3:"},
                        Case{1, 6, 12, 1 + 2, "split GPUs 0-5 (GPUs of a node):"},
                        Case{3, 3, 9, 1 + 3, "split GPUs 0-8 (nodes) in 3:"},
                        Case{5, 1, 10, 1, "split GPUs 0-4 (nodes) in 5:"},
                        Case{2, 3, 12, 1 + 2, "split GPUs 0-5 (nodes):"},
                        Case{1, 9, 9, 1 + 3, "split GPUs 0-8 (GPUs of a node) in 3:"}}) {
    const std::string what = std::to_string(c.nodes) + " x " + std::to_string(c.gpus);
    const Trace trace = topk_trace(800, 4, c.experts, 1, 21);
    const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
    const Topology topo(c.nodes, c.gpus);
    SolveOptions o;
    o.bipart = true;
    o.threads = 1;
    SolveResult r = solve(graph, topo, o);
    expect_balanced(r.placement, topo, what);
    EXPECT_DOUBLE_EQ(r.objective, graph_objective(graph, r.placement, topo)) << what;
    ASSERT_EQ(r.steps.size(), c.splits) << what;
    EXPECT_EQ(r.detail, "recursive partitioning, " + std::to_string(c.splits) + " splits");
    EXPECT_EQ(r.steps[0].rfind(c.top, 0), 0u) << r.steps[0];
  }
}

TEST(Bipart, NoWorseThanVanillaWhereNodesMatter) {
  // 3 nodes of 2 GPUs, 12 experts, strong affinity and an expensive node crossing.
  const Trace trace = topk_trace(2000, 6, 12, 2, 33, 0.9);
  const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  const Topology topo(3, 2, 1.0, 4.0);
  SolveOptions o;
  o.bipart = true;
  o.threads = 1;
  SolveResult r = solve(graph, topo, o);
  const double vanilla = graph_objective(graph, vanilla_placement(6, 12, topo), topo);
  EXPECT_LT(r.objective, vanilla);
  expect_balanced(r.placement, topo, "3 x 2");
}

TEST(Bipart, PowersOfTwoStillBisect) {
  const Trace trace = topk_trace(800, 4, 16, 1, 2);
  const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  SolveOptions o;
  o.bipart = true;
  o.threads = 1;
  SolveResult r = solve(graph, Topology(2, 4), o);
  ASSERT_EQ(r.steps.size(), 7u);  // nodes, the GPUs of each node, then each half of those
  for (const std::string& step : r.steps) EXPECT_EQ(step.find(" in "), std::string::npos) << step;
  EXPECT_EQ(r.steps[1].rfind("split GPUs 0-3 (GPUs of a node):", 0), 0u) << r.steps[1];
}

TEST(CliBipart, SixGpusAreSplitInTwoThenThree) {
  TempDir dir;
  const test::CommandRun r = test::run_command(
      EXFLOW_CLI, {"solve", std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy",
                   "--topk", "1", "--gpus-per-node", "6", "--experts", "72", "--bipart",
                   "--out-dir", dir.path(), "--json", "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("split GPUs 0-5 (GPUs of a node)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("split GPUs 0-2 (GPUs of a node) in 3"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace exflow
