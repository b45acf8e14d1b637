// End-to-end tests of `exflow report`: a self-contained HTML file that renders, and its bad usage.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "support/test_support.hpp"

namespace exflow {
namespace {

using CliRun = test::CommandRun;

CliRun exflow(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_CLI, args);
}

using test::expect_one_line_error;

// A small top-2 trace with affinity: token t follows chain t mod 8 through 6 layers of 16 experts.
std::string small_affine_trace(test::TempDir& dir) {
  std::vector<std::int64_t> ids;
  const int tokens = 1200, layers = 6;
  for (int t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      const int chain = (t * 7 + (t % 5 == 0 ? l : 0)) % 8;
      ids.push_back((chain * 2 + l) % 16);
      ids.push_back((chain * 2 + l + 5) % 16);
    }
  }
  test::write_npy(dir.file("affine.npy"), ids, {tokens, layers, 2});
  return dir.file("affine.npy");
}

std::string chromium_path() {
  const CliRun r =
      test::run_command("/bin/sh", {"-c", "command -v chromium || command -v chromium-browser"});
  std::string path = r.out;
  while (!path.empty() && (path.back() == '\n' || path.back() == '\r')) path.pop_back();
  return r.code == 0 ? path : std::string();
}

TEST(Cli, ReportIsSelfContainedAndRendersInHeadlessChromium) {
  test::TempDir dir;
  const std::string trace = small_affine_trace(dir);
  const std::string html = dir.file("report.html");
  const CliRun r = exflow({"report", trace, "--gpus-per-node", "2", "--nodes", "2",
                           "--convergence-points", "3", "-o", html, "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("3 convergence points, 5 heatmaps"), std::string::npos) << r.out;
  const std::string page = test::read_bytes(html);
  // Self-contained: nothing to fetch.
  for (const char* remote : {"src=\"http", "href=\"http", "url(http", "<script", "<link"}) {
    EXPECT_EQ(page.find(remote), std::string::npos) << remote;
  }
  EXPECT_NE(page.find("data:image/png;base64,"), std::string::npos);
  for (const char* section :
       {"Projected communication time per decode step", "Tokens that stay on their GPU",
        "Token load per GPU and layer", "How many tokens are enough", "Inter-layer expert affinity",
        "exflow/solved"}) {
    EXPECT_NE(page.find(section), std::string::npos) << section;
  }

  const std::string chromium = chromium_path();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup installs it)";
  const std::vector<std::string> common = {"--headless",
                                           "--no-sandbox",
                                           "--disable-gpu",
                                           "--hide-scrollbars",
                                           "--user-data-dir=" + dir.file("profile"),
                                           "--enable-logging=stderr",
                                           "--v=0",
                                           "--window-size=1280,2000"};
  std::vector<std::string> dump = common;
  dump.push_back("--dump-dom");
  dump.push_back("file://" + html);
  const CliRun dom = test::run_command(chromium, dump);
  ASSERT_EQ(dom.code, 0) << dom.err;
  // The browser parsed every chart: 1 simulation, 1 locality, 2 loads, 1 convergence and 5
  // heatmaps, and logged no console error (a failed image or a script error would).
  std::size_t svgs = 0;
  for (std::size_t at = dom.out.find("<svg"); at != std::string::npos;
       at = dom.out.find("<svg", at + 1)) {
    ++svgs;
  }
  EXPECT_EQ(svgs, 10u) << dom.out.substr(0, 2000);
  EXPECT_EQ(dom.err.find(":CONSOLE"), std::string::npos) << dom.err;

  std::vector<std::string> shot = common;
  shot.push_back("--screenshot=" + dir.file("report.png"));
  shot.push_back("file://" + html);
  const CliRun png = test::run_command(chromium, shot);
  ASSERT_EQ(png.code, 0) << png.err;
  const std::string image = test::read_bytes(dir.file("report.png"));
  EXPECT_GT(image.size(), 20000u);
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

TEST(Cli, ReportBadUsage) {
  test::TempDir dir;
  const std::string trace = small_affine_trace(dir);
  expect_one_line_error(
      exflow({"report", trace, "--gpus-per-node", "3", "-o", dir.file("r.html"), "--quiet"}), 2,
      "the expert count must be divisible by the GPU count");
  expect_one_line_error(exflow({"report", trace, "--gpus-per-node", "2", "--nodes", "2", "--model",
                                "gpt", "-o", dir.file("r.html"), "--quiet"}),
                        2, "unknown model preset 'gpt'");
  expect_one_line_error(exflow({"report", trace, "--gpus-per-node", "2", "--nodes", "2", "-o",
                                dir.file("missing-dir/r.html"), "--quiet"}),
                        1, "missing-dir");
}

}  // namespace
}  // namespace exflow
