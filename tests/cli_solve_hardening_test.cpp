// The CLI side of bad numbers and oversized requests: one line and exit 1 for a stray expert id
// or loads that overflow, exit 2 for numeric options out of range, and solve's token time limit
// kept on the bundled top-6 trace.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;

const std::string kTop6 = std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy";

test::CommandRun exflow(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_CLI, args);
}

using test::expect_one_line_error;

TEST(CliStrayId, ProfileAndSolveNameTheIdAndWhereItIs) {
  TempDir dir;
  test::write_npy(dir.file("stray.npy"), {0, 0, 0, 23556}, {2, 2});
  test::write_npy(dir.file("max.npy"), {0, 0, 0, 65535}, {2, 2});
  expect_one_line_error(exflow({"profile", dir.file("stray.npy")}), 1,
                        "stray.npy: expert id 23556 at token 1, layer 1 makes 23557 experts");
  expect_one_line_error(exflow({"solve", dir.file("stray.npy"), "--gpus-per-node", "1", "--out-dir",
                                dir.file("out")}),
                        1, "more than the 1.0 GiB allowed");
  expect_one_line_error(exflow({"profile", dir.file("max.npy")}), 1,
                        "max.npy: expert id 65535 at token 1, layer 1");
}

TEST(CliLoadOverflow, LoadsWhoseLayerSumOverflowsAreRefused) {
  TempDir dir;
  std::vector<std::int64_t> loads;
  for (int l = 0; l < 2; ++l) {
    for (int e = 0; e < 8; ++e) loads.push_back(e < 4 ? std::int64_t{1} << 62 : 0);
  }
  test::write_npy(dir.file("loads.npy"), loads, {2, 8}, "<i8");
  for (const char* method : {"auto", "eplb"}) {
    expect_one_line_error(
        exflow({"solve", "--expert-loads", dir.file("loads.npy"), "--gpus-per-node", "4",
                "--method", method, "--out-dir", dir.file("out")}),
        1, "loads.npy: layer 0: the expert loads sum past the int64 range");
  }
}

TEST(CliNumbers, NanInfiniteAndNegativeValuesAreRefused) {
  TempDir dir;
  test::write_npy(dir.file("t.npy"), {0, 1, 2, 3, 4, 5, 6, 7}, {4, 2});
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--token-time-limit", "nan"}, "--token-time-limit must be a finite number of seconds"},
      {{"--token-time-limit", "-0.5"}, "--token-time-limit must be a finite number of seconds"},
      {{"--time-limit", "inf"}, "--time-limit must be a finite number of seconds"},
      {{"--time-limit", "1e308"}, "--time-limit must be at most 1e9 seconds"},
      {{"--threads", "-1"}, "--threads"},
      {{"--starts", "-1"}, "--starts must be an integer from 1"},
      {{"--starts", "inf"}, "--starts must be an integer from 1"},
      {{"--intra-cost", "nan"}, "--intra-cost: must be a finite number from 0"},
      {{"--inter-cost", "inf"}, "--inter-cost: must be a finite number from 0"},
      {{"--inter-cost", "1e308"}, "got '1e308'"},
      {{"--redundant", "1000000"}, "--redundant must be an integer from 0 to 65536"},
      {{"--nodes", "65536", "--gpus-per-node", "65536"}, "65536 x 65536 GPUs is more than"},
      {{"--gpus-per-node", "32768", "--redundant", "65536"}, "--redundant 65536"},
  };
  for (const auto& [flags, fragment] : cases) {
    std::vector<std::string> args = {"solve", dir.file("t.npy"), "--out-dir", dir.file("out")};
    if (flags.front() != "--nodes" && flags.front() != "--gpus-per-node") {
      args.insert(args.end(), {"--gpus-per-node", "2"});
    }
    args.insert(args.end(), flags.begin(), flags.end());
    SCOPED_TRACE(flags.front() + " " + flags[1]);
    expect_one_line_error(exflow(args), 2, fragment);
  }
}

// Range errors print their bounds compactly (CLI11's own checks printed DBL_MAX as 300 digits).
TEST(CliNumbers, SimulationBoundsAreShortLines) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--intra-gbps", "1e400"}, "--intra-gbps: must be a finite number above 0, at most 1e+06"},
      {{"--inter-gbps", "0"}, "--inter-gbps: must be a finite number above 0"},
      {{"--latency-us", "nan"}, "--latency-us: must be a finite number from 0 to 1e+09"},
  };
  for (const auto& [flags, fragment] : cases) {
    std::vector<std::string> args = {"simulate", kTop6,         "--gpus-per-node", "4",
                                     "--model",  "olmoe-1b-7b", "--quiet"};
    args.insert(args.end(), flags.begin(), flags.end());
    SCOPED_TRACE(flags.front());
    const test::CommandRun r = exflow(args);
    expect_one_line_error(r, 2, fragment);
    EXPECT_LT(r.err.size(), 160u) << r.err;
  }
}

// A load ratio no GPU can reach binds nothing: the answer is the one without a limit.
TEST(CliNumbers, AHugeLoadRatioIsNoLimit) {
  TempDir dir;
  std::vector<std::int64_t> ids;
  for (int t = 0; t < 64; ++t) {
    for (int l = 0; l < 3; ++l) ids.push_back((t * 5 + l * (t % 3)) % 8);
  }
  test::write_npy(dir.file("t.npy"), ids, {64, 3});
  std::vector<std::string> answers;
  for (const char* ratio : {"none", "1e300", "1.79e308"}) {
    const test::CommandRun r =
        exflow({"solve", dir.file("t.npy"), "--gpus-per-node", "2", "--max-load-ratio", ratio,
                "--json", "--quiet", "--out-dir", dir.file(ratio)});
    ASSERT_EQ(r.code, 0) << ratio << ": " << r.err;
    const json j = json::parse(r.out);
    answers.push_back(test::read_bytes(j["placement"].get<std::string>()));
  }
  EXPECT_EQ(answers[1], answers[0]);
  EXPECT_EQ(answers[2], answers[0]);
}

TEST(CliTokenTimeLimit, TheTokenPhaseKeepsASmallLimit) {
  // Before the limit was checked inside the load repair, --token-time-limit 0.1 still spent
  // 10 to 30 s in the token phase of this trace. Graph and token phase get 0.5 s each; the bound
  // leaves room for a slow machine.
  TempDir dir;
  for (const char* redundant : {"0", "2"}) {
    SCOPED_TRACE(std::string("--redundant ") + redundant);
    const test::CommandRun r = exflow({"solve", kTop6, "--gpus-per-node", "4", "--time-limit",
                                       "0.5", "--token-time-limit", "0.5", "--redundant", redundant,
                                       "--json", "--quiet", "--out-dir", dir.file("out")});
    ASSERT_EQ(r.code, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_LT(j["solve_seconds"].get<double>(), 1.0 + 8.0);
    // With replicas the repair cut short may leave layers over the load limit, which the status
    // reports first.
    const std::string status = j["status"];
    EXPECT_TRUE(status == "time limit" || status == "load limit not met") << status;
  }
}

}  // namespace
}  // namespace exflow
