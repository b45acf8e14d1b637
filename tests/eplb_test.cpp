// Method eplb: rebalance_experts against upstream EPLB's outputs (tests/data/eplb/cases.json),
// the policy choice, the placements it gives, and the method through exflow::plan, the CLI and
// its option checks.
#include "exflow/eplb.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;

template <class T>
std::vector<T> flat(const json& j) {
  std::vector<T> out;
  if (!j.is_array()) {
    out.push_back(j.get<T>());
    return out;
  }
  for (const json& x : j) {
    const std::vector<T> part = flat<T>(x);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

TEST(Eplb, MatchesUpstreamOnGoldenCases) {
  const json cases =
      json::parse(test::read_bytes(std::string(EXFLOW_TEST_DATA_DIR) + "/eplb/cases.json"));
  ASSERT_GE(cases["cases"].size(), 10u);
  bool global = false, hierarchical = false;
  for (const json& c : cases["cases"]) {
    const int L = c["layers"], E = c["experts"], slots = c["num_replicas"];
    const int groups = c["num_groups"], nodes = c["num_nodes"], gpus = c["num_gpus"];
    (eplb_is_hierarchical(groups, nodes) ? hierarchical : global) = true;
    const EplbMaps m =
        rebalance_experts(flat<std::int64_t>(c["weight"]), L, E, slots, groups, nodes, gpus);
    const std::string shape = "E=" + std::to_string(E) + " slots=" + std::to_string(slots) +
                              " groups=" + std::to_string(groups) +
                              " nodes=" + std::to_string(nodes);
    EXPECT_EQ(m.phy2log, flat<int>(c["phy2log"])) << shape;
    EXPECT_EQ(m.log2phy, flat<int>(c["log2phy"])) << shape;
    EXPECT_EQ(m.logcnt, flat<int>(c["logcnt"])) << shape;
    EXPECT_EQ(m.max_replicas, static_cast<int>(c["log2phy"][0][0].size())) << shape;
    // Every answer is a valid placement: (E + R) / G slots on every GPU.
    const Placement p = placement_from_eplb_maps(m, gpus);
    EXPECT_NO_THROW(validate(p, Topology(nodes, gpus / nodes), Balance::kExact)) << shape;
  }
  EXPECT_TRUE(global);
  EXPECT_TRUE(hierarchical);
}

TEST(Eplb, ReadmeExample) {
  // github.com/deepseek-ai/EPLB README: 12 experts, 16 slots, 4 groups, 2 nodes, 8 GPUs.
  const std::vector<std::int64_t> weight = {90, 132, 40,  61, 104, 165, 39,  4,   73,  56, 183, 86,
                                            20, 107, 104, 64, 19,  197, 187, 157, 172, 86, 16,  27};
  const EplbMaps m = rebalance_experts(weight, 2, 12, 16, 4, 2, 8);
  const std::vector<int> expected = {5, 6,  5, 7, 8, 4,  3, 4, 10, 9, 10, 2, 0, 1, 11, 1,
                                     7, 10, 6, 8, 6, 11, 8, 9, 2,  4, 5,  1, 5, 0, 3,  1};
  EXPECT_EQ(m.phy2log, expected);
  EXPECT_EQ(m.slots, 16);
  EXPECT_EQ(m.max_replicas, 2);
}

TEST(Eplb, PolicyFollowsGroupsAndNodes) {
  EXPECT_TRUE(eplb_is_hierarchical(8, 8));
  EXPECT_TRUE(eplb_is_hierarchical(4, 2));
  EXPECT_TRUE(eplb_is_hierarchical(1, 1));
  EXPECT_FALSE(eplb_is_hierarchical(8, 9));
  EXPECT_FALSE(eplb_is_hierarchical(1, 2));
  // Hierarchical: each group of consecutive experts stays on one node.
  std::mt19937 rng(3);
  std::vector<std::int64_t> w(64);
  for (auto& v : w) v = static_cast<std::int64_t>(rng() % 1000);
  const EplbMaps h = rebalance_experts(w, 1, 64, 80, 4, 2, 8);
  for (int s = 0; s < 80; ++s) {
    const int node = s / 40;
    const int group = h.phy2log[static_cast<std::size_t>(s)] / 16;
    for (int t = 0; t < 80; ++t) {
      if (h.phy2log[static_cast<std::size_t>(t)] / 16 == group) {
        EXPECT_EQ(t / 40, node);
      }
    }
  }
  // Groups that do not divide over the nodes: the global policy, as with one group.
  EXPECT_EQ(rebalance_experts(w, 1, 64, 84, 8, 3, 6).phy2log,
            rebalance_experts(w, 1, 64, 84, 1, 1, 6).phy2log);
  // No redundant slots: one copy of every expert.
  const EplbMaps none = rebalance_experts(w, 1, 64, 64, 1, 1, 8);
  EXPECT_EQ(none.max_replicas, 1);
  EXPECT_TRUE(std::all_of(none.logcnt.begin(), none.logcnt.end(), [](int c) { return c == 1; }));
}

TEST(Eplb, RefusesShapesUpstreamRefuses) {
  const std::vector<std::int64_t> w(12, 1);
  EXPECT_THROW(rebalance_experts(w, 1, 12, 18, 4, 2, 8), UsageError);  // slots % GPUs
  EXPECT_THROW(rebalance_experts(w, 1, 12, 8, 1, 1, 8), UsageError);   // fewer slots than E
  EXPECT_THROW(rebalance_experts(w, 1, 12, 16, 8, 2, 8), UsageError);  // groups do not divide E
  EXPECT_THROW(rebalance_experts(w, 1, 12, 16, 4, 3, 8), UsageError);  // GPUs % nodes
  EXPECT_THROW(rebalance_experts(w, 2, 12, 16, 4, 2, 8), UsageError);  // weight size
  EXPECT_THROW(rebalance_experts(std::vector<double>(12, -1.0), 1, 12, 16, 4, 2, 8), UsageError);
}

// A top-2 trace [tokens, layers, 2] with uneven expert loads.
std::vector<std::int32_t> trace_ids(std::int64_t tokens, int layers, int experts) {
  std::mt19937 rng(5);
  std::vector<std::int32_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      const int a = static_cast<int>(rng() % static_cast<unsigned>(experts)) / (1 + l % 2);
      ids.push_back(a);
      ids.push_back((a + 1 + static_cast<int>(rng() % 5)) % experts);
    }
  }
  return ids;
}

std::vector<std::int64_t> loads_of(const std::vector<std::int32_t>& ids, int layers, int experts) {
  std::vector<std::int64_t> loads(static_cast<std::size_t>(layers) * experts, 0);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto layer = static_cast<std::size_t>(i / 2 % static_cast<std::size_t>(layers));
    ++loads[layer * static_cast<std::size_t>(experts) + static_cast<std::size_t>(ids[i])];
  }
  return loads;
}

TEST(Eplb, PlanRunsEplbOnTheTraceLoads) {
  const int L = 3, E = 16;
  const std::vector<std::int32_t> ids = trace_ids(400, L, E);
  const Trace trace = Trace::from_ids(ids, 400, L, 2, E);
  PlanOptions o;
  o.method = Method::kEplb;
  o.redundant_total = 8;
  o.expert_groups = 4;
  const Topology topology(2, 4);
  const PlanResult r = plan(trace, topology, o);
  EXPECT_EQ(r.method, Method::kEplb);
  ASSERT_TRUE(r.metrics.has_value());
  const EplbMaps m = rebalance_experts(loads_of(ids, L, E), L, E, E + 8, 4, 2, 8);
  EXPECT_EQ(eplb_maps(r.placement).phy2log, eplb_maps(placement_from_eplb_maps(m, 8)).phy2log);
  EXPECT_NO_THROW(validate(r.placement, topology, Balance::kExact));

  ExpertLoads loads{L, E, loads_of(ids, L, E)};
  const PlanResult from_loads = plan(loads, topology, o);
  EXPECT_EQ(from_loads.method, Method::kEplb);
  EXPECT_EQ(eplb_maps(from_loads.placement).phy2log, eplb_maps(r.placement).phy2log);

  PlanOptions bad = o;
  bad.expert_groups = 5;
  EXPECT_THROW(plan(trace, topology, bad), UsageError);
  bad = o;
  bad.bipart = true;
  EXPECT_THROW(plan(trace, topology, bad), UsageError);
  bad = o;
  bad.method = Method::kFast;
  EXPECT_THROW(plan(trace, topology, bad), UsageError);  // expert_groups is eplb's alone
}

test::CommandRun exflow_cli(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_CLI, args);
}

// phy2log [L][slots] with each GPU's S slots sorted: the placement a slot order stands for.
std::vector<int> per_gpu_sorted(std::vector<int> phy2log, int slots_per_gpu) {
  for (std::size_t i = 0; i < phy2log.size(); i += static_cast<std::size_t>(slots_per_gpu)) {
    std::sort(phy2log.begin() + static_cast<std::ptrdiff_t>(i),
              phy2log.begin() + static_cast<std::ptrdiff_t>(i) + slots_per_gpu);
  }
  return phy2log;
}

TEST(EplbCli, SolveWritesEplbsPlacement) {
  TempDir dir;
  const int L = 3, E = 16, R = 8;
  const std::vector<std::int32_t> ids = trace_ids(300, L, E);
  const std::string trace = dir.file("trace.npy");
  test::write_npy(trace, std::vector<std::int64_t>(ids.begin(), ids.end()), {300, L, 2});
  const std::string maps = dir.file("eplb.json");
  const test::CommandRun r =
      exflow_cli({"solve", trace, "--gpus-per-node", "4", "--nodes", "2", "--method", "eplb",
                  "--redundant-total", std::to_string(R), "--expert-groups", "4", "--eplb", maps,
                  "--json", "--quiet", "--out-dir", dir.file("out")});
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["method"], "eplb");
  EXPECT_GE(j["solve_seconds"].get<double>(), 0.0);
  const EplbMaps m = rebalance_experts(loads_of(ids, L, E), L, E, E + R, 4, 2, 8);
  const json written = json::parse(test::read_bytes(maps));
  EXPECT_EQ(per_gpu_sorted(flat<int>(written["phy2log"]), (E + R) / 8),
            per_gpu_sorted(m.phy2log, (E + R) / 8));
  EXPECT_EQ(flat<int>(written["logcnt"]), m.logcnt);

  // The same loads as a file: the same placement.
  const std::vector<std::int64_t> counts = loads_of(ids, L, E);
  json rows = json::array();
  for (int l = 0; l < L; ++l) {
    rows.push_back(std::vector<std::int64_t>(counts.begin() + l * E, counts.begin() + (l + 1) * E));
  }
  const std::string loads = dir.file("loads.json");
  test::write_bytes(loads, json{{"logical_count", rows}}.dump());
  const std::string maps2 = dir.file("eplb2.json");
  const test::CommandRun r2 =
      exflow_cli({"solve", "--expert-loads", loads, "--gpus-per-node", "4", "--nodes", "2",
                  "--method", "eplb", "--redundant-total", std::to_string(R), "--expert-groups",
                  "4", "--eplb", maps2, "--json", "--quiet", "--out-dir", dir.file("out2")});
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_EQ(json::parse(r2.out)["method"], "eplb");
  EXPECT_EQ(json::parse(test::read_bytes(maps2))["phy2log"], written["phy2log"]);
}

TEST(EplbCli, BadOptionsAreOneLineUsageErrors) {
  TempDir dir;
  const std::vector<std::int32_t> ids = trace_ids(100, 2, 16);
  const std::string trace = dir.file("trace.npy");
  test::write_npy(trace, std::vector<std::int64_t>(ids.begin(), ids.end()), {100, 2, 2});
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--expert-groups", "5"},
        std::vector<std::string>{"--max-load-ratio", "1.5"},
        std::vector<std::string>{"--min-experts-per-gpu", "1"}}) {
    std::vector<std::string> args = {"solve",   trace,       "--gpus-per-node",
                                     "4",       "--method",  "eplb",
                                     "--quiet", "--out-dir", dir.file("out")};
    args.insert(args.end(), extra.begin(), extra.end());
    const test::CommandRun r = exflow_cli(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(extra[0].substr(2, 3)), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace exflow
