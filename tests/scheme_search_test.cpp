// The token search for the owner-routed schemes (standard, DeepEP normal and low-latency): its
// cost is the evaluator's for the scheme, it finds the structure the scheme rewards, and plan()
// says when a scheme leaves a placement nothing to gain.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/formats.hpp"
#include "exflow/placement.hpp"
#include "exflow/plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/token_search.hpp"

namespace exflow {
namespace {

// Tokens whose k experts at each layer come from one of `clusters` groups of experts (a
// shuffled grouping per layer, so that vanilla splits every group), with probability
// `inside` percent per column; otherwise any expert. Ids [tokens, layers, k].
Trace clustered_trace(std::int64_t tokens, int layers, int k, int experts, int clusters, int inside,
                      unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int>> order(static_cast<std::size_t>(layers));
  for (auto& o : order) {
    o.resize(static_cast<std::size_t>(experts));
    std::iota(o.begin(), o.end(), 0);
    std::shuffle(o.begin(), o.end(), rng);
  }
  const int size = experts / clusters;
  std::vector<std::int32_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      const int cluster = static_cast<int>(rng() % static_cast<unsigned>(clusters));
      std::vector<int> row;
      while (static_cast<int>(row.size()) < k) {
        const bool in = static_cast<int>(rng() % 100) < inside;
        const int e =
            in ? order[static_cast<std::size_t>(l)]
                      [static_cast<std::size_t>(cluster * size + static_cast<int>(rng() % size))]
               : static_cast<int>(rng() % static_cast<unsigned>(experts));
        if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
      }
      ids.insert(ids.end(), row.begin(), row.end());
    }
  }
  return Trace::from_ids(ids, tokens, layers, k, experts);
}

TEST(SchemeSearch, CostIsTheEvaluatorsForEveryScheme) {
  const Trace trace = clustered_trace(400, 3, 3, 16, 4, 80, 3);
  const Topology topology(2, 2, 1.0, 3.0);
  const solvers::TokenSample sample = solvers::TokenSample::from_trace(trace, 400);
  const Placement start = vanilla_placement(3, 16, topology);
  for (Scheme scheme : {Scheme::kBaseline, Scheme::kDeepEP, Scheme::kDeepEPLowLatency}) {
    for (std::int64_t seq_len : {1, 7}) {
      for (int redundant_total : {0, 4}) {
        solvers::TokenSearchOptions o;
        o.scheme = scheme;
        o.sequence_length = seq_len;
        o.redundant_total = redundant_total;
        o.max_load = std::vector<std::int64_t>(3, 400 * 3 / 4 * 13 / 10);  // ratio 1.3
        const solvers::TokenSearchResult r = solvers::token_search(sample, topology, start, o);
        EvalOptions eo;
        eo.scheme = scheme;
        eo.sequence_length = seq_len;
        const Metrics start_metrics = evaluate(trace, start, topology, eo);
        const Metrics m = evaluate(trace, r.placement, topology, eo);
        const std::string at = std::string(to_string(scheme)) + " seq_len " +
                               std::to_string(seq_len) + " R " + std::to_string(redundant_total);
        EXPECT_NEAR(r.start_cost, start_metrics.cost, 1e-9) << at;
        EXPECT_NEAR(r.cost, m.cost, 1e-9) << at;
        EXPECT_LE(r.cost, r.start_cost + 1e-9) << at;
        EXPECT_EQ(static_cast<int>(r.placement.replicas().size()), 3 * redundant_total) << at;
        EXPECT_LE(m.load_ratio_max, 1.3 + 1e-9) << at;
      }
    }
  }
}

TEST(SchemeSearch, DeepEPKeepsEachTokensExpertsOnFewNodes) {
  // Four groups of co-activated experts on 2 nodes x 2 GPUs: a placement that keeps each group
  // on one node sends a token across nodes only when its owner is elsewhere or a column strays.
  const Trace trace = clustered_trace(2000, 2, 4, 16, 4, 95, 5);
  const Topology topology(2, 2);
  PlanOptions o;
  o.scheme = Scheme::kDeepEP;
  o.max_load_ratio = parse_load_limit("1.2");
  const PlanResult r = plan(trace, topology, o);
  ASSERT_TRUE(r.metrics);
  EXPECT_EQ(r.metrics->primary, Scheme::kDeepEP);
  const SchemeMetrics& deepep = r.metrics->schemes[2];
  ASSERT_EQ(deepep.scheme, Scheme::kDeepEP);
  EXPECT_LT(deepep.placement.inter, 0.75 * deepep.vanilla.inter);
  EXPECT_LE(deepep.placement.load_ratio_max, 1.2 + 1e-9);
  EXPECT_NEAR(r.objective, deepep.placement.cost, 1e-9);  // the search held every token
  EXPECT_FALSE(r.lower_bound);  // the graph bound is for the context-coherent cost only
}

TEST(SchemeSearch, DeepEPLowLatencySaysWhenThePlacementHasNothingToGain) {
  const Trace trace = clustered_trace(600, 2, 2, 8, 2, 90, 7);
  const Topology topology(2, 2);
  PlanOptions o;
  o.scheme = Scheme::kDeepEPLowLatency;
  const PlanResult plain = plan(trace, topology, o);
  EXPECT_NE(plain.detail.find("cannot change its transfers"), std::string::npos) << plain.detail;
  o.redundant = 1;
  const PlanResult replicas = plan(trace, topology, o);
  EXPECT_EQ(replicas.detail.find("cannot change its transfers"), std::string::npos);
  const SchemeMetrics& ll = replicas.metrics->schemes[3];
  ASSERT_EQ(ll.scheme, Scheme::kDeepEPLowLatency);
  EXPECT_LT(ll.placement.cost, ll.vanilla.cost);  // replicas on the owners cut transfers
}

TEST(SchemeSearch, PlanRefusesSchemeOptionsThatCannotApply) {
  const Trace trace = clustered_trace(100, 2, 2, 8, 2, 90, 9);
  const Topology topology(1, 4);
  PlanOptions o;
  o.replica_choice = ReplicaChoice::kEven;
  EXPECT_THROW(plan(trace, topology, o), UsageError);  // even with the coherent scheme
  o.scheme = Scheme::kDeepEP;
  EXPECT_NO_THROW(plan(trace, topology, o));
  ExpertLoads loads{2, 8, std::vector<std::int64_t>(16, 5)};
  EXPECT_THROW(plan(loads, topology, o), UsageError);  // loads carry no tokens to route
  o.replica_choice = ReplicaChoice::kNearest;
  EXPECT_THROW(plan(loads, topology, o), UsageError);
}

// Two windows of a drifting workload: the same experts, co-activated in other groups.
struct Drift {
  Trace before;
  Trace after;
};

Drift drifted_workload() {
  return {clustered_trace(1500, 3, 4, 16, 4, 90, 11), clustered_trace(1500, 3, 4, 16, 4, 90, 12)};
}

TEST(Rebalance, MovesNothingWithoutBudgetNeverLosesWithMoreAndReachesTheFreeSolve) {
  const Drift drift = drifted_workload();
  const Topology topology(2, 2);
  for (Scheme scheme : {Scheme::kDeepEP, Scheme::kContextCoherent}) {
    PlanOptions o;
    o.scheme = scheme;
    o.redundant = 1;
    o.max_load_ratio = parse_load_limit("1.3");
    const PlanResult old = plan(drift.before, topology, o);
    PlanOptions free_options = o;
    const PlanResult fresh = plan(drift.after, topology, free_options);
    o.previous = old.placement;
    const std::int64_t slots = 3 * (16 + 4);
    double last = 0;
    for (std::int64_t budget : {std::int64_t{0}, std::int64_t{2}, std::int64_t{6}, std::int64_t{12},
                                std::int64_t{24}, slots}) {
      o.max_moves = budget;
      const PlanResult r = plan(drift.after, topology, o);
      const std::string at = std::string(to_string(scheme)) + " budget " + std::to_string(budget);
      ASSERT_TRUE(r.metrics) << at;
      const SchemeMetrics& m = r.metrics->schemes[scheme == Scheme::kDeepEP ? 2 : 0];
      EXPECT_LE(static_cast<std::int64_t>(r.moves.size()), budget) << at;
      EXPECT_EQ(r.moves.size(), slot_moves(old.placement, r.placement).size()) << at;
      if (budget == 0) {
        EXPECT_EQ(r.placement, old.placement) << at;
        EXPECT_DOUBLE_EQ(m.placement.cost, evaluate(drift.after, old.placement, topology,
                                                    [&] {
                                                      EvalOptions eo;
                                                      eo.scheme = scheme;
                                                      return eo;
                                                    }())
                                               .cost)
            << at;
      } else {
        EXPECT_LE(m.placement.cost, last + 1e-9) << at;  // more moves never cost more
      }
      last = m.placement.cost;
      // Every change is a slot of one GPU given from one expert to another.
      for (const SlotMove& move : r.moves) {
        EXPECT_TRUE(old.placement.has_copy_on(move.layer, move.removed, move.gpu)) << at;
        EXPECT_TRUE(r.placement.has_copy_on(move.layer, move.added, move.gpu)) << at;
        EXPECT_FALSE(r.placement.has_copy_on(move.layer, move.removed, move.gpu)) << at;
      }
    }
    const SchemeMetrics& f = fresh.metrics->schemes[scheme == Scheme::kDeepEP ? 2 : 0];
    EXPECT_LE(last, 1.02 * f.placement.cost) << to_string(scheme);
  }
}

TEST(Rebalance, RefusesWhatCannotApply) {
  const Drift drift = drifted_workload();
  const Topology topology(2, 2);
  PlanOptions o;
  o.max_moves = 4;
  EXPECT_THROW(plan(drift.after, topology, o), UsageError);  // no previous placement
  o.previous = vanilla_placement(3, 16, topology);
  o.method = Method::kFast;
  EXPECT_THROW(plan(drift.after, topology, o), UsageError);
  o.method = Method::kAuto;
  o.previous = vanilla_placement(3, 16, Topology(1, 8));
  EXPECT_THROW(plan(drift.after, topology, o), InputError);  // another GPU count
  Placement doubled = vanilla_placement(3, 16, topology);
  doubled.add_copy(0, 0, 0);  // a second copy of expert 0 on its own GPU
  o.previous = doubled;
  EXPECT_THROW(plan(drift.after, topology, o), InputError);
}

}  // namespace
}  // namespace exflow
