// End-to-end tests of the exflow CLI: golden objectives on checked-in inputs, JSON keys,
// written files, exit codes and one-line errors for bad input and bad usage.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "io/npy.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;

const std::string kGolden = std::string(EXFLOW_TEST_DATA_DIR) + "/golden/";

using CliRun = test::CommandRun;

CliRun exflow(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_CLI, args);
}

// A failed run says one line on stderr, prefixed "exflow: error: ", and nothing on stdout.
using test::expect_one_line_error;

const char* const kMetricKeys[] = {"cost",  "cintra",         "cinter",         "intra",
                                   "inter", "local_fraction", "load_ratio_max", "load_ratio_mean"};

TEST(CliGolden, EvalScoresAPlacementAgainstVanilla) {
  // mini-2x2.npy on 2 nodes x 2 GPUs (see tests/data/golden/make_golden.py).
  // placement-affine.csv: token 0 never moves, token 1 moves once within node 0.
  // Vanilla (expert e on GPU e): intra 3/2, inter 2/2 per token.
  CliRun r = exflow({"eval", kGolden + "mini-2x2.npy", kGolden + "placement-affine.csv",
                     "--gpus-per-node", "2", "--nodes", "2", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  for (const char* key : kMetricKeys) {
    EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_TRUE(j["vanilla"].contains(key)) << key;
  }
  EXPECT_DOUBLE_EQ(j["cost"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["intra"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["inter"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(j["cintra"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["local_fraction"].get<double>(), 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(j["load_ratio_max"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(j["load_ratio_mean"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(j["vanilla"]["cost"].get<double>(), 3.5);
  EXPECT_DOUBLE_EQ(j["vanilla"]["intra"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(j["vanilla"]["inter"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["vanilla"]["cintra"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(j["vanilla"]["cinter"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["vanilla"]["local_fraction"].get<double>(), 1.0 / 6.0);
  EXPECT_EQ(j["trace"]["tokens"], 2);
  EXPECT_EQ(j["trace"]["experts"], 4);
  EXPECT_EQ(j["options"]["gpus_per_node"], 2);
  EXPECT_EQ(j["options"]["nodes"], 2);
}

TEST(CliGolden, EvalTextReportShowsBothColumns) {
  CliRun r = exflow({"eval", kGolden + "mini-2x2.npy", kGolden + "placement-affine.csv",
                     "--gpus-per-node", "2", "--nodes", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("vanilla"), std::string::npos);
  EXPECT_NE(r.out.find("0.5000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3.5000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-85.7%"), std::string::npos) << r.out;
}

TEST(CliGolden, SolveVanillaWritesTheSeedNamedCsv) {
  TempDir dir;
  CliRun r = exflow({"solve", kGolden + "mini-2x2.npy", "--gpus-per-node", "2", "--nodes", "2",
                     "--method", "vanilla", "--out-dir", dir.file("sol"), "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  for (const char* key : kMetricKeys) EXPECT_TRUE(j.contains(key)) << key;
  for (const char* key : {"method", "seconds", "placement", "vanilla"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["method"], "vanilla");
  EXPECT_DOUBLE_EQ(j["cost"].get<double>(), 3.5);
  const std::string expected =
      dir.file("sol") + "/solution_intra2_inter2_cost3.5_cintra1.5_cinter0.5.csv";
  EXPECT_EQ(j["placement"], expected);
  EXPECT_EQ(test::read_bytes(expected),
            "Expert,Node\n0,0\n1,1\n2,2\n3,3\n4,0\n5,1\n6,2\n7,3\n8,0\n9,1\n10,2\n11,3\n"
            "12,0\n13,1\n14,2\n15,3\n");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("sol"))) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1) << "no temporary file may remain";
  // The written file scores the same when read back.
  CliRun back = exflow({"eval", kGolden + "mini-2x2.npy", expected, "--gpus-per-node", "2",
                        "--nodes", "2", "--json"});
  ASSERT_EQ(back.code, 0) << back.err;
  EXPECT_DOUBLE_EQ(json::parse(back.out)["cost"].get<double>(), 3.5);
}

TEST(CliGolden, ProfileReportsShapeAffinityAndLoad) {
  CliRun r = exflow({"profile", kGolden + "mini-2x2.npy", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["tokens"], 2);
  EXPECT_EQ(j["layers"], 4);
  EXPECT_EQ(j["experts"], 4);
  EXPECT_EQ(j["k"], 1);
  EXPECT_DOUBLE_EQ(j["uniform_share"].get<double>(), 0.25);
  ASSERT_EQ(j["layer_pairs"].size(), 3u);
  // Each source expert has a single successor in this tiny trace.
  EXPECT_DOUBLE_EQ(j["layer_pairs"][1]["top_successor_share"].get<double>(), 1.0);
  ASSERT_EQ(j["expert_load"].size(), 4u);
  EXPECT_DOUBLE_EQ(j["expert_load"][0]["max_over_mean"].get<double>(), 4.0);
}

TEST(CliGolden, ProfileOfTheBundledExample) {
  CliRun r = exflow({"profile", std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy",
                     "--json", "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["tokens"], 8222);
  EXPECT_EQ(j["layers"], 26);
  EXPECT_EQ(j["experts"], 64);
  EXPECT_EQ(j["k"], 6);
  EXPECT_GT(j["mean_top_successor_share"].get<double>(), 2.0 * j["uniform_share"].get<double>());
}

TEST(CliGolden, ThreadCountDoesNotChangeResults) {
  const std::string trace = std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy";
  TempDir dir;
  CliRun one = exflow({"solve", trace, "--gpus-per-node", "4", "--nodes", "2", "--threads", "1",
                       "--out-dir", dir.path(), "--json"});
  CliRun two = exflow({"solve", trace, "--gpus-per-node", "4", "--nodes", "2", "--threads", "2",
                       "--out-dir", dir.path(), "--json"});
  ASSERT_EQ(one.code, 0) << one.err;
  ASSERT_EQ(two.code, 0) << two.err;
  json a = json::parse(one.out), b = json::parse(two.out);
  for (const char* key : kMetricKeys) EXPECT_EQ(a[key], b[key]) << key;
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit 1, one line naming the file and the defect.

TEST(CliErrors, NotAnNpyFile) {
  expect_one_line_error(exflow({"profile", kGolden + "placement-affine.csv"}), 1,
                        "placement-affine.csv: not an npy file");
}

TEST(CliErrors, FloatTrace) {
  TempDir dir;
  std::string bytes = io::encode_npy({0, 1, 2, 3}, {2, 2}, "<i4");
  bytes.replace(bytes.find("<i4"), 3, "<f4");
  test::write_bytes(dir.file("float.npy"), bytes);
  expect_one_line_error(exflow({"profile", dir.file("float.npy")}), 1, "floating-point");
}

TEST(CliErrors, TruncatedTrace) {
  TempDir dir;
  std::string bytes = io::encode_npy({0, 1, 2, 3, 0, 1}, {3, 2}, "<i2");
  bytes.resize(bytes.size() - 3);
  test::write_bytes(dir.file("short.npy"), bytes);
  expect_one_line_error(exflow({"eval", dir.file("short.npy"), kGolden + "placement-affine.csv",
                                "--gpus-per-node", "2"}),
                        1, "truncated");
}

TEST(CliErrors, ExpertsSmallerThanTheLargestId) {
  expect_one_line_error(exflow({"profile", kGolden + "mini-2x2.npy", "--experts", "3"}), 1,
                        "expert id 3 at token 0, layer 3 is out of range for 3 experts");
}

TEST(CliErrors, NegativeExpertId) {
  TempDir dir;
  test::write_npy(dir.file("neg.npy"), {0, 1, 2, -1}, {2, 2}, "<i8");
  expect_one_line_error(exflow({"profile", dir.file("neg.npy")}), 1,
                        "expert id -1 at token 1, layer 1 is negative");
}

TEST(CliErrors, PlacementForAnotherShape) {
  TempDir dir;
  test::write_bytes(dir.file("p.csv"), "Expert,Node\n0,0\n1,1\n");
  expect_one_line_error(exflow({"eval", kGolden + "mini-2x2.npy", dir.file("p.csv"),
                                "--gpus-per-node", "2", "--nodes", "2"}),
                        1, "is missing");
}

TEST(CliErrors, UnbalancedPlacementNamesLayerAndGpu) {
  TempDir dir;
  std::string csv = "Expert,Node\n";
  for (int i = 0; i < 16; ++i)
    csv += std::to_string(i) + "," + std::to_string(i == 5 ? 0 : i % 4) + "\n";
  test::write_bytes(dir.file("p.csv"), csv);
  CliRun r = exflow({"eval", kGolden + "mini-2x2.npy", dir.file("p.csv"), "--gpus-per-node", "2",
                     "--nodes", "2"});
  expect_one_line_error(r, 1, "layer 1 has 2 experts on GPU 0");
  CliRun relaxed = exflow({"eval", kGolden + "mini-2x2.npy", dir.file("p.csv"), "--gpus-per-node",
                           "2", "--nodes", "2", "--unbalanced"});
  EXPECT_EQ(relaxed.code, 0) << relaxed.err;
}

// ---------------------------------------------------------------------------------------------
// Bad usage: exit 2.

TEST(CliUsage, ExpertsNotDivisibleByGpus) {
  expect_one_line_error(exflow({"solve", kGolden + "mini-2x2.npy", "--gpus-per-node", "3"}), 2,
                        "divisible");
}

TEST(CliUsage, UnknownOptionMissingArgumentAndNoCommand) {
  EXPECT_EQ(exflow({"profile", kGolden + "mini-2x2.npy", "--bogus"}).code, 2);
  EXPECT_EQ(exflow({"eval", kGolden + "mini-2x2.npy"}).code, 2);
  EXPECT_EQ(exflow({"solve", kGolden + "mini-2x2.npy"}).code, 2);  // --gpus-per-node required
  EXPECT_EQ(
      exflow({"solve", kGolden + "mini-2x2.npy", "--gpus-per-node", "2", "--method", "x"}).code, 2);
  EXPECT_EQ(exflow({}).code, 2);
  expect_one_line_error(exflow({"profile", "/nonexistent.npy"}), 2, "/nonexistent.npy");
}

TEST(CliUsage, HelpForEveryCommand) {
  for (const char* cmd : {"profile", "eval", "solve"}) {
    CliRun r = exflow({cmd, "--help"});
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << cmd;
    EXPECT_NE(r.out.find("--json"), std::string::npos) << cmd;
  }
}

TEST(CliDocs, CliReferenceIsGeneratedFromTheOptionTables) {
  CliRun r = exflow({"help-markdown"});
  ASSERT_EQ(r.code, 0);
  EXPECT_EQ(r.out, test::read_bytes(std::string(EXFLOW_SOURCE_DIR) + "/docs/cli.md"))
      << "docs/cli.md is stale: regenerate it with `build/bin/exflow help-markdown > docs/cli.md`";
}

}  // namespace
}  // namespace exflow

// ---------------------------------------------------------------------------------------------
// Solvers through the CLI.

namespace exflow {
namespace {

json solve_json(const std::vector<std::string>& extra, const TempDir& dir) {
  std::vector<std::string> args = {"solve",           kGolden + "mini-2x2.npy",
                                   "--gpus-per-node", "2",
                                   "--nodes",         "2",
                                   "--out-dir",       dir.path(),
                                   "--json",          "--quiet"};
  args.insert(args.end(), extra.begin(), extra.end());
  CliRun r = exflow(args);
  EXPECT_EQ(r.code, 0) << r.err;
  return r.code == 0 ? json::parse(r.out) : json();
}

TEST(CliSolve, ExactFindsTheGoldenOptimumAndProvesIt) {
  // mini-2x2: the affine placement (cost 0.5) is optimal: token 1 must move once because its
  // layers 0 and 1 both use expert 0, which token 0 also uses at layer 0 but not at layer 1
  // (one GPU per expert per layer, so the two tokens share GPU 0 at layer 0 and cannot both
  // stay with their layer-1 experts).
  TempDir dir;
  json j = solve_json({"--method", "exact"}, dir);
  EXPECT_EQ(j["method"], "exact");
  EXPECT_EQ(j["optimal"], true);
  EXPECT_DOUBLE_EQ(j["cost"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["lower_bound"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["gap"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(j["vanilla"]["cost"].get<double>(), 3.5);
  EXPECT_TRUE(std::filesystem::exists(j["placement"].get<std::string>()));
}

TEST(CliSolve, EveryMethodBeatsOrTiesVanillaAndAgreesWithExactHere) {
  TempDir dir;
  for (const char* method : {"auto", "ilp", "fast", "bcd"}) {
    json j = solve_json({"--method", method, "--time-limit", "20"}, dir);
    EXPECT_DOUBLE_EQ(j["cost"].get<double>(), 0.5) << method;
    EXPECT_LE(j["lower_bound"].get<double>(), j["cost"].get<double>()) << method;
  }
  EXPECT_EQ(solve_json({"--method", "ilp"}, dir)["optimal"], true);
  EXPECT_EQ(solve_json({}, dir)["method"], "exact");  // auto picks exact here
}

TEST(CliSolve, IncrementalAndBipartReportTheirSteps) {
  TempDir dir;
  json inc = solve_json({"--incremental", "1"}, dir);
  EXPECT_GE(inc["steps"].size(), 1u);
  EXPECT_LE(inc["tokens_used"].get<int>(), 2);
  json bip = solve_json({"--bipart"}, dir);
  EXPECT_EQ(bip["bipart"], true);
  EXPECT_EQ(bip["steps"].size(), 3u);  // nodes, then the GPUs of each node
  EXPECT_LE(bip["cost"].get<double>(), 3.5);
}

TEST(CliSolve, RelaxedBalanceIsAccepted) {
  TempDir dir;
  CliRun r = exflow({"solve", std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy",
                     "--topk", "1", "--gpus-per-node", "8", "--min-experts-per-gpu", "6",
                     "--method", "fast", "--starts", "1", "--out-dir", dir.path(), "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  CliRun back = exflow({"eval", std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy",
                        j["placement"].get<std::string>(), "--topk", "1", "--gpus-per-node", "8",
                        "--unbalanced", "--json"});
  ASSERT_EQ(back.code, 0) << back.err;
  EXPECT_DOUBLE_EQ(json::parse(back.out)["cost"].get<double>(), j["cost"].get<double>());
}

TEST(CliSolve, RefusalsAndBadOptionsExitTwoWithOneLine) {
  const std::string esft = std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy";
  expect_one_line_error(exflow({"solve", esft, "--gpus-per-node", "8", "--method", "exact"}), 2,
                        "use --method fast");
  expect_one_line_error(
      exflow({"solve", esft, "--gpus-per-node", "8", "--min-experts-per-gpu", "9"}), 2,
      "needs 72 experts per layer");
  expect_one_line_error(exflow({"solve", esft, "--gpus-per-node", "8", "--nodes", "3"}), 2,
                        "divisible");
  expect_one_line_error(exflow({"solve", esft, "--gpus-per-node", "6", "--experts", "72",
                                "--bipart", "--min-experts-per-gpu", "6"}),
                        2, "does not take --min-experts-per-gpu");
  EXPECT_EQ(exflow({"solve", esft, "--gpus-per-node", "8", "--starts", "0"}).code, 2);
  EXPECT_EQ(exflow({"solve", esft, "--gpus-per-node", "8", "--time-limit", "-1"}).code, 2);
}

}  // namespace
}  // namespace exflow

namespace exflow {
namespace {

TEST(CliSolve, IncrementalStopsWhenSteadyOnARealTrace) {
  TempDir dir;
  CliRun r = exflow({"solve", std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy",
                     "--topk", "1", "--gpus-per-node", "4", "--method", "fast", "--starts", "2",
                     "--incremental", "2000", "--out-dir", dir.path(), "--json", "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  const auto used = j["tokens_used"].get<std::int64_t>();
  EXPECT_GE(used, 2000);
  EXPECT_LE(used, 8222);
  EXPECT_EQ(static_cast<std::int64_t>(j["steps"].size()), (used + 1999) / 2000);
  const std::string last = j["steps"].back().get<std::string>();
  EXPECT_TRUE(used == 8222 || last.find("(steady)") != std::string::npos) << last;
  // The placement is scored on the whole trace, whatever prefix it was profiled on.
  EXPECT_EQ(j["trace"]["tokens"], 8222);
  EXPECT_LT(j["cost"].get<double>(), j["vanilla"]["cost"].get<double>());
}

}  // namespace
}  // namespace exflow

// ---------------------------------------------------------------------------------------------
// Top-k traces, load limits, redundant experts, serving formats and the trace-free inputs.
// Fixtures are written at run time.

namespace exflow {
namespace {

// ids [tokens, layers, k] (C order) with distinct experts per token and layer; experts 0 and 1
// of every layer are `weight` times as likely as the rest, and column 0 follows the previous
// layer's column 0 to expert (e + 1) % E with probability 0.6. Only mt19937's raw output is
// used, which every standard library produces alike.
std::vector<std::int64_t> topk_ids(std::int64_t tokens, int layers, int k, int experts,
                                   unsigned seed, int weight) {
  std::mt19937 rng(seed);
  const unsigned total = static_cast<unsigned>(experts + 2 * (weight - 1));
  auto pick = [&] {
    const int x = static_cast<int>(rng() % total);
    return x < 2 * weight ? x / weight : x - 2 * weight + 2;
  };
  std::vector<std::int64_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    int prev = -1;
    for (int l = 0; l < layers; ++l) {
      std::set<int> chosen;
      std::vector<int> order;
      if (prev >= 0 && rng() % 10 < 6) {
        chosen.insert((prev + 1) % experts);
        order.push_back((prev + 1) % experts);
      }
      while (static_cast<int>(order.size()) < k) {
        const int e = pick();
        if (chosen.insert(e).second) order.push_back(e);
      }
      ids.insert(ids.end(), order.begin(), order.end());
      prev = order[0];
    }
  }
  return ids;
}

constexpr int kTopkTokens = 400, kTopkLayers = 3, kTopkK = 2, kTopkExperts = 8;

// A top-2 trace [400, 3, 2] over 8 experts, experts 0 and 1 three times as hot: on 4 GPUs
// vanilla serves 1.6 to 1.9x the mean on its busiest GPU, and so does the placement solved
// without a load limit.
std::string write_topk_trace(const TempDir& dir, const std::string& name = "topk.npy") {
  const std::string path = dir.file(name);
  test::write_npy(path, topk_ids(kTopkTokens, kTopkLayers, kTopkK, kTopkExperts, 5, 3),
                  {kTopkTokens, kTopkLayers, kTopkK}, "<i2");
  return path;
}

Trace read_trace(const std::string& path) {
  return Trace::open(path);
}

int csv_rows(const std::string& path) {
  const std::string text = test::read_bytes(path);
  return static_cast<int>(std::count(text.begin(), text.end(), '\n')) - 1;  // minus the header
}

json run_json(const std::vector<std::string>& args) {
  CliRun r = exflow(args);
  EXPECT_EQ(r.code, 0) << r.err;
  return r.code == 0 ? json::parse(r.out) : json();
}

TEST(CliTopK, LoadRatioIsHonouredAndReported) {
  TempDir dir;
  const std::string trace = write_topk_trace(dir);
  json j = run_json({"solve", trace, "--gpus-per-node", "4", "--max-load-ratio", "1.5", "--json",
                     "--quiet", "--out-dir", dir.file("out")});
  ASSERT_TRUE(j.is_object());
  EXPECT_GT(j["vanilla"]["load_ratio_max"].get<double>(), 1.5);
  json free = run_json({"solve", trace, "--gpus-per-node", "4", "--max-load-ratio", "none",
                        "--json", "--quiet", "--out-dir", dir.file("free")});
  EXPECT_GT(free["load_ratio_max"].get<double>(), 1.5) << "the limit does not bind";
  EXPECT_LE(j["load_ratio_max"].get<double>(), 1.5 + 1e-12);
  for (const auto& ratio : j["per_layer"]["load_ratio"])
    EXPECT_LE(ratio.get<double>(), 1.5 + 1e-12);
  EXPECT_EQ(j["max_load_ratio"], "1.5");
  EXPECT_EQ(j["trace"]["k"], kTopkK);
  ASSERT_TRUE(j["baseline"].is_object());
  ASSERT_TRUE(j["vanilla"]["baseline"].is_object());
  EXPECT_TRUE(j["baseline"]["cost"].is_number());
  EXPECT_TRUE(j["vanilla"]["baseline"]["cost"].is_number());
  EXPECT_EQ(j["replicas"], 0);
  // The top-k coherent bound (src/solve/bound_topk.cpp), below the cost it bounds.
  ASSERT_TRUE(j["lower_bound"].is_number());
  EXPECT_GT(j["lower_bound"].get<double>(), 0.0);
  EXPECT_LE(j["lower_bound"].get<double>(), j["cost"].get<double>());
  // The token search scored the whole trace: its objective is the evaluator's cost.
  EXPECT_NEAR(j["objective"].get<double>(), j["cost"].get<double>(), 1e-9);
  EXPECT_TRUE(std::filesystem::exists(j["placement"].get<std::string>()));
  EXPECT_EQ(csv_rows(j["placement"].get<std::string>()), kTopkLayers * kTopkExperts);
}

TEST(CliTopK, RedundantExpertsRoundTripThroughEveryFormat) {
  TempDir dir;
  const std::string trace = write_topk_trace(dir);
  const std::string sglang = dir.file("S.json"), eplb = dir.file("P.json");
  const std::string ascend = dir.file("A.json");
  json j = run_json({"solve", trace, "--gpus-per-node", "4", "--redundant", "1", "--sglang", sglang,
                     "--eplb", eplb, "--vllm-ascend", ascend, "--json", "--quiet", "--out-dir",
                     dir.file("out")});
  ASSERT_TRUE(j.is_object());
  const std::string csv = j["placement"].get<std::string>();
  EXPECT_EQ(j["replicas"], kTopkLayers * 4);
  EXPECT_EQ(csv_rows(csv), kTopkLayers * kTopkExperts + kTopkLayers * 4);
  ASSERT_TRUE(std::filesystem::exists(sglang));
  ASSERT_TRUE(std::filesystem::exists(eplb));
  // 4 GPUs x (8 / 4 + 1) physical slots per layer in both serving formats.
  const json s = json::parse(test::read_bytes(sglang));
  const json p = json::parse(test::read_bytes(eplb));
  ASSERT_EQ(s["physical_to_logical_map"].size(), static_cast<std::size_t>(kTopkLayers));
  ASSERT_EQ(p["phy2log"].size(), static_cast<std::size_t>(kTopkLayers));
  const json a = json::parse(test::read_bytes(ascend));
  ASSERT_EQ(a["moe_layer_count"], kTopkLayers);
  for (int l = 0; l < kTopkLayers; ++l) {
    EXPECT_EQ(s["physical_to_logical_map"][l].size(), 12u);
    EXPECT_EQ(p["phy2log"][l], s["physical_to_logical_map"][l]);
    json slots = json::array();
    for (const json& device : a["layer_list"][l]["device_list"]) {
      for (const json& e : device["device_expert"]) slots.push_back(e);
    }
    EXPECT_EQ(slots, s["physical_to_logical_map"][l]);
  }
  const double cost = j["cost"].get<double>();
  EXPECT_NEAR(j["objective"].get<double>(), cost, 1e-9);
  for (const std::string& placement : {csv, sglang, eplb, ascend}) {
    json e = run_json({"eval", trace, placement, "--gpus-per-node", "4", "--json", "--quiet"});
    ASSERT_TRUE(e.is_object()) << placement;
    EXPECT_DOUBLE_EQ(e["cost"].get<double>(), cost) << placement;
    EXPECT_EQ(e["replicas"], kTopkLayers * 4) << placement;
    EXPECT_DOUBLE_EQ(e["load_ratio_max"].get<double>(), j["load_ratio_max"].get<double>())
        << placement;
  }
}

TEST(CliTopK, BadAndInfeasibleLoadRatiosExitTwo) {
  TempDir dir;
  const std::string trace = write_topk_trace(dir);
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--max-load-ratio", "0.5",
                                "--quiet", "--out-dir", dir.file("out")}),
                        2, "--max-load-ratio");
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--max-load-ratio", "x",
                                "--quiet", "--out-dir", dir.file("out")}),
                        2, "--max-load-ratio");
  // Top-1 on 4 GPUs, experts 0 and 1 each a third of layer 0's tokens: either alone is more
  // than a GPU's mean share (1/4), so no placement reaches ratio 1.
  test::write_npy(dir.file("hot.npy"), topk_ids(300, 2, 1, 8, 9, 6), {300, 2}, "<i4");
  expect_one_line_error(
      exflow({"solve", dir.file("hot.npy"), "--gpus-per-node", "4", "--max-load-ratio", "1.0",
              "--quiet", "--out-dir", dir.file("out")}),
      2, "smallest ratio found feasible");
  EXPECT_FALSE(std::filesystem::exists(dir.file("out"))) << "nothing is written on refusal";
}

TEST(CliTopK, AffinityCountsReportTheGraphObjective) {
  TempDir dir;
  const Topology topo(1, 4);
  for (int k : {1, 2}) {
    const std::string trace_path = write_topk_trace(dir);
    Trace trace = read_trace(trace_path);
    if (k == 1) {
      TraceOpenOptions o;
      o.topk = 1;
      trace = Trace::open(trace_path, o);
    }
    const AffinityGraph graph = AffinityGraph::from_trace(trace, 1);
    const std::string counts = dir.file("counts" + std::to_string(k) + ".npy");
    test::write_npy(counts, graph.transitions(), {kTopkLayers - 1, kTopkExperts, kTopkExperts},
                    "<i8");
    json j = run_json({"solve", "--affinity-counts", counts, "--affinity-k", std::to_string(k),
                       "--gpus-per-node", "4", "--json", "--quiet", "--out-dir",
                       dir.file("out" + std::to_string(k))});
    ASSERT_TRUE(j.is_object());
    EXPECT_TRUE(j["cost"].is_null());
    EXPECT_EQ(j["counts"]["tokens"], kTopkTokens) << "k " << k;
    Placement p = read_placement_csv(j["placement"].get<std::string>(), kTopkLayers, kTopkExperts,
                                     topo.gpus());
    const double objective = graph_objective(graph, p, topo);
    EXPECT_NEAR(j["objective"].get<double>(), objective, 1e-9 * std::max(1.0, objective))
        << "k " << k;
    EXPECT_NEAR(j["vanilla_objective"].get<double>(),
                graph_objective(graph, vanilla_placement(kTopkLayers, kTopkExperts, topo), topo),
                1e-9);
    EXPECT_LE(j["objective"].get<double>(), j["vanilla_objective"].get<double>() + 1e-12);
    if (k == 1) {
      // Top-1 counts: the graph objective is the evaluator's cost.
      json e = run_json({"eval", trace_path, j["placement"].get<std::string>(), "--topk", "1",
                         "--gpus-per-node", "4", "--json", "--quiet"});
      EXPECT_NEAR(e["cost"].get<double>(), objective, 1e-9);
    }
  }
  // Options that need tokens are refused.
  test::write_npy(dir.file("c.npy"), std::vector<std::int64_t>(2 * 8 * 8, 1), {2, 8, 8}, "<i8");
  expect_one_line_error(exflow({"solve", "--affinity-counts", dir.file("c.npy"), "--gpus-per-node",
                                "4", "--redundant", "1", "--quiet", "--out-dir", dir.file("o")}),
                        2, "--redundant");
}

TEST(CliTopK, ExpertLoadsBalanceWithoutATrace) {
  TempDir dir;
  const std::string loads = dir.file("loads.json");
  test::write_bytes(loads,
                    "{\"logical_count\": [[90, 80, 5, 5, 10, 10, 1, 1], [1, 2, 3, 4, 50, 60, 70, "
                    "80]]}");
  json j = run_json({"solve", "--expert-loads", loads, "--gpus-per-node", "4", "--json", "--quiet",
                     "--out-dir", dir.file("out")});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["method"], "load-balance");
  EXPECT_TRUE(j["cost"].is_null());
  EXPECT_EQ(j["loads"]["layers"], 2);
  EXPECT_EQ(j["loads"]["experts"], 8);
  // Vanilla pairs 90 with 80 (ratio 170/50.5); balanced puts them apart: 91/50.5 at best.
  EXPECT_LT(j["load_ratio_max"].get<double>(), j["vanilla"]["load_ratio_max"].get<double>());
  EXPECT_NEAR(j["vanilla"]["load_ratio_max"].get<double>(), 170.0 / 50.5, 1e-12);
  EXPECT_LE(j["load_ratio_max"].get<double>(), 91.0 / 50.5 + 1e-12);
  EXPECT_EQ(csv_rows(j["placement"].get<std::string>()), 16);

  json r = run_json({"solve", "--expert-loads", loads, "--gpus-per-node", "4", "--redundant", "1",
                     "--json", "--quiet", "--out-dir", dir.file("out1")});
  ASSERT_TRUE(r.is_object());
  EXPECT_EQ(r["replicas"], 8);
  EXPECT_LE(r["load_ratio_max"].get<double>(), j["load_ratio_max"].get<double>() + 1e-12);
  EXPECT_EQ(csv_rows(r["placement"].get<std::string>()), 24);

  const std::string trace = write_topk_trace(dir);
  expect_one_line_error(exflow({"solve", trace, "--expert-loads", loads, "--gpus-per-node", "4",
                                "--quiet", "--out-dir", dir.file("o")}),
                        2, "exactly one of");
}

TEST(CliTopK, ConvertedJsonlProfiles) {
  TempDir dir;
  // 3 tokens x 2 layers x top-2, rows out of order with explicit token ids.
  test::write_bytes(dir.file("rows.jsonl"),
                    "{\"layer\": 1, \"topk_ids\": [3, 0], \"token\": 2}\n"
                    "{\"layer\": 0, \"topk_ids\": [1, 2], \"token\": 0}\n"
                    "\n"
                    "{\"layer\": 0, \"topk_ids\": [0, 3], \"token\": 1}\n"
                    "{\"layer\": 1, \"topk_ids\": [2, 1], \"token\": 0}\n"
                    "{\"layer\": 0, \"topk_ids\": [3, 1], \"token\": 2}\n"
                    "{\"layer\": 1, \"topk_ids\": [0, 2], \"token\": 1}\n");
  json c = run_json({"convert", dir.file("rows.jsonl"), "-o", dir.file("out.npy"), "--json"});
  EXPECT_EQ(c["tokens"], 3);
  EXPECT_EQ(c["layers"], 2);
  EXPECT_EQ(c["k"], 2);
  json p = run_json({"profile", dir.file("out.npy"), "--json", "--quiet"});
  EXPECT_EQ(p["tokens"], 3);
  EXPECT_EQ(p["layers"], 2);
  EXPECT_EQ(p["k"], 2);
  EXPECT_EQ(p["experts"], 4);
  Trace t = read_trace(dir.file("out.npy"));
  EXPECT_EQ(t.at(2, 1, 0), 3);
  EXPECT_EQ(t.at(2, 1, 1), 0);
  EXPECT_EQ(t.at(1, 0, 1), 3);
  EXPECT_EQ(t.at(0, 1, 0), 2);
}

TEST(CliTopK, MethodVanillaWritesTheVanillaPlacement) {
  TempDir dir;
  const std::string trace = write_topk_trace(dir);
  json j = run_json({"solve", trace, "--gpus-per-node", "4", "--method", "vanilla", "--json",
                     "--quiet", "--out-dir", dir.file("out")});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["method"], "vanilla");
  EXPECT_DOUBLE_EQ(j["cost"].get<double>(), j["vanilla"]["cost"].get<double>());
  EXPECT_DOUBLE_EQ(j["load_ratio_max"].get<double>(), j["vanilla"]["load_ratio_max"].get<double>());
  const Topology topo(1, 4);
  EXPECT_EQ(read_placement_csv(j["placement"].get<std::string>(), kTopkLayers, kTopkExperts, 4),
            vanilla_placement(kTopkLayers, kTopkExperts, topo));
}

// ---------------------------------------------------------------------------------------------
// exflow simulate

const std::string kExampleTrace = std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy";
const std::string kExampleSolved =
    std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.solved-1x4.csv";

TEST(Cli, SimulateReportsEveryConfigurationFromTheEvaluator) {
  const CliRun r = exflow({"simulate", kExampleTrace, "--gpus-per-node", "4", "--placement",
                           kExampleSolved, "--model", "olmoe-1b-7b", "--json", "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["model"]["hidden"], 2048);
  EXPECT_EQ(j["model"]["kv_bytes_per_token"], 8192);
  EXPECT_EQ(j["model"]["preset_matches_trace"], false);  // OLMoE has 16 layers, the trace 26
  EXPECT_EQ(j["tokens_per_step"], 512);
  const json& c = j["configurations"];
  ASSERT_EQ(c.size(), 8u);  // every scheme with vanilla and the placement, these three first
  EXPECT_EQ(c[0]["name"], "baseline/vanilla");
  EXPECT_EQ(c[1]["name"], "exflow/vanilla");
  EXPECT_EQ(c[2]["name"], "exflow/placement");
  EXPECT_EQ(c[0]["speedup"], 1.0);
  EXPECT_EQ(c[0]["allgather_bytes_per_step"], 0.0);
  EXPECT_LT(c[2]["alltoall_bytes_per_step"].get<double>(),
            c[1]["alltoall_bytes_per_step"].get<double>());
  EXPECT_EQ(c[2]["per_layer"].size(), 26u);
  EXPECT_FALSE(c[2]["per_layer"][0].contains("dispatch_bytes"));  // matrices only on request

  // Costs are the evaluator's: the same numbers `exflow eval` prints for the placement.
  const CliRun e =
      exflow({"eval", kExampleTrace, kExampleSolved, "--gpus-per-node", "4", "--json", "--quiet"});
  ASSERT_EQ(e.code, 0) << e.err;
  const json ej = json::parse(e.out);
  EXPECT_EQ(c[2]["cost"], ej["cost"]);
  EXPECT_EQ(c[1]["cost"], ej["vanilla"]["cost"]);
  EXPECT_EQ(c[0]["cost"], ej["vanilla"]["baseline"]["cost"]);

  // Bytes per step: rows of 2048 x 2 bytes, scaled from the trace's 8222 tokens to 512.
  const double rows = c[1]["cost"].get<double>() * 8222;  // one node: cost = transfers
  EXPECT_NEAR(c[1]["alltoall_bytes_per_step"].get<double>(), rows * 4096 * 512 / 8222, 1e-3);

  const CliRun text = exflow(
      {"simulate", kExampleTrace, "--gpus-per-node", "4", "--model", "deepseek-v3", "--quiet"});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("exflow/vanilla"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("the trace's shape is used"), std::string::npos) << text.out;
}

TEST(Cli, SeqLenDealsBaselineOwnersBySequence) {
  // eval's baseline with --seq-len is the evaluator's with sequence_length (exflow-run's
  // baseline owners), and differs from dealing single tokens.
  const CliRun r = exflow({"eval", kExampleTrace, kExampleSolved, "--gpus-per-node", "4",
                           "--seq-len", "64", "--json", "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["options"]["seq_len"], 64);
  const Trace trace = Trace::open(kExampleTrace);
  const Topology topo(1, 4);
  EvalOptions o;
  o.scheme = Scheme::kBaseline;
  o.sequence_length = 64;
  const Metrics by_sequence =
      evaluate(trace, read_placement_csv(kExampleSolved, 26, 64, 4), topo, o);
  EXPECT_EQ(j["baseline"]["cost"].get<double>(), by_sequence.cost);
  o.sequence_length = 1;
  const Metrics by_token = evaluate(trace, read_placement_csv(kExampleSolved, 26, 64, 4), topo, o);
  EXPECT_NE(by_sequence.cost, by_token.cost);
  expect_one_line_error(exflow({"eval", kExampleTrace, kExampleSolved, "--gpus-per-node", "4",
                                "--seq-len", "0", "--quiet"}),
                        2, "--seq-len");
}

TEST(Cli, SimulateBadUsage) {
  expect_one_line_error(exflow({"simulate", kExampleTrace, "--gpus-per-node", "4", "--quiet"}), 2,
                        "give --model or both --hidden and --kv-bytes-per-token");
  expect_one_line_error(
      exflow({"simulate", kExampleTrace, "--gpus-per-node", "4", "--model", "llama", "--quiet"}), 2,
      "unknown model preset 'llama'");
  expect_one_line_error(exflow({"simulate", kExampleTrace, "--gpus-per-node", "3", "--model",
                                "deepseek-v3", "--quiet"}),
                        2, "no vanilla placement");
  expect_one_line_error(exflow({"simulate", kExampleTrace, "--gpus-per-node", "8", "--placement",
                                kExampleSolved, "--model", "deepseek-v3", "--quiet"}),
                        1, "esft-intent-top6.solved-1x4.csv");
}

}  // namespace
}  // namespace exflow
