// The library side of bad numbers and oversized requests: a stray expert id refused before the
// dense counts it implies are built, load sums that overflow int64, options set in code outside
// the options table's ranges, topologies past the supported size, and the token search's time
// limit.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

constexpr std::int64_t kHuge = std::int64_t{1} << 62;

// tokens x layers x k ids cycling over `experts`, with ids[flip] replaced by `stray` if >= 0.
std::vector<std::int32_t> cycling_ids(int tokens, int layers, int k, int experts,
                                      std::int64_t flip = -1, std::int32_t stray = 0) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens) * layers * k);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(i % experts);
  if (flip >= 0) ids[static_cast<std::size_t>(flip)] = stray;
  return ids;
}

TEST(StrayExpertId, OneLargeIdIsRefusedBeforeItsCountsAreBuilt) {
  // [[0, 0], [0, 23556]]: 23 557 experts would need 4.1 GiB of counts for 2 tokens.
  const Trace trace = Trace::from_ids({0, 0, 0, 23556}, 2, 2, 1);
  EXPECT_ERROR(InputError, AffinityGraph::from_trace(trace),
               "expert id 23556 at token 1, layer 1 makes 23557 experts per layer");
  EXPECT_ERROR(InputError, AffinityGraph::from_trace(trace), "4.1 GiB");
  EXPECT_ERROR(InputError, plan(trace, Topology(1, 1)), "expert id 23556");
  // Incremental counts prefixes: the whole trace is checked first, so the message still names
  // the id rather than an expert count the first token does not explain.
  PlanOptions incremental;
  incremental.incremental = 1;
  EXPECT_ERROR(InputError, plan(trace, Topology(1, 1), incremental), "expert id 23556");
}

TEST(StrayExpertId, TheLargestSupportedIdIsRefusedNotOutOfMemory) {
  const Trace trace = Trace::from_ids({0, 0, 0, 65535}, 2, 2, 1);
  EXPECT_ERROR(InputError, AffinityGraph::from_trace(trace, 2), "expert id 65535 at token 1");
}

TEST(StrayExpertId, AFlippedIdFarBeyondTheIdsUsedIsRefusedWithItsColumn) {
  // 200 tokens x 4 layers x top-2 over 64 experts, one id flipped to 5000 (572 MiB of counts).
  const int tokens = 200, layers = 4, k = 2;
  const std::int64_t flip = (150 * layers + 2) * k + 1;  // token 150, layer 2, column 1
  const Trace trace =
      Trace::from_ids(cycling_ids(tokens, layers, k, 64, flip, 5000), tokens, layers, k);
  EXPECT_ERROR(InputError, AffinityGraph::from_trace(trace),
               "expert id 5000 at token 150, layer 2, column 1 makes 5001 experts per layer, but "
               "the trace uses 65 distinct ids");
}

TEST(StrayExpertId, AnExplicitExpertCountTooLargeForTheCountsIsAUsageError) {
  const Trace trace = Trace::from_ids(cycling_ids(200, 4, 2, 64), 200, 4, 2, 20000);
  EXPECT_ERROR(UsageError, AffinityGraph::from_trace(trace), "experts = 20000 (largest id 63)");
}

TEST(StrayExpertId, CountsOfUsedExpertsAreStillBuilt) {
  // An explicit E well above the ids used stays allowed within the budget (here 8 MiB).
  const Trace trace = Trace::from_ids(cycling_ids(50, 3, 2, 64), 50, 3, 2, 700);
  const AffinityGraph graph = AffinityGraph::from_trace(trace);
  EXPECT_EQ(graph.experts(), 700);
  EXPECT_EQ(graph.tokens(), 50);
}

TEST(LoadOverflow, ExpertLoadsWhoseLayerSumPassesInt64AreRefused) {
  // [[2^62]*4 + [0]*4]*2 on 4 GPUs: the GPU totals overflow; 1.0 is reachable.
  ExpertLoads loads;
  loads.layers = 2;
  loads.experts = 8;
  for (int l = 0; l < 2; ++l) {
    for (int e = 0; e < 8; ++e) loads.counts.push_back(e < 4 ? kHuge : 0);
  }
  EXPECT_ERROR(InputError, plan(loads, Topology(1, 4)),
               "expert loads: layer 0: the expert loads sum past the int64 range");
  EXPECT_ERROR(InputError, check_load_totals(loads, "loads.npy"), "loads.npy: layer 0");
  PlanOptions eplb;
  eplb.method = Method::kEplb;
  EXPECT_ERROR(InputError, plan(loads, Topology(1, 4), eplb), "layer 0");
}

TEST(LoadOverflow, NegativeAndMisshapenLoadsAreRefused) {
  ExpertLoads loads;
  loads.layers = 1;
  loads.experts = 4;
  loads.counts = {1, 2, -3, 4};
  EXPECT_ERROR(InputError, plan(loads, Topology(1, 2)), "layer 0 expert 2: load -3 is negative");
  loads.counts = {1, 2, 3};
  EXPECT_ERROR(InputError, plan(loads, Topology(1, 2)), "3 loads for 1 layers x 4 experts");
}

TEST(LoadOverflow, AffinityCountsWhoseSumsPassInt64AreRefused) {
  std::vector<std::int64_t> transitions(16, 0);
  transitions[0] = kHuge;
  transitions[5] = kHuge;
  EXPECT_ERROR(InputError, AffinityGraph(2, 4, 1, transitions, std::vector<std::int64_t>(8, 0)),
               "transition counts of layer pair 0 sum past the int64 range");
  std::vector<std::int64_t> loads(8, 0);
  loads[4] = kHuge;
  loads[7] = kHuge;
  EXPECT_ERROR(InputError, AffinityGraph(2, 4, 1, std::vector<std::int64_t>(16, 0), loads),
               "loads of layer 1 sum past the int64 range");
}

class OptionsInCode : public ::testing::Test {
 protected:
  const Trace trace = Trace::from_ids(cycling_ids(64, 3, 2, 8), 64, 3, 2);
};

TEST_F(OptionsInCode, NanNegativeAndEndlessTimeLimitsAreRefused) {
  PlanOptions o;
  o.token_time_limit = std::nan("");
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o),
               "token_time_limit must be a finite number of seconds >= 0, got 'nan'");
  o = PlanOptions{};
  o.time_limit = -1;
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "time_limit must be");
  o = PlanOptions{};
  o.time_limit = std::numeric_limits<double>::infinity();
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "time_limit must be");
  o = PlanOptions{};
  o.time_limit = 1e308;
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "at most 1e9 seconds");
}

TEST_F(OptionsInCode, IntegersOutsideTheTableAreRefused) {
  PlanOptions o;
  o.redundant = 1 << 29;  // looped in the replica filling
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "redundant must be an integer from 0");
  o = PlanOptions{};
  o.starts = -1;
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "starts must be an integer from 1");
  o = PlanOptions{};
  o.threads = -1;
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "threads must be an integer from 0");
  o = PlanOptions{};
  o.max_load_ratio = LoadLimit{LoadLimit::Kind::kRatio, std::nan("")};
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "max_load_ratio must be");
  o = PlanOptions{};
  o.seq_len = 0;
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "seq_len must be an integer from 1");
}

TEST_F(OptionsInCode, RedundantSlotsBeyondTheCopiesExpertsCanHaveAreRefused) {
  PlanOptions o;
  o.redundant = 1 << 16;  // in the table's range; 2^16 x 32768 GPUs overflows int
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 32768), o), "redundant 65536");
  o.redundant = 7;  // 8 experts on 4 GPUs: 9 slots per GPU, one more than the experts
  EXPECT_ERROR(UsageError, plan(trace, Topology(1, 4), o), "needs more copies than 8 experts");
}

TEST(TopologyRange, GpuCountAndHopCostsAreChecked) {
  EXPECT_ERROR(UsageError, Topology(65536, 65536), "65536 x 65536 GPUs is more than the 65536");
  EXPECT_ERROR(UsageError, Topology(1, 4, 1e308, 2), "hop costs must be finite, from 0 to 1e12");
  EXPECT_ERROR(UsageError, Topology(1, 4, 1, std::nan("")), "inter nan");
}

// plan() on 4 GPUs of one node, with the wall seconds it took in `seconds`.
PlanResult timed_plan(const Trace& trace, const PlanOptions& o, double& seconds) {
  const auto start = std::chrono::steady_clock::now();
  PlanResult r = plan(trace, Topology(1, 4), o);
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

TEST(TokenTimeLimit, TheTokenSearchStopsNearItsLimitOnTheBundledTrace) {
  // Before the limit was checked inside the load repair, this took 10 to 30 s whatever the
  // limit.
  const Trace trace =
      Trace::open(std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy");
  PlanOptions o;
  o.token_time_limit = 0.3;
  o.time_limit = 0.3;
  o.score = false;
  double seconds = 0;
  const PlanResult r = timed_plan(trace, o, seconds);
  EXPECT_LT(seconds, 0.6 + 8.0);
  EXPECT_EQ(r.status, PlanStatus::kTimeLimit);
  EXPECT_EQ(r.layers_over_load_limit, 0);
  validate(r.placement, Topology(1, 4), Balance::kExact, "placement");
}

TEST(TokenTimeLimit, ReplicaSlotsAreFilledWithinTheLimit) {
  const Trace trace =
      Trace::open(std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy");
  PlanOptions o;
  o.token_time_limit = 0.3;
  o.time_limit = 0.3;
  o.redundant = 2;
  o.score = false;
  double seconds = 0;
  const PlanResult r = timed_plan(trace, o, seconds);
  EXPECT_LT(seconds, 0.6 + 8.0);
  EXPECT_EQ(r.placement.replicas().size(), std::size_t{26 * 4 * 2});
  validate(r.placement, Topology(1, 4), Balance::kExact, "placement");
}

TEST(GraphTimeLimit, IncrementalStepsShareOneLimit) {
  // --incremental 1 on 8 222 tokens: every step had the whole limit, and steps went on for
  // thousands of prefixes.
  const Trace trace =
      Trace::open(std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy");
  PlanOptions o;
  o.incremental = 1;
  o.time_limit = 0.3;
  o.token_time_limit = 0.3;
  o.score = false;
  double seconds = 0;
  const PlanResult r = timed_plan(trace, o, seconds);
  EXPECT_LT(seconds, 0.6 + 8.0);
  EXPECT_EQ(r.status, PlanStatus::kTimeLimit);
  EXPECT_LT(r.tokens_used, trace.tokens());
  ASSERT_FALSE(r.steps.empty());
  EXPECT_NE(r.steps.back().find("time limit: stopped at"), std::string::npos) << r.steps.back();
}

}  // namespace
}  // namespace exflow
