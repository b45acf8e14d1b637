// End-to-end tests of `exflow simulate` and `exflow report` with every scheme: each
// configuration's time recomputed here from its GPU-pair byte matrices (an independent path from
// the simulator's per-GPU counts), costs against `exflow eval --scheme`, the fastest (scheme,
// placement), the headline of --scheme, the report's schemes table, and bad --scheme values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;

const std::string kTrace = std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy";
const std::string kSolved =
    std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.solved-1x4.csv";

test::CommandRun exflow(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_CLI, args);
}

json run_json(const std::vector<std::string>& args) {
  const test::CommandRun r = exflow(args);
  EXPECT_EQ(r.code, 0) << r.err;
  return r.code == 0 ? json::parse(r.out) : json();
}

using test::expect_one_line_error;

std::string fixed(double v, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

// Seconds per step of one configuration from its byte matrices [L][phase][src][dst] over the
// whole trace: each GPU's sends and receives per link class, scaled to one step, the busiest
// GPU's slower link class plus alpha per collective that moves anything, plus the KV all-gather
// for the coherent scheme (docs/simulator.md).
double seconds_from_matrices(const json& config, const json& run, std::int64_t trace_tokens) {
  const int G = run["gpus"];
  const int P = run["gpus_per_node"];
  const double b_intra = run["network"]["intra_gbps"].get<double>() * 1e9 / 8;
  const double b_inter = run["network"]["inter_gbps"].get<double>() * 1e9 / 8;
  const double alpha = run["network"]["latency_us"].get<double>() * 1e-6;
  const double tokens_per_step = run["tokens_per_step"].get<double>();
  const double scale = tokens_per_step / static_cast<double>(trace_tokens);
  double total = 0;
  for (const json& layer : config["per_layer"]) {
    for (const char* phase : {"dispatch_bytes", "combine_bytes"}) {
      const json& m = layer[phase];
      std::vector<double> s_intra(G), s_inter(G), r_intra(G), r_inter(G);
      double moved = 0;
      for (int a = 0; a < G; ++a) {
        for (int b = 0; b < G; ++b) {
          const double bytes = m[a][b].get<double>() * scale;
          if (a == b || bytes == 0) continue;
          moved += bytes;
          const bool same_node = a / P == b / P;
          (same_node ? s_intra : s_inter)[a] += bytes;
          (same_node ? r_intra : r_inter)[b] += bytes;
        }
      }
      double worst = 0;
      for (int g = 0; g < G; ++g) {
        worst = std::max({worst, std::max(s_intra[g], r_intra[g]) / b_intra,
                          std::max(s_inter[g], r_inter[g]) / b_inter});
      }
      if (moved > 0) total += alpha + worst;
    }
  }
  if (config["scheme"] == "context-coherent") {
    const double L = static_cast<double>(config["per_layer"].size());
    const double gathered =
        tokens_per_step * (L - 1) * run["model"]["kv_bytes_per_token"].get<double>();
    total += alpha + std::max(gathered * (P - 1) / G / b_intra, gathered * (G - P) / G / b_inter);
  }
  return total;
}

TEST(CliSimulate, TimesEverySchemeFromItsOwnTrafficAndNamesTheFastest) {
  const json j =
      run_json({"simulate", kTrace, "--gpus-per-node", "2", "--nodes", "2", "--placement", kSolved,
                "--model", "olmoe-1b-7b", "--scheme", "deepep", "--matrices", "--json", "--quiet"});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["scheme"], "deepep");
  EXPECT_EQ(j["options"]["scheme"], "deepep");
  const json& c = j["configurations"];
  std::vector<std::string> names;
  for (const json& x : c) names.push_back(x["name"]);
  ASSERT_EQ(names,
            (std::vector<std::string>{"baseline/vanilla", "exflow/vanilla", "exflow/placement",
                                      "baseline/placement", "deepep/vanilla", "deepep/placement",
                                      "deepep-ll/vanilla", "deepep-ll/placement"}));
  const std::vector<std::string> schemes = {"baseline",  "context-coherent", "context-coherent",
                                            "baseline",  "deepep",           "deepep",
                                            "deepep-ll", "deepep-ll"};
  const std::int64_t tokens = Trace::open(kTrace).tokens();
  std::size_t best = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(c[i]["scheme"], schemes[i]) << names[i];
    EXPECT_EQ(c[i]["placement"], i == 0 || i == 1 || i == 4 || i == 6 ? "vanilla" : "placement");
    const double expected = seconds_from_matrices(c[i], j, tokens);
    EXPECT_GT(expected, 0) << names[i];
    EXPECT_NEAR(c[i]["seconds_per_step"].get<double>(), expected, expected * 1e-9) << names[i];
    EXPECT_NEAR(c[i]["speedup"].get<double>(),
                c[0]["seconds_per_step"].get<double>() / c[i]["seconds_per_step"].get<double>(),
                1e-12);
    if (c[i]["seconds_per_step"].get<double>() < c[best]["seconds_per_step"].get<double>()) {
      best = i;
    }
    if (schemes[i] != "context-coherent") {
      EXPECT_EQ(c[i]["allgather_seconds_per_step"], 0.0) << names[i];
    }
  }
  EXPECT_EQ(j["fastest"]["name"], names[best]);
  EXPECT_EQ(j["fastest"]["seconds_per_step"], c[best]["seconds_per_step"]);
  EXPECT_EQ(j["headline"]["scheme"], "deepep");
  EXPECT_EQ(j["headline"]["vanilla"], "deepep/vanilla");
  EXPECT_EQ(j["headline"]["placement"], "deepep/placement");
  EXPECT_DOUBLE_EQ(j["headline"]["speedup_over_vanilla"].get<double>(),
                   c[4]["seconds_per_step"].get<double>() / c[5]["seconds_per_step"].get<double>());
  // DeepEP merges a token's sends to one node: never more inter-node transfers than standard.
  EXPECT_LE(c[5]["inter"].get<double>(), c[3]["inter"].get<double>());
  EXPECT_LT(c[5]["inter"].get<double>(), c[3]["inter"].get<double>());

  // Costs are the evaluator's: what `exflow eval --scheme` prints for each scheme.
  const json e = run_json(
      {"eval", kTrace, kSolved, "--gpus-per-node", "2", "--nodes", "2", "--json", "--quiet"});
  ASSERT_TRUE(e.is_object());
  for (std::size_t i = 0; i < c.size(); ++i) {
    const json& s = e["schemes"][schemes[i]][c[i]["placement"].get<std::string>()];
    EXPECT_EQ(c[i]["cost"], s["cost"]) << names[i];
    EXPECT_EQ(c[i]["inter"], s["inter"]) << names[i];
    EXPECT_EQ(c[i]["intra"], s["intra"]) << names[i];
  }
}

TEST(CliSimulate, TextPutsTheSchemeFirstWithItsHeadlineAndTheFastest) {
  const std::vector<std::string> args = {
      "simulate", kTrace,    "--gpus-per-node", "2",      "--nodes", "2", "--placement",
      kSolved,    "--model", "mixtral-8x7b",    "--quiet"};
  std::vector<std::string> with_json = args;
  with_json.insert(with_json.end(), {"--scheme", "deepep-ll", "--json"});
  const json j = run_json(with_json);
  ASSERT_TRUE(j.is_object());
  std::vector<std::string> text_args = args;
  text_args.insert(text_args.end(), {"--scheme", "deepep-ll"});
  const test::CommandRun r = exflow(text_args);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::size_t header = r.out.find("configuration");
  ASSERT_NE(header, std::string::npos) << r.out;
  const std::size_t first_row = r.out.find('\n', header) + 1;
  EXPECT_EQ(r.out.compare(first_row, 19, "deepep-ll/vanilla *"), 0) << r.out;
  EXPECT_NE(r.out.find("deepep-ll/placement *"), std::string::npos) << r.out;
  const json& c = j["configurations"];
  const double vanilla = c[6]["seconds_per_step"].get<double>();
  const double placed = c[7]["seconds_per_step"].get<double>();
  EXPECT_NE(r.out.find("headline  deepep-ll: the placement takes " + fixed(placed * 1e3, 4) +
                       " ms per step, vanilla " + fixed(vanilla * 1e3, 4) + " ms (" +
                       fixed(vanilla / placed, 2) + "x)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(
      r.out.find("fastest   " + j["fastest"]["name"].get<std::string>() + ": " +
                 fixed(j["fastest"]["seconds_per_step"].get<double>() * 1e3, 4) + " ms per step"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("note      deepep-ll"), std::string::npos) << r.out;

  // The default scheme is coherent: exflow's rows first, as the options echo says.
  const json d = run_json(
      {"simulate", kTrace, "--gpus-per-node", "4", "--model", "deepseek-v3", "--json", "--quiet"});
  ASSERT_TRUE(d.is_object());
  EXPECT_EQ(d["options"]["scheme"], "coherent");
  EXPECT_EQ(d["headline"]["vanilla"], "exflow/vanilla");
  EXPECT_TRUE(d["headline"]["placement"].is_null());
  EXPECT_EQ(d["configurations"].size(), 4u);  // without a placement: every scheme's vanilla
}

TEST(CliSimulate, UnknownSchemeIsOneLineAndExitTwo) {
  TempDir dir;
  expect_one_line_error(exflow({"simulate", kTrace, "--gpus-per-node", "4", "--model",
                                "deepseek-v3", "--scheme", "ring", "--quiet"}),
                        2, "--scheme must be one of coherent, standard, deepep, deepep-ll");
  expect_one_line_error(exflow({"report", kTrace, "--gpus-per-node", "4", "--scheme", "nvshmem",
                                "-o", dir.file("r.html"), "--quiet"}),
                        2, "--scheme must be one of coherent, standard, deepep, deepep-ll");
}

TEST(CliSimulate, EvenCopyChoiceSimulatesTheExpectedTraffic) {
  // A placement with replicas, so that the copy choice matters.
  TempDir dir;
  const json solved =
      run_json({"solve", kTrace, "--gpus-per-node", "2", "--nodes", "2", "--redundant", "1",
                "--scheme", "deepep", "--time-limit", "1", "--token-time-limit", "1", "--out-dir",
                dir.file("out"), "--json", "--quiet"});
  ASSERT_TRUE(solved.is_object());
  const std::string placement = solved["placement"];
  const json j = run_json({"simulate", kTrace, "--gpus-per-node", "2", "--nodes", "2",
                           "--placement", placement, "--model", "olmoe-1b-7b", "--scheme", "deepep",
                           "--replica-choice", "even", "--json", "--quiet"});
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["options"]["replica_choice"], "even");
  const json e = run_json({"eval", kTrace, placement, "--gpus-per-node", "2", "--nodes", "2",
                           "--scheme", "deepep", "--replica-choice", "even", "--json", "--quiet"});
  const json n = run_json({"eval", kTrace, placement, "--gpus-per-node", "2", "--nodes", "2",
                           "--scheme", "deepep", "--json", "--quiet"});
  for (const json& c : j["configurations"]) {
    if (c["name"] != "deepep/placement") continue;
    EXPECT_DOUBLE_EQ(c["cost"].get<double>(), e["cost"].get<double>());
    EXPECT_NE(c["cost"].get<double>(), n["cost"].get<double>());  // the replicas are spread
  }
  expect_one_line_error(exflow({"simulate", kTrace, "--gpus-per-node", "2", "--nodes", "2",
                                "--model", "olmoe-1b-7b", "--replica-choice", "even", "--quiet"}),
                        2, "not coherent");
}

TEST(CliReport, ShowsTheSchemesSideBySideAndNamesTheFastest) {
  TempDir dir;
  const std::string html = dir.file("report.html");
  const test::CommandRun r =
      exflow({"report", kTrace, "--gpus-per-node", "2", "--nodes", "2", "--placement", kSolved,
              "--scheme", "standard", "--convergence-points", "0", "-o", html, "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string page = test::read_bytes(html);
  EXPECT_NE(page.find("Schemes side by side"), std::string::npos);
  EXPECT_NE(page.find("<th colspan=\"3\">vanilla</th><th colspan=\"3\">"
                      "esft-intent-top6.solved-1x4.csv</th>"),
            std::string::npos);
  EXPECT_NE(page.find("<tr class=\"primary\"><td>baseline *</td>"), std::string::npos);
  for (const char* row : {"<tr><td>exflow</td>", "<tr><td>deepep</td>", "<tr><td>deepep-ll</td>"}) {
    EXPECT_NE(page.find(row), std::string::npos) << row;
  }
  // Every cell is the simulator's, as `exflow simulate` computes it for the same cluster and
  // model (the report's default, mixtral-8x7b).
  const json j = run_json({"simulate", kTrace, "--gpus-per-node", "2", "--nodes", "2",
                           "--placement", kSolved, "--model", "mixtral-8x7b", "--json", "--quiet"});
  ASSERT_TRUE(j.is_object());
  for (const json& c : j["configurations"]) {
    const std::string cell = "<td>" + fixed(c["seconds_per_step"].get<double>() * 1e3, 3) + " (" +
                             fixed(c["speedup"].get<double>(), 2) + "x)</td><td>" +
                             fixed(c["inter"].get<double>(), 3) + "</td><td>" +
                             fixed(c["intra"].get<double>(), 3) + "</td>";
    EXPECT_NE(page.find(cell), std::string::npos) << c["name"] << " " << cell;
  }
  std::string fastest = j["fastest"]["name"];
  const std::string prefix = fastest.substr(0, fastest.find('/'));
  const std::string column = j["fastest"]["placement"] == "vanilla"
                                 ? std::string("vanilla")
                                 : std::string("esft-intent-top6.solved-1x4.csv");
  EXPECT_NE(page.find("Fastest: " + prefix + "/" + column + " (scheme " + prefix + ", placement " +
                      column + "): " +
                      fixed(j["fastest"]["seconds_per_step"].get<double>() * 1e3, 3) + " ms"),
            std::string::npos)
      << fastest;
}

TEST(CliReport, SolvesForTheSchemeWhenNoPlacementIsGiven) {
  TempDir dir;
  std::vector<std::int64_t> ids;
  const std::int64_t tokens = 240;
  const int layers = 3, experts = 8;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      const int a = static_cast<int>((t * 7 + l) % experts);
      ids.push_back(a);
      ids.push_back((a + 1 + static_cast<int>(t % 3)) % experts);
    }
  }
  test::write_npy(dir.file("t.npy"), ids, {tokens, layers, 2});
  const test::CommandRun r =
      exflow({"report", dir.file("t.npy"), "--gpus-per-node", "2", "--nodes", "2", "--scheme",
              "deepep", "--convergence-points", "2", "-o", dir.file("r.html"), "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string page = test::read_bytes(dir.file("r.html"));
  EXPECT_NE(page.find("<th colspan=\"3\">solved</th>"), std::string::npos);
  EXPECT_NE(page.find("<tr class=\"primary\"><td>deepep *</td>"), std::string::npos);
  EXPECT_NE(page.find("deepep/solved"), std::string::npos);
}

// The rebalancing chart: every budget's point is the one `exflow solve --previous --moves-curve`
// computes for the same trace, placement and scheme.
TEST(CliReport, ChartsTheCostAgainstTheSlotsAllowedToMove) {
  TempDir dir;
  // Two windows of routing: the placement solved on the first is rebalanced on the second.
  for (int window = 0; window < 2; ++window) {
    std::vector<std::int64_t> ids;
    const std::int64_t tokens = 400;
    for (std::int64_t t = 0; t < tokens; ++t) {
      for (int l = 0; l < 3; ++l) {
        const int a = static_cast<int>((t * (5 + 2 * window) + l) % 16);
        ids.push_back(a);
        ids.push_back((a + 3 + window + static_cast<int>(t % 3)) % 16);
      }
    }
    test::write_npy(dir.file(window == 0 ? "w0.npy" : "w1.npy"), ids, {tokens, 3, 2});
  }
  const json old = run_json({"solve", dir.file("w0.npy"), "--gpus-per-node", "2", "--nodes", "2",
                             "--scheme", "deepep", "--out-dir", dir.path(), "--json", "--quiet"});
  const std::string previous = old["placement"];
  const std::string html = dir.file("report.html");
  const test::CommandRun r =
      exflow({"report", dir.file("w1.npy"), "--gpus-per-node", "2", "--nodes", "2", "--previous",
              previous, "--scheme", "deepep", "--convergence-points", "0", "-o", html, "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string page = test::read_bytes(html);
  EXPECT_NE(page.find("Rebalancing: cost against the experts moved"), std::string::npos);
  const json j = run_json({"solve", dir.file("w1.npy"), "--gpus-per-node", "2", "--nodes", "2",
                           "--previous", previous, "--scheme", "deepep", "--moves-curve",
                           "--out-dir", dir.path(), "--json", "--quiet"});
  ASSERT_EQ(j["moves_curve"].size(), 7u);
  EXPECT_LT(j["moves_curve"].back()["cost"].get<double>(),
            j["moves_curve"].front()["cost"].get<double>());
  for (const json& p : j["moves_curve"]) {
    const std::string point = "<title>at most " + std::to_string(p["max_moves"].get<int>()) +
                              " slots (" + fixed(p["percent"].get<double>(), 0) + "%), " +
                              std::to_string(p["moved"].get<int>()) +
                              " moved: " + fixed(p["cost"].get<double>(), 3) + "</title>";
    EXPECT_NE(page.find(point), std::string::npos) << point;
  }
  // Without --previous there is no chart.
  ASSERT_EQ(exflow({"report", dir.file("w1.npy"), "--gpus-per-node", "2", "--nodes", "2",
                    "--convergence-points", "0", "-o", html, "--quiet"})
                .code,
            0);
  EXPECT_EQ(test::read_bytes(html).find("Rebalancing:"), std::string::npos);
}

}  // namespace
}  // namespace exflow
