// refine(): the token-level search that makes a graph solver's placement exact for top-k
// traces, load limits and redundant experts; the load limits themselves, load-only balancing
// and the token sample it searches on.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/token_search.hpp"

namespace exflow {
namespace {

// Portable randomness (the std distributions and std::shuffle differ between standard
// libraries; mt19937 itself does not): a uniform index below n, a Fisher-Yates shuffle and a
// weighted pick.
int below(std::mt19937& rng, int n) {
  return static_cast<int>(rng() % static_cast<unsigned>(n));
}

void shuffle(std::vector<int>& v, std::mt19937& rng) {
  for (int i = static_cast<int>(v.size()) - 1; i > 0; --i) {
    std::swap(v[static_cast<std::size_t>(i)], v[static_cast<std::size_t>(below(rng, i + 1))]);
  }
}

// Index i with probability weight[i] / sum (weights are small integers).
int pick(const std::vector<int>& weight, int total, std::mt19937& rng) {
  int x = below(rng, total);
  int i = 0;
  while (x >= weight[static_cast<std::size_t>(i)]) x -= weight[static_cast<std::size_t>(i++)];
  return i;
}

// A top-k trace with inter-layer affinity and, where `hot` > 1, skewed expert loads: on every
// layer `hot_experts` experts (a different random set per layer) are `hot` times as likely as
// the rest. Each token's k experts are distinct; column 0 follows the previous layer's column 0
// to a preferred successor with probability `follow_percent` / 100.
Trace skewed_trace(std::int64_t tokens, int layers, int k, int experts, unsigned seed, int hot = 1,
                   int hot_experts = 2, int follow_percent = 50) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int>> weight(static_cast<std::size_t>(layers));
  std::vector<std::vector<int>> successor(static_cast<std::size_t>(layers));
  std::vector<int> total(static_cast<std::size_t>(layers));
  for (int l = 0; l < layers; ++l) {
    auto& w = weight[static_cast<std::size_t>(l)];
    w.assign(static_cast<std::size_t>(experts), 1);
    std::vector<int> order(static_cast<std::size_t>(experts));
    for (int e = 0; e < experts; ++e) order[static_cast<std::size_t>(e)] = e;
    shuffle(order, rng);
    for (int h = 0; h < hot_experts; ++h) w[static_cast<std::size_t>(order[h])] = hot;
    total[static_cast<std::size_t>(l)] = experts + hot_experts * (hot - 1);
    auto& s = successor[static_cast<std::size_t>(l)];
    s = order;
    shuffle(s, rng);
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens) * layers * k);
  for (std::int64_t t = 0; t < tokens; ++t) {
    int prev = -1;
    for (int l = 0; l < layers; ++l) {
      const auto i = static_cast<std::size_t>(l);
      std::set<int> chosen;
      std::vector<int> order;
      if (prev >= 0 && below(rng, 100) < follow_percent) {
        const int e = successor[i][static_cast<std::size_t>(prev)];
        chosen.insert(e);
        order.push_back(e);
      }
      while (static_cast<int>(order.size()) < k) {
        const int e = pick(weight[i], total[i], rng);
        if (chosen.insert(e).second) order.push_back(e);
      }
      for (int c = 0; c < k; ++c) {
        ids[(static_cast<std::size_t>(t) * layers + l) * k + c] =
            order[static_cast<std::size_t>(c)];
      }
      prev = order[0];
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

SolveOptions quick_options() {
  SolveOptions o;
  o.method = Method::kFast;
  o.starts = 2;
  o.threads = 1;
  return o;
}

// The CLI's pipeline: the graph solver, then refine on the whole trace.
SolveResult solve_and_refine(const Trace& trace, const Topology& topo, const SolveOptions& o) {
  AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  return refine(trace, topo, o, solve(graph, topo, o));
}

double cost_of(const Trace& trace, const Placement& p, const Topology& topo) {
  return evaluate(trace, p, topo, {}).cost;
}

void expect_relative(double actual, double expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, 1e-9 * std::max(1.0, std::abs(expected))) << what;
}

// ---------------------------------------------------------------------------------------------
// The objective refine reports is the evaluator's cost.

struct Shape {
  int layers;
  int experts;
  int nodes;
  int gpus_per_node;
  int k;
  double intra = 1.0;
  double inter = 2.0;
};

std::string describe(const Shape& s) {
  std::ostringstream os;
  os << s.layers << " layers, " << s.experts << " experts, " << s.nodes << "x" << s.gpus_per_node
     << ", k " << s.k << ", hop costs " << s.intra << "/" << s.inter;
  return os.str();
}

void PrintTo(const Shape& s, std::ostream* os) {
  *os << describe(s);
}

class RefineObjective : public ::testing::TestWithParam<Shape> {};

TEST_P(RefineObjective, IsTheEvaluatorsCostForEveryLimitAndReplicaSetting) {
  const Shape s = GetParam();
  const Topology topo(s.nodes, s.gpus_per_node, s.intra, s.inter);
  const Trace trace = skewed_trace(500, s.layers, s.k, s.experts, 17u + s.experts, 3);
  SolveOptions o = quick_options();
  const SolveResult start = solve(AffinityGraph::from_trace(trace, 1), topo, o);
  for (const char* limit : {"none", "auto", "1.6"}) {
    for (int redundant : {0, 1}) {
      o.max_load = parse_load_limit(limit);
      o.redundant = redundant;
      const std::string what =
          std::string("max_load ") + limit + ", redundant " + std::to_string(redundant);
      SolveResult r = refine(trace, topo, o, start);
      Metrics m = evaluate(trace, r.placement, topo, {});
      expect_relative(r.objective, m.cost, what);
      EXPECT_EQ(m.replicas, static_cast<std::int64_t>(redundant) * s.layers * topo.gpus()) << what;
      if (s.k > 1 || redundant > 0) {
        EXPECT_FALSE(r.lower_bound.has_value()) << what << ": a pairwise bound is no bound here";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RefineObjective,
                         ::testing::Values(Shape{2, 8, 1, 4, 2}, Shape{4, 16, 1, 4, 4},
                                           Shape{3, 8, 2, 2, 2}, Shape{6, 32, 2, 4, 2},
                                           Shape{4, 16, 2, 2, 4, 1.0, 3.0}, Shape{3, 16, 1, 4, 1},
                                           Shape{3, 16, 2, 2, 1, 1.0, 3.0}));

// ---------------------------------------------------------------------------------------------
// Without a load limit or replicas the search only accepts exact improvements.

TEST(Refine, NeverWorseThanItsStartWithoutLimitOrReplicas) {
  std::mt19937 rng(5);
  const Shape shapes[] = {{2, 8, 1, 4, 2}, {4, 16, 2, 2, 4}, {5, 16, 2, 4, 2, 1.0, 3.0}};
  for (const Shape& s : shapes) {
    const Topology topo(s.nodes, s.gpus_per_node, s.intra, s.inter);
    const Trace trace = skewed_trace(500, s.layers, s.k, s.experts, 40u + s.k);
    SolveOptions o = quick_options();
    o.max_load = LoadLimit{};
    // From the graph solver's answer and from a random balanced start.
    SolveResult graph_answer = solve(AffinityGraph::from_trace(trace, 1), topo, o);
    Placement shuffled = vanilla_placement(s.layers, s.experts, topo);
    for (int l = 0; l < s.layers; ++l) {
      std::vector<int> row(shuffled.gpu_of().begin() + l * s.experts,
                           shuffled.gpu_of().begin() + (l + 1) * s.experts);
      shuffle(row, rng);
      for (int e = 0; e < s.experts; ++e) shuffled.set(l, e, row[static_cast<std::size_t>(e)]);
    }
    SolveResult random_start(shuffled);
    random_start.method = Method::kFast;
    for (const SolveResult& start : {graph_answer, random_start}) {
      const double before = cost_of(trace, start.placement, topo);
      SolveResult r = refine(trace, topo, o, start);
      const double after = cost_of(trace, r.placement, topo);
      EXPECT_LE(after, before + 1e-12) << describe(s);
      expect_relative(r.objective, after, describe(s));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Load limits.

struct LimitCase {
  int layers;
  int experts;
  int nodes;
  int gpus_per_node;
  int k;
  double ratio;
  int hot;  // load of the two hot experts of each layer over the others'
};

void PrintTo(const LimitCase& c, std::ostream* os) {
  *os << c.layers << " layers, " << c.experts << " experts, " << c.nodes << "x" << c.gpus_per_node
      << ", k " << c.k << ", ratio " << c.ratio << ", hot " << c.hot;
}

Trace limit_trace(const LimitCase& c) {
  return skewed_trace(1000, c.layers, c.k, c.experts, 7u + c.layers, c.hot, 2, 70);
}

// Without replicas: with them, filling the replica slots can exceed the limit (reported, not
// tested).
class RefineLoadLimit : public ::testing::TestWithParam<LimitCase> {};

TEST_P(RefineLoadLimit, RatioHoldsOnEveryLayerAndBinds) {
  const LimitCase c = GetParam();
  const Topology topo(c.nodes, c.gpus_per_node);
  const Trace trace = limit_trace(c);
  SolveOptions o = quick_options();
  const SolveResult start = solve(AffinityGraph::from_trace(trace, 1), topo, o);

  // Without a limit the placement is over the ratio somewhere, so the limit has work to do.
  o.max_load = parse_load_limit("none");
  Metrics free = evaluate(trace, refine(trace, topo, o, start).placement, topo, {});
  EXPECT_GT(free.load_ratio_max, c.ratio) << "the test trace is not skewed enough";

  o.max_load = parse_load_limit(std::to_string(c.ratio));
  SolveResult r = refine(trace, topo, o, start);
  Metrics m = evaluate(trace, r.placement, topo, {});
  for (int l = 0; l < c.layers; ++l) {
    EXPECT_LE(m.load_ratio_per_layer[static_cast<std::size_t>(l)], c.ratio + 1e-12)
        << "layer " << l;
  }
  expect_relative(r.objective, m.cost, "objective");
}

TEST_P(RefineLoadLimit, AutoIsNoWorseThanVanillaOnEveryLayer) {
  const LimitCase c = GetParam();
  const Topology topo(c.nodes, c.gpus_per_node);
  const Trace trace = limit_trace(c);
  SolveOptions o = quick_options();
  const SolveResult start = solve(AffinityGraph::from_trace(trace, 1), topo, o);
  Metrics vanilla = evaluate(trace, vanilla_placement(c.layers, c.experts, topo), topo, {});
  // The graph solver's answer is worse than vanilla somewhere, so the limit has work to do.
  Metrics before = evaluate(trace, start.placement, topo, {});
  bool worse = false;
  for (int l = 0; l < c.layers; ++l) {
    const auto i = static_cast<std::size_t>(l);
    worse |= before.load_ratio_per_layer[i] > vanilla.load_ratio_per_layer[i];
  }
  EXPECT_TRUE(worse) << "the test trace does not make auto bind";

  o.max_load = parse_load_limit("auto");
  SolveResult r = refine(trace, topo, o, start);
  Metrics m = evaluate(trace, r.placement, topo, {});
  for (int l = 0; l < c.layers; ++l) {
    const auto i = static_cast<std::size_t>(l);
    EXPECT_LE(m.load_ratio_per_layer[i], vanilla.load_ratio_per_layer[i] + 1e-12) << "layer " << l;
  }
  expect_relative(r.objective, m.cost, "objective");
}

INSTANTIATE_TEST_SUITE_P(Cases, RefineLoadLimit,
                         ::testing::Values(LimitCase{4, 16, 1, 4, 2, 1.3, 3},
                                           LimitCase{3, 16, 1, 4, 1, 1.6, 5},
                                           LimitCase{4, 16, 2, 2, 4, 1.3, 3},
                                           LimitCase{3, 32, 2, 4, 2, 1.6, 4},
                                           LimitCase{2, 16, 2, 2, 1, 1.25, 3}));

TEST(Refine, InfeasibleRatioNamesTheSmallestFeasibleOne) {
  // 8 experts on 4 GPUs; the hot expert takes about 5/12 of every layer's tokens, more than the
  // mean per GPU (1/4), so no placement reaches ratio 1.
  const Topology topo(1, 4);
  const Trace trace = skewed_trace(800, 3, 1, 8, 3, 5, 1, 0);
  SolveOptions o = quick_options();
  o.max_load = parse_load_limit("1.0");
  std::string named;
  try {
    solve_and_refine(trace, topo, o);
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    const std::string key = "smallest ratio found feasible for all layers is ";
    const std::size_t at = msg.find(key);
    ASSERT_NE(at, std::string::npos) << msg;
    named = msg.substr(at + key.size());
  }
  const double ratio = std::stod(named);
  EXPECT_GT(ratio, 1.5) << named;
  // The named ratio, passed back as printed, is accepted; 1% below it is refused.
  o.max_load = parse_load_limit(named);
  EXPECT_NO_THROW(solve_and_refine(trace, topo, o)) << named;
  o.max_load = parse_load_limit(std::to_string(ratio * 0.99));
  EXPECT_THROW(solve_and_refine(trace, topo, o), UsageError);
}

TEST(Refine, EveryNamedSmallestRatioIsAcceptedAsPrinted) {
  // Many small skewed traces: the ratio in the refusal is rounded for printing, and must be
  // rounded up to stay feasible.
  const Topology topo(1, 4);
  int refusals = 0;
  for (unsigned seed = 1; seed <= 40; ++seed) {
    const Trace trace = skewed_trace(301 + seed, 2, 1 + seed % 2, 8, seed, 5, 1, 0);
    SolveResult start(vanilla_placement(2, 8, topo));
    start.method = Method::kFast;
    SolveOptions o = quick_options();
    o.max_load = parse_load_limit("1.0");
    std::string named;
    try {
      refine(trace, topo, o, start);
      continue;
    } catch (const UsageError& e) {
      const std::string msg = e.what();
      named = msg.substr(msg.rfind(' ') + 1);
    }
    ++refusals;
    o.max_load = parse_load_limit(named);
    EXPECT_NO_THROW(refine(trace, topo, o, start)) << "seed " << seed << ", ratio " << named;
  }
  EXPECT_GT(refusals, 20);
}

TEST(LoadLimit, ParsesNoneAutoAndRatios) {
  EXPECT_EQ(parse_load_limit("none").kind, LoadLimit::Kind::kNone);
  EXPECT_EQ(parse_load_limit("auto").kind, LoadLimit::Kind::kAuto);
  LoadLimit r = parse_load_limit("1.25");
  EXPECT_EQ(r.kind, LoadLimit::Kind::kRatio);
  EXPECT_DOUBLE_EQ(r.ratio, 1.25);
  EXPECT_DOUBLE_EQ(parse_load_limit("1").ratio, 1.0);
  EXPECT_EQ(to_string(parse_load_limit("none")), "none");
  EXPECT_EQ(to_string(parse_load_limit("auto")), "auto");
  EXPECT_EQ(to_string(r), "1.25");
  for (const char* bad : {"0.9", "abc", "", "1.2x", "nan", "inf", "-1"}) {
    EXPECT_THROW(parse_load_limit(bad), UsageError) << "'" << bad << "'";
  }
}

TEST(LoadLimit, LimitsPerLayer) {
  const std::vector<std::int64_t> vanilla_max = {700, 650, 900};
  // 1000 tokens x k 2 over 8 GPUs: mean 250 per GPU.
  EXPECT_TRUE(load_limits(LoadLimit{}, 1000, 2, 8, vanilla_max).empty());
  EXPECT_EQ(load_limits(parse_load_limit("auto"), 1000, 2, 8, vanilla_max), vanilla_max);
  EXPECT_EQ(load_limits(parse_load_limit("1.3"), 1000, 2, 8, vanilla_max),
            (std::vector<std::int64_t>{325, 325, 325}));
  // floor(1.25 * 1001 * 1 / 4) = floor(312.8125) = 312.
  EXPECT_EQ(load_limits(parse_load_limit("1.25"), 1001, 1, 4, {0, 0}),
            (std::vector<std::int64_t>{312, 312}));
  // An exact product stays exact: 1.5 * 12 * 4 / 8 = 9.
  EXPECT_EQ(load_limits(parse_load_limit("1.5"), 12, 4, 8, {0}), (std::vector<std::int64_t>{9}));
}

// ---------------------------------------------------------------------------------------------
// Replicas.

TEST(Refine, ReplicasFillEverySlotWithoutDuplicatesOnAGpu) {
  struct Case {
    int layers, experts, nodes, gpus_per_node, k, redundant;
  };
  const Case cases[] = {
      {3, 8, 1, 4, 2, 1}, {4, 16, 2, 2, 2, 2}, {2, 16, 2, 4, 4, 1}, {3, 8, 1, 4, 1, 2}};
  for (const Case& c : cases) {
    const Topology topo(c.nodes, c.gpus_per_node);
    const int G = topo.gpus();
    const Trace trace = skewed_trace(500, c.layers, c.k, c.experts, 11u + c.redundant, 3);
    SolveOptions o = quick_options();
    o.redundant = c.redundant;
    SolveResult r = solve_and_refine(trace, topo, o);
    const Placement& p = r.placement;
    EXPECT_NO_THROW(validate(p, topo, Balance::kExact));
    EXPECT_EQ(static_cast<int>(p.replicas().size()), c.layers * G * c.redundant);
    for (int l = 0; l < c.layers; ++l) {
      EXPECT_EQ(p.slots_per_gpu(l),
                std::vector<int>(static_cast<std::size_t>(G), c.experts / G + c.redundant))
          << "layer " << l;
      for (int e = 0; e < c.experts; ++e) {
        std::vector<int> copies = p.copies(l, e);
        EXPECT_EQ(std::set<int>(copies.begin(), copies.end()).size(), copies.size())
            << "layer " << l << " expert " << e << " has two copies on one GPU";
        EXPECT_EQ(copies.front(), p.gpu(l, e));
      }
    }
    expect_relative(r.objective, cost_of(trace, p, topo), "objective");
  }
}

TEST(Refine, TooManyReplicasAreRefused) {
  // 4 experts on 4 GPUs hold at most 3 replicas each: 4 replica slots per GPU need 16 > 12.
  const Topology topo(1, 4);
  const Trace trace = skewed_trace(100, 2, 2, 4, 2);
  SolveOptions o = quick_options();
  o.redundant = 4;
  EXPECT_THROW(solve_and_refine(trace, topo, o), UsageError);
  o.redundant = 3;
  SolveResult r = solve_and_refine(trace, topo, o);
  for (int l = 0; l < 2; ++l) {
    for (int e = 0; e < 4; ++e) EXPECT_EQ(r.placement.copies(l, e).size(), 4u);
  }
}

// ---------------------------------------------------------------------------------------------
// Determinism and pass-through.

TEST(Refine, DeterministicForASeedAndTheThreadCount) {
  const Topology topo(2, 2);
  const Trace trace = skewed_trace(600, 4, 2, 16, 23, 3);
  for (int redundant : {0, 1}) {
    SolveOptions o = quick_options();
    o.max_load = parse_load_limit("1.6");
    o.redundant = redundant;
    o.seed = 9;
    SolveResult a = solve_and_refine(trace, topo, o);
    SolveResult b = solve_and_refine(trace, topo, o);
    o.threads = 2;
    SolveResult c = solve_and_refine(trace, topo, o);
    EXPECT_EQ(a.placement, b.placement) << "redundant " << redundant;
    EXPECT_EQ(a.placement, c.placement) << "redundant " << redundant;
    EXPECT_DOUBLE_EQ(a.objective, b.objective);
    EXPECT_DOUBLE_EQ(a.objective, c.objective);
  }
}

TEST(Refine, Top1WithoutLimitOrReplicasIsReturnedUnchanged) {
  const Topology topo(1, 4);
  const Trace trace = skewed_trace(400, 3, 1, 8, 31, 3);
  SolveOptions o;
  o.method = Method::kExact;
  o.max_load = LoadLimit{};
  SolveResult start = solve(AffinityGraph::from_trace(trace, 1), topo, o);
  ASSERT_TRUE(start.optimal);
  SolveResult r = refine(trace, topo, o, start);
  EXPECT_EQ(r.placement, start.placement);
  EXPECT_EQ(r.objective, start.objective);
  EXPECT_TRUE(r.optimal);
  EXPECT_EQ(r.lower_bound, start.lower_bound);
  EXPECT_EQ(r.detail, start.detail);
  // Top-1: the graph objective is the evaluator's cost.
  expect_relative(r.objective, cost_of(trace, r.placement, topo), "objective");
}

TEST(Refine, VanillaStaysVanillaAndOnlyGainsReplicas) {
  const Topology topo(2, 2);
  const int L = 3, E = 8;
  const Trace trace = skewed_trace(500, L, 2, E, 37, 3);
  SolveOptions o = quick_options();
  o.method = Method::kVanilla;
  o.max_load = parse_load_limit("auto");
  SolveResult start = solve(AffinityGraph::from_trace(trace, 1), topo, o);
  ASSERT_EQ(start.method, Method::kVanilla);
  const Placement vanilla = vanilla_placement(L, E, topo);
  ASSERT_EQ(start.placement, vanilla);

  SolveResult same = refine(trace, topo, o, start);
  EXPECT_EQ(same.placement, vanilla);
  EXPECT_EQ(same.method, Method::kVanilla);

  o.redundant = 1;
  SolveResult replicated = refine(trace, topo, o, start);
  EXPECT_EQ(replicated.method, Method::kVanilla);
  EXPECT_EQ(static_cast<int>(replicated.placement.replicas().size()), L * topo.gpus());
  EXPECT_NO_THROW(validate(replicated.placement, topo, Balance::kExact));
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) {
      std::vector<int> copies = replicated.placement.copies(l, e);
      EXPECT_TRUE(std::count(copies.begin(), copies.end(), vanilla.gpu(l, e)) == 1)
          << "layer " << l << " expert " << e << " lost its vanilla copy";
    }
  }
  expect_relative(replicated.objective, cost_of(trace, replicated.placement, topo), "objective");
}

// ---------------------------------------------------------------------------------------------
// Load-only balancing.

std::int64_t busiest(const std::vector<std::int64_t>& loads, int layer, int experts,
                     const Placement& p) {
  // Replicated experts split their load evenly (EPLB's model); compare in exact integers by
  // scaling with the product of copy counts' common multiple 2*3*4 = 24 (at most 4 copies).
  std::vector<std::int64_t> gpu(static_cast<std::size_t>(p.gpus()), 0);
  for (int e = 0; e < experts; ++e) {
    std::vector<int> copies = p.copies(layer, e);
    const std::int64_t share =
        24 * loads[static_cast<std::size_t>(layer) * experts + e] / static_cast<int>(copies.size());
    for (int g : copies) gpu[static_cast<std::size_t>(g)] += share;
  }
  return *std::max_element(gpu.begin(), gpu.end());
}

TEST(BalanceLoads, HandCaseReachesTheOptimum) {
  // 4 experts {10, 1, 1, 8} on 2 GPUs, 2 each: {10, 1} and {1, 8} gives 11, the best possible
  // (vanilla gives 11 too, {10, 8} would give 18).
  const std::vector<std::int64_t> loads = {10, 1, 1, 8};
  const Topology topo(1, 2);
  Placement p = balance_loads(loads, 1, 4, topo, 0);
  EXPECT_EQ(busiest(loads, 0, 4, p), 24 * 11);
  EXPECT_NE(p.gpu(0, 0), p.gpu(0, 3));
  EXPECT_FALSE(p.has_replicas());

  // {9, 8, 1, 1}: vanilla puts 9 and 8 together (17); balanced gives 10.
  const std::vector<std::int64_t> front = {9, 8, 1, 1};
  Placement q = balance_loads(front, 1, 4, topo, 0);
  EXPECT_EQ(busiest(front, 0, 4, q), 24 * 10);
  EXPECT_THROW(balance_loads(front, 2, 4, topo, 0), UsageError);  // 4 loads for 2 x 4

  // Largest-first then swaps ends at 26 here; the contiguous layout {3 8 14} {11 4 10}
  // {12 11 1} reaches 25, the optimum (the total is 74 over 3 GPUs).
  const std::vector<std::int64_t> greedy_loses = {3, 8, 14, 11, 4, 10, 12, 11, 1};
  Placement g = balance_loads(greedy_loses, 1, 9, Topology(1, 3), 0);
  EXPECT_EQ(busiest(greedy_loses, 0, 9, g), 24 * 25);
}

TEST(BalanceLoads, NeverWorseThanVanillaOnSmallIntegerLoads) {
  // Small integer loads make ties and near-ties common, where the greedy is most fragile.
  std::mt19937 rng(2);
  for (int rep = 0; rep < 3000; ++rep) {
    const int G = 2 + rep % 3, E = G * (2 + rep % 3);
    std::vector<std::int64_t> loads(static_cast<std::size_t>(E));
    for (auto& x : loads) x = static_cast<std::int64_t>(rng() % 20);
    const Topology topo(1, G);
    Placement p = balance_loads(loads, 1, E, topo, 0);
    ASSERT_LE(busiest(loads, 0, E, p), busiest(loads, 0, E, vanilla_placement(1, E, topo)))
        << "rep " << rep;
  }
}

TEST(BalanceLoads, RandomLayersBeatOrTieVanillaAndReplicateTheHottest) {
  std::mt19937 rng(13);
  for (int rep = 0; rep < 6; ++rep) {
    const Topology topo(1 + rep % 2, rep < 3 ? 4 : 2);
    const int G = topo.gpus();
    const int L = 3, E = 4 * G;
    std::vector<std::int64_t> loads(static_cast<std::size_t>(L) * E);
    // Heavy-tailed: most experts light, some ten or a hundred times hotter.
    for (auto& x : loads) x = (1 + below(rng, 100)) * (below(rng, 4) == 0 ? 10 : 1);
    loads[static_cast<std::size_t>(below(rng, L * E))] *= 100;
    const Placement vanilla = vanilla_placement(L, E, topo);
    Placement p = balance_loads(loads, L, E, topo, 0);
    EXPECT_NO_THROW(validate(p, topo, Balance::kExact));
    for (int l = 0; l < L; ++l) {
      EXPECT_LE(busiest(loads, l, E, p), busiest(loads, l, E, vanilla)) << "rep " << rep;
    }
    Placement r = balance_loads(loads, L, E, topo, G);
    EXPECT_NO_THROW(validate(r, topo, Balance::kExact));
    EXPECT_EQ(static_cast<int>(r.replicas().size()), L * G);
    for (int l = 0; l < L; ++l) {
      const auto* row = loads.data() + static_cast<std::size_t>(l) * E;
      const int hottest = static_cast<int>(std::max_element(row, row + E) - row);
      EXPECT_GE(r.copies(l, hottest).size(), 2u) << "rep " << rep << " layer " << l;
      EXPECT_EQ(r.slots_per_gpu(l), std::vector<int>(static_cast<std::size_t>(G), E / G + 1));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The token sample.

TEST(TokenSample, CopiesAllTokensOrAnEvenlySpacedSubset) {
  const Trace trace = skewed_trace(10000, 3, 2, 16, 41);
  for (std::int64_t max_tokens : {std::int64_t{10000}, std::int64_t{20000}}) {
    solvers::TokenSample all = solvers::TokenSample::from_trace(trace, max_tokens);
    ASSERT_EQ(all.tokens, 10000);
    EXPECT_EQ(all.layers, 3);
    EXPECT_EQ(all.k, 2);
    EXPECT_EQ(all.experts, 16);
    for (std::int64_t t = 0; t < all.tokens; ++t) {
      for (int l = 0; l < 3; ++l) {
        for (int c = 0; c < 2; ++c) ASSERT_EQ(all.id(l, t, c), trace.at(t, l, c));
      }
    }
  }
  // Spans several of the sampler's 4096-token blocks, with gaps between sampled tokens.
  for (std::int64_t n :
       {std::int64_t{1}, std::int64_t{7}, std::int64_t{3000}, std::int64_t{9999}}) {
    solvers::TokenSample s = solvers::TokenSample::from_trace(trace, n);
    ASSERT_EQ(s.tokens, n);
    ASSERT_EQ(s.ids.size(), static_cast<std::size_t>(n) * 3 * 2);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t t = i * 10000 / n;
      for (int l = 0; l < 3; ++l) {
        for (int c = 0; c < 2; ++c) ASSERT_EQ(s.id(l, i, c), trace.at(t, l, c)) << n << " " << i;
      }
    }
  }
}

TEST(TokenSearch, SaysWhetherTheWorkBudgetOrTheClockStoppedIt) {
  const Trace trace = skewed_trace(600, 4, 2, 8, 9);
  const Topology topo(1, 4);
  const solvers::TokenSample sample = solvers::TokenSample::from_trace(trace, 600);
  const Placement start = vanilla_placement(4, 8, topo);
  solvers::TokenSearchOptions o;
  o.anneal_swaps = 0;     // the sweeps, which the budget cuts, do all the improving
  o.max_token_walks = 1;  // the first evaluation exhausts it
  const solvers::TokenSearchResult budget = solvers::token_search(sample, topo, start, o);
  EXPECT_TRUE(budget.stopped_by_time);
  EXPECT_TRUE(budget.stopped_by_work_budget);
  o.max_token_walks = 0;
  const solvers::TokenSearchResult free = solvers::token_search(sample, topo, start, o);
  EXPECT_FALSE(free.stopped_by_time);
  EXPECT_FALSE(free.stopped_by_work_budget);
  EXPECT_LT(free.cost, budget.cost);
}

}  // namespace
}  // namespace exflow
