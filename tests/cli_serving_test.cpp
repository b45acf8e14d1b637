// End-to-end tests of the CLI's serving-engine outputs: decoder-layer rows (--dense-layers) from
// a trace and from SGLang's per-decoder-layer loads, redundant slots in all (--redundant-total)
// with experts that do not divide over the GPUs, EPLB's log2phy width (--eplb-padding), and the
// checks on output names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;

test::CommandRun exflow(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_CLI, args);
}

json run_json(const std::vector<std::string>& args) {
  const test::CommandRun r = exflow(args);
  EXPECT_EQ(r.code, 0) << r.err;
  return r.code == 0 ? json::parse(r.out) : json();
}

using test::expect_one_line_error;

json read_json(const std::string& path) {
  return json::parse(test::read_bytes(path));
}

// A top-2 trace of `layers` MoE layers over `experts` experts with inter-layer affinity.
std::string write_trace(const TempDir& dir, int layers, int experts) {
  std::vector<std::int64_t> ids;
  const std::int64_t tokens = 240;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      const int a = static_cast<int>((t * 7 + l) % experts);
      ids.push_back(a);
      ids.push_back((a + 1 + static_cast<int>(t % 3)) % experts);
    }
  }
  const std::string path = dir.file("trace.npy");
  test::write_npy(path, ids, {tokens, layers, 2});
  return path;
}

TEST(CliServing, DenseLayersGiveOneRowPerDecoderLayerFromTracesAndLoads) {
  TempDir dir;
  const std::string trace = write_trace(dir, 3, 8);
  const std::string sglang = dir.file("trace-sglang.json");
  json j = run_json({"solve", trace, "--gpus-per-node", "4", "--dense-layers", "1", "--sglang",
                     sglang, "--json", "--quiet", "--out-dir", dir.file("out")});
  ASSERT_TRUE(j.is_object());
  const json rows = read_json(sglang)["physical_to_logical_map"];
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], json({0, 1, 2, 3, 4, 5, 6, 7}));  // the dense layer: the trivial map

  // The loads as SGLang's recorder counts them: one row per decoder layer, the dense one zero.
  const std::string loads = dir.file("loads.json");
  test::write_bytes(loads,
                    "{\"logical_count\": [[0, 0, 0, 0, 0, 0, 0, 0], [9, 8, 1, 1, 2, 2, 1, 1], "
                    "[1, 2, 3, 4, 5, 6, 7, 8], [4, 4, 4, 4, 4, 4, 4, 4]]}");
  const std::string from_loads = dir.file("loads-sglang.json");
  json l = run_json({"solve", "--expert-loads", loads, "--gpus-per-node", "4", "--dense-layers",
                     "deepseek-v2-lite", "--sglang", from_loads, "--json", "--quiet", "--out-dir",
                     dir.file("out2")});
  ASSERT_TRUE(l.is_object());
  EXPECT_EQ(l["loads"]["layers"], 3);
  const json load_rows = read_json(from_loads)["physical_to_logical_map"];
  ASSERT_EQ(load_rows.size(), 4u);
  EXPECT_EQ(load_rows[0], rows[0]);

  // Read back through the same decoder layers; without them the extra row is named.
  json e = run_json(
      {"eval", trace, sglang, "--gpus-per-node", "4", "--dense-layers", "1", "--json", "--quiet"});
  ASSERT_TRUE(e.is_object());
  EXPECT_DOUBLE_EQ(e["cost"].get<double>(), j["cost"].get<double>());
  expect_one_line_error(exflow({"eval", trace, sglang, "--gpus-per-node", "4", "--quiet"}), 1,
                        "placement has 4 MoE layers x 8 experts, the trace 3 x 8; if the model "
                        "has 1 dense decoder layer(s), give --dense-layers");
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--dense-layers", "x1",
                                "--quiet", "--out-dir", dir.file("o")}),
                        2, "dense layers: 'x1' is not a count");
}

TEST(CliServing, RedundantTotalLetsTheSlotsDivideWhereTheExpertsDoNot) {
  // 12 experts + 4 redundant slots on 2 nodes x 4 GPUs: 2 slots per GPU.
  TempDir dir;
  const std::string trace = write_trace(dir, 3, 12);
  const std::string sglang = dir.file("sglang.json"), eplb = dir.file("eplb.json");
  json j = run_json({"solve", trace, "--gpus-per-node", "4", "--nodes", "2", "--redundant-total",
                     "4", "--sglang", sglang, "--eplb", eplb, "--eplb-padding", "redundant+1",
                     "--json", "--quiet", "--out-dir", dir.file("out")});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["options"]["redundant_total"], 4);
  const json rows = read_json(sglang)["physical_to_logical_map"];
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].size(), 16u);
  const json maps = read_json(eplb);
  EXPECT_EQ(maps["log2phy"][0][0].size(), 5u);  // R + 1
  EXPECT_EQ(maps["phy2log"], rows);

  for (const std::string& file : {sglang, eplb}) {
    json e = run_json({"eval", trace, file, "--gpus-per-node", "4", "--nodes", "2",
                       "--redundant-total", "4", "--json", "--quiet"});
    ASSERT_TRUE(e.is_object());
    EXPECT_DOUBLE_EQ(e["cost"].get<double>(), j["cost"].get<double>());
  }
  // simulate and report compare with the stock layout of these slots (SGLang's trivial map).
  json s = run_json({"simulate", trace, "--placement", sglang, "--gpus-per-node", "4", "--nodes",
                     "2", "--model", "olmoe-1b-7b", "--json", "--quiet"});
  ASSERT_TRUE(s.is_object());
  const test::CommandRun report =
      exflow({"report", trace, "--gpus-per-node", "4", "--nodes", "2", "--redundant-total", "4",
              "--convergence-points", "2", "-o", dir.file("report.html"), "--quiet"});
  EXPECT_EQ(report.code, 0) << report.err;

  expect_one_line_error(exflow({"eval", trace, sglang, "--gpus-per-node", "4", "--nodes", "2",
                                "--redundant-total", "3", "--quiet"}),
                        1,
                        "layer 0 has 4 redundant slots (12 experts in 16 slots), "
                        "--redundant-total says 3");
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--nodes", "2",
                                "--redundant-total", "3", "--quiet", "--out-dir", dir.file("o")}),
                        2,
                        "--redundant-total 3: 12 experts + 3 redundant slots do not divide "
                        "over 8 GPUs");
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--redundant", "1",
                                "--redundant-total", "4", "--quiet", "--out-dir", dir.file("o")}),
                        2, "give --redundant (per GPU) or --redundant-total (in all), not both");
}

TEST(CliServing, EvalShowsEverySchemeAndTheChosenOneOnTop) {
  TempDir dir;
  const std::string trace = write_trace(dir, 3, 16);
  json solved = run_json({"solve", trace, "--gpus-per-node", "2", "--nodes", "2", "--json",
                          "--quiet", "--out-dir", dir.file("out")});
  ASSERT_TRUE(solved.is_object());
  const std::string placement = solved["placement"];
  for (const char* scheme : {"coherent", "standard", "deepep", "deepep-ll"}) {
    json j = run_json({"eval", trace, placement, "--gpus-per-node", "2", "--nodes", "2", "--scheme",
                       scheme, "--json", "--quiet"});
    ASSERT_TRUE(j.is_object());
    ASSERT_EQ(j["schemes"].size(), 4u);
    const std::string name = j["scheme"];
    EXPECT_EQ(j["options"]["scheme"], scheme);
    EXPECT_DOUBLE_EQ(j["cost"].get<double>(),
                     j["schemes"][name]["placement"]["cost"].get<double>());
    EXPECT_DOUBLE_EQ(j["vanilla"]["cost"].get<double>(),
                     j["schemes"][name]["vanilla"]["cost"].get<double>());
    EXPECT_EQ(j["inter_transfers"], j["schemes"][name]["placement"]["inter_transfers"]);
  }
  json j = run_json({"eval", trace, placement, "--gpus-per-node", "2", "--nodes", "2", "--scheme",
                     "deepep", "--json", "--quiet"});
  EXPECT_EQ(j["scheme"], "deepep");
  // DeepEP merges a token's transfers to one node: never more inter-node transfers than standard.
  EXPECT_LE(j["schemes"]["deepep"]["placement"]["inter_transfers"].get<std::int64_t>(),
            j["schemes"]["baseline"]["placement"]["inter_transfers"].get<std::int64_t>());
  EXPECT_EQ(solved["schemes"].size(), 4u);
  const test::CommandRun text =
      exflow({"eval", trace, placement, "--gpus-per-node", "2", "--nodes", "2", "--quiet"});
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("deepep-ll"), std::string::npos) << text.out;
  const test::CommandRun bad = exflow({"eval", trace, placement, "--gpus-per-node", "2", "--nodes",
                                       "2", "--scheme", "ring", "--quiet"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--scheme"), std::string::npos) << bad.err;
}

TEST(CliServing, SolveOptimisesTheChosenSchemeAndShowsItsPhases) {
  TempDir dir;
  const std::string trace = write_trace(dir, 3, 16);
  json j = run_json({"solve", trace, "--gpus-per-node", "2", "--nodes", "2", "--scheme", "deepep",
                     "--redundant", "1", "--json", "--quiet", "--out-dir", dir.file("out")});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["scheme"], "deepep");
  EXPECT_EQ(j["options"]["scheme"], "deepep");
  EXPECT_DOUBLE_EQ(j["cost"].get<double>(),
                   j["schemes"]["deepep"]["placement"]["cost"].get<double>());
  EXPECT_DOUBLE_EQ(j["dispatch"]["cost"].get<double>() + j["combine"]["cost"].get<double>(),
                   j["cost"].get<double>());
  EXPECT_EQ(j["dispatch"]["per_layer"]["inter"].size(), 3u);
  EXPECT_LE(j["cost"].get<double>(), j["vanilla"]["cost"].get<double>());
  // The placement it wrote scores the same in eval, with copy choice even as expected counts.
  json e = run_json({"eval", trace, j["placement"].get<std::string>(), "--gpus-per-node", "2",
                     "--nodes", "2", "--scheme", "deepep", "--json", "--quiet"});
  EXPECT_DOUBLE_EQ(e["cost"].get<double>(), j["cost"].get<double>());
  json even =
      run_json({"eval", trace, j["placement"].get<std::string>(), "--gpus-per-node", "2", "--nodes",
                "2", "--scheme", "deepep", "--replica-choice", "even", "--json", "--quiet"});
  EXPECT_EQ(even["options"]["replica_choice"], "even");
  EXPECT_EQ(even["schemes"]["context-coherent"]["placement"]["cost"],
            e["schemes"]["context-coherent"]["placement"]["cost"]);  // coherent keeps nearest
  expect_one_line_error(exflow({"eval", trace, j["placement"].get<std::string>(), "--gpus-per-node",
                                "2", "--nodes", "2", "--replica-choice", "even", "--quiet"}),
                        2, "not coherent");
  expect_one_line_error(
      exflow({"solve", trace, "--gpus-per-node", "2", "--nodes", "2", "--replica-choice", "even",
              "--quiet", "--out-dir", dir.file("never")}),
      2, "--replica-choice even");
  EXPECT_FALSE(std::filesystem::exists(dir.file("never")));
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "2", "--scheme", "ring",
                                "--quiet", "--out-dir", dir.file("never")}),
                        2, "--scheme");
}

TEST(CliServing, SolveRebalancesFromThePreviousPlacementWithinTheMoveBudget) {
  TempDir dir;
  const std::string before = write_trace(dir, 3, 16);
  const json old = run_json({"solve", before, "--gpus-per-node", "2", "--nodes", "2", "--json",
                             "--quiet", "--out-dir", dir.file("old")});
  ASSERT_TRUE(old.is_object());
  const std::string previous = old["placement"];
  // The drifted window: the same shape, other routing.
  const std::string after = dir.file("after.npy");
  {
    std::vector<std::int64_t> ids;
    for (int t = 0; t < 400; ++t) {
      for (int l = 0; l < 3; ++l) {
        const int a = (t * 5 + l * 3 + t / 7) % 16;
        ids.push_back(a);
        ids.push_back((a + 2 + t % 5) % 16);
      }
    }
    test::write_npy(after, ids, {400, 3, 2});
  }
  const json same =
      run_json({"solve", after, "--gpus-per-node", "2", "--nodes", "2", "--previous", previous,
                "--max-moves", "0", "--json", "--quiet", "--out-dir", dir.file("same")});
  ASSERT_TRUE(same.is_object());
  EXPECT_EQ(same["moved_slots"], 0);
  const json eval_old = run_json(
      {"eval", after, previous, "--gpus-per-node", "2", "--nodes", "2", "--json", "--quiet"});
  EXPECT_DOUBLE_EQ(same["cost"].get<double>(), eval_old["cost"].get<double>());
  const json some =
      run_json({"solve", after, "--gpus-per-node", "2", "--nodes", "2", "--previous", previous,
                "--max-moves", "4", "--json", "--quiet", "--out-dir", dir.file("some")});
  EXPECT_LE(some["moved_slots"].get<int>(), 4);
  EXPECT_EQ(some["moves"].size(), some["moved_slots"].get<std::size_t>());
  EXPECT_LE(some["cost"].get<double>(), same["cost"].get<double>());
  const json curve =
      run_json({"solve", after, "--gpus-per-node", "2", "--nodes", "2", "--previous", previous,
                "--moves-curve", "--json", "--quiet", "--out-dir", dir.file("curve")});
  ASSERT_EQ(curve["moves_curve"].size(), 7u);
  double last = curve["moves_curve"][0]["cost"];
  EXPECT_DOUBLE_EQ(last, same["cost"].get<double>());
  for (const json& p : curve["moves_curve"]) {
    EXPECT_LE(p["cost"].get<double>(), last + 1e-12);
    EXPECT_LE(p["moved"].get<std::int64_t>(), p["max_moves"].get<std::int64_t>());
    last = p["cost"];
  }
  EXPECT_DOUBLE_EQ(last, curve["cost"].get<double>());
  expect_one_line_error(exflow({"solve", after, "--gpus-per-node", "2", "--nodes", "2",
                                "--max-moves", "3", "--quiet", "--out-dir", dir.file("never")}),
                        2, "--max-moves");
  // A placement for 2 x 2 GPUs given for 2 x 4.
  expect_one_line_error(exflow({"solve", after, "--gpus-per-node", "4", "--nodes", "2",
                                "--previous", previous, "--quiet", "--out-dir", dir.file("never")}),
                        1, "previous");
  EXPECT_FALSE(std::filesystem::exists(dir.file("never")));
}

TEST(CliServing, OutputsMustBeJsonFiles) {
  TempDir dir;
  const std::string trace = write_trace(dir, 2, 8);
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--sglang",
                                dir.file("map.txt"), "--quiet", "--out-dir", dir.file("o")}),
                        2, "the file name must end in .json");
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--eplb", dir.file("maps"),
                                "--quiet", "--out-dir", dir.file("o")}),
                        2, "--eplb");
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--vllm-ascend",
                                dir.file("map.txt"), "--quiet", "--out-dir", dir.file("o")}),
                        2, "--vllm-ascend");
  EXPECT_FALSE(std::filesystem::exists(dir.file("o")));  // refused before anything is written
  expect_one_line_error(exflow({"solve", trace, "--gpus-per-node", "4", "--eplb-padding", "wide",
                                "--quiet", "--out-dir", dir.file("o")}),
                        2, "--eplb-padding");
}

}  // namespace
}  // namespace exflow
