// exflow::plan, the one planning pipeline, and its options table.
#include "exflow/plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/json.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow {
namespace {

// Top-k tokens whose experts follow a fixed successor with probability `follow`.
Trace follow_trace(int tokens, int layers, int k, int experts, unsigned seed, double follow = 0.7) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::int32_t> ids;
  for (int t = 0; t < tokens; ++t) {
    std::vector<int> row;
    while (static_cast<int>(row.size()) < k) {
      const int e = static_cast<int>(rng() % static_cast<unsigned>(experts));
      if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
    }
    for (int l = 0; l < layers; ++l) {
      ids.insert(ids.end(), row.begin(), row.end());
      for (int& e : row) {
        const int next = u(rng) < follow ? (e * 5 + 3) % experts
                                         : static_cast<int>(rng() % static_cast<unsigned>(experts));
        if (std::find(row.begin(), row.end(), next) == row.end()) e = next;
      }
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

TEST(Plan, ExactTop1IsOptimalWithItsBoundAndMetricsFromTheEvaluator) {
  const Trace trace = follow_trace(400, 3, 1, 4, 1);
  const Topology topo(1, 2);
  PlanOptions o;
  o.method = Method::kExact;
  o.max_load_ratio = LoadLimit{};
  const PlanResult r = plan(trace, topo, o);
  EXPECT_EQ(r.status, PlanStatus::kOptimal);
  EXPECT_TRUE(r.optimal);
  ASSERT_TRUE(r.metrics.has_value());
  ASSERT_TRUE(r.lower_bound.has_value());
  EXPECT_NEAR(*r.lower_bound, r.metrics->placement.cost, 1e-12);
  EXPECT_NEAR(*r.gap, 0.0, 1e-12);
  EXPECT_EQ(r.tokens_used, 400);
  // The metrics are the evaluator's on the placement returned, and vanilla's.
  const Metrics direct = evaluate(trace, r.placement, topo);
  EXPECT_EQ(r.metrics->placement.cost, direct.cost);
  EXPECT_EQ(r.metrics->vanilla.cost, evaluate(trace, r.vanilla, topo).cost);
  EXPECT_EQ(r.vanilla, vanilla_placement(3, 4, topo));
}

TEST(Plan, TopKWithReplicasConvergesWithoutABound) {
  const Trace trace = follow_trace(300, 4, 2, 8, 2);
  const Topology topo(1, 4);
  PlanOptions o;
  o.redundant = 1;
  // Under the default limit (no layer busier than vanilla's) the replicas' copies cannot all be
  // kept within it here: the status says so before anything else.
  const PlanResult limited = plan(trace, topo, o);
  EXPECT_GT(limited.layers_over_load_limit, 0);
  EXPECT_EQ(limited.status, PlanStatus::kLoadLimitNotMet);
  o.max_load_ratio = LoadLimit{};
  const PlanResult r = plan(trace, topo, o);
  EXPECT_EQ(r.status, PlanStatus::kConverged);
  EXPECT_EQ(r.layers_over_load_limit, 0);
  EXPECT_FALSE(r.optimal);
  EXPECT_FALSE(r.lower_bound.has_value());
  EXPECT_FALSE(r.gap.has_value());
  EXPECT_EQ(r.metrics->placement.replicas, 4 * 4);
  EXPECT_LE(r.metrics->placement.cost, r.metrics->vanilla.cost);
  // The same options give the same placement (the seed decides).
  EXPECT_EQ(plan(trace, topo, o).placement, r.placement);
}

TEST(Plan, TimeLimitIsAStatusNotText) {
  const Trace trace = follow_trace(2000, 6, 1, 16, 3, 0.5);
  const Topology topo(1, 4);
  PlanOptions o;
  o.method = Method::kBcd;
  o.time_limit = 1e-9;  // every start stops after its first sweep
  o.max_load_ratio = LoadLimit{};
  const PlanResult r = plan(trace, topo, o);
  EXPECT_EQ(r.status, PlanStatus::kTimeLimit);
  EXPECT_STREQ(to_string(r.status), "time limit");
}

TEST(Plan, CountsAndLoadsInputs) {
  const Trace trace = follow_trace(300, 3, 1, 8, 4);
  const Topology topo(1, 4);
  PlanOptions o;
  o.method = Method::kFast;
  const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
  const PlanResult from_counts = plan(graph, topo, o);
  EXPECT_FALSE(from_counts.metrics.has_value());
  EXPECT_NEAR(from_counts.objective, graph_objective(graph, from_counts.placement, topo), 1e-12);
  EXPECT_NEAR(from_counts.vanilla_objective, graph_objective(graph, from_counts.vanilla, topo),
              1e-12);
  // Options that need tokens name themselves by their PlanOptions names.
  o.redundant = 1;
  try {
    plan(graph, topo, o);
    FAIL() << "redundant with counts was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("redundant"), std::string::npos) << e.what();
    EXPECT_NE(std::find(e.options().begin(), e.options().end(), "redundant"), e.options().end());
    EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << e.what();
  }

  ExpertLoads loads;
  loads.layers = 1;
  loads.experts = 4;
  loads.counts = {10, 1, 1, 0};
  PlanOptions lo;
  lo.redundant = 1;
  const PlanResult from_loads = plan(loads, Topology(1, 2), lo);
  ASSERT_EQ(from_loads.load_ratio_per_layer.size(), 1u);
  // Vanilla puts experts 0 and 1 (11 of 12) on GPU 0; the hot expert's replica splits it.
  EXPECT_NEAR(from_loads.vanilla_load_ratio_per_layer[0], 11.0 / 6.0, 1e-12);
  EXPECT_LT(from_loads.load_ratio_per_layer[0], 11.0 / 6.0);
  EXPECT_EQ(from_loads.objective, from_loads.load_ratio_per_layer[0]);
}

TEST(Plan, LibraryErrorsNameOptionsByTheirFieldNames) {
  const Trace trace = follow_trace(100, 2, 1, 64, 5);
  PlanOptions o;
  o.method = Method::kExact;
  try {
    plan(trace, Topology(1, 8), o);
    FAIL() << "exact on 64 experts was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("use method fast"), std::string::npos) << e.what();
    EXPECT_EQ(e.options(), std::vector<std::string>{"method"});
  }
}

TEST(PlanOptionsTable, EveryRowRoundTripsAndRefusesNonsenseNamingItself) {
  const PlanOptions defaults;
  for (const PlanOptionSpec& spec : plan_option_specs()) {
    SCOPED_TRACE(spec.name);
    EXPECT_FALSE(spec.help.empty());
    EXPECT_EQ(option_flag(spec.name).substr(0, 2), "--");
    // A value the table prints is one it reads back (starts' "0" means "by k" and is not a
    // value a user may give).
    if (spec.name != "starts" && spec.name != "min_experts_per_gpu") {
      PlanOptions o;
      spec.set(o, spec.value(defaults));
      EXPECT_EQ(spec.value(o), spec.value(defaults));
    }
    for (const char* bad : {"", "nan", "-1", "1e400", "x", "1.5.", "\xff"}) {
      if (spec.type == OptionType::kText && std::string(bad).empty()) continue;
      PlanOptions o;
      try {
        spec.set(o, bad);
        // Some values are valid for some rows (-1 for none; 1e400 for none).
        continue;
      } catch (const UsageError& e) {
        EXPECT_EQ(e.options(), std::vector<std::string>{spec.name}) << e.what();
        EXPECT_EQ(std::string(e.what()).find('\xff'), std::string::npos) << "raw bytes echoed";
      }
    }
  }
  EXPECT_EQ(option_flag("max_load_ratio"), "--max-load-ratio");
  EXPECT_THROW(plan_option_spec("no_such_option"), UsageError);
  PlanOptions o;
  plan_option_spec("time_limit").set(o, "2.5");
  plan_option_spec("max_load_ratio").set(o, "1.25");
  plan_option_spec("bipart").set(o, "true");
  plan_option_spec("seed").set(o, "18446744073709551615");
  EXPECT_EQ(o.time_limit, 2.5);
  EXPECT_EQ(o.max_load_ratio.kind, LoadLimit::Kind::kRatio);
  EXPECT_TRUE(o.bipart);
  EXPECT_EQ(o.seed, 18446744073709551615ULL);
  const nlohmann::json j = plan_options_json(o);
  EXPECT_EQ(j["time_limit"], 2.5);
  EXPECT_EQ(j["max_load_ratio"], "1.25");
  EXPECT_EQ(j["bipart"], true);
  EXPECT_EQ(j["starts"], 0);
  EXPECT_EQ(j.size(), plan_option_specs().size());
  for (const char* bad : {"nan", "inf", "-1"}) {
    EXPECT_THROW(plan_option_spec("time_limit").set(o, bad), UsageError) << bad;
  }
  EXPECT_THROW(plan_option_spec("starts").set(o, "0"), UsageError);
  EXPECT_THROW(plan_option_spec("threads_of_nothing").set(o, "0"), UsageError);
}

TEST(Plan, DefaultStartsDependOnKAndTheGraphSize) {
  EXPECT_EQ(default_starts(1, 26, 64, 8), kDefaultStarts);         // ESFT on 8 GPUs
  EXPECT_EQ(default_starts(6, 26, 64, 8), kDefaultStartsLarge);    // top-k
  EXPECT_EQ(default_starts(1, 58, 256, 64), kDefaultStartsLarge);  // DeepSeek-V3 on 64 GPUs
  EXPECT_EQ(default_starts(1, 58, 256, 16), kDefaultStarts);       // 6.1e7: under the threshold
}

}  // namespace
}  // namespace exflow
