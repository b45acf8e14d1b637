// Outputs appear together or not at all: every output is checked before the work, a failure
// while writing one leaves none of them, and a signal leaves no temporaries behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "exflow/error.hpp"
#include "exflow/outputs.hpp"
#include "io/atomic_file.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

namespace fs = std::filesystem;
using test::CommandRun;
using test::TempDir;

CommandRun exflow_cli(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_CLI, args);
}

using test::expect_one_line_error;

// Every entry under `dir`, recursively, by path relative to it.
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    out.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool any_temporary(const std::string& dir) {
  for (const std::string& e : entries(dir)) {
    if (e.find(".tmp.") != std::string::npos) return true;
  }
  return false;
}

// A random top-1 trace [tokens, layers] over `experts` experts.
std::string write_trace(const TempDir& dir, std::int64_t tokens, int layers, int experts) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> id(0, experts - 1);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(tokens) * layers);
  for (auto& v : ids) v = id(rng);
  const std::string path = dir.file("trace.npy");
  test::write_npy(path, ids, {tokens, layers}, "<i4");
  return path;
}

TEST(OutputsBeforeWork, AnUnwritableServingOutputFailsBeforeTheSolveAndWritesNothing) {
  TempDir dir;
  const std::string trace = write_trace(dir, 2000, 4, 16);
  const std::string out = dir.file("out");
  test::write_bytes(dir.file("file"), "x");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--eplb", "/proc/nope/e.json"}, "--eplb /proc/nope/e.json"},
      {{"--sglang", dir.file("file") + "/s.json"}, "is not a directory"},
      {{"--sglang", dir.file("s.json"), "--eplb", "/proc/nope/e.json"}, "--eplb"},
  };
  for (const auto& [flags, fragment] : cases) {
    std::vector<std::string> args = {
        "solve",    trace, "--gpus-per-node", "4", "--quiet", "--time-limit", "60",
        "--method", "bcd", "--out-dir",       out};
    args.insert(args.end(), flags.begin(), flags.end());
    const auto start = std::chrono::steady_clock::now();
    expect_one_line_error(exflow_cli(args), 1, fragment);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30)
        << "the outputs are checked before the solve";
    EXPECT_FALSE(fs::exists(out)) << flags.back();
    EXPECT_FALSE(fs::exists(dir.file("s.json"))) << flags.back();
  }
}

TEST(OutputsBeforeWork, OutDirThatIsAFileOrATargetThatIsNotARegularFileIsRefused) {
  TempDir dir;
  const std::string trace = write_trace(dir, 500, 3, 8);
  test::write_bytes(dir.file("file"), "x");
  expect_one_line_error(exflow_cli({"solve", trace, "--gpus-per-node", "4", "--quiet", "--out-dir",
                                    dir.file("file")}),
                        1, "--out-dir");
  ASSERT_EQ(::mkfifo(dir.file("pipe.json").c_str(), 0644), 0);
  expect_one_line_error(exflow_cli({"solve", trace, "--gpus-per-node", "4", "--quiet", "--out-dir",
                                    dir.file("out"), "--sglang", dir.file("pipe.json")}),
                        1, "not a regular file");
  fs::create_directory(dir.file("d.json"));
  expect_one_line_error(exflow_cli({"solve", trace, "--gpus-per-node", "4", "--quiet", "--out-dir",
                                    dir.file("out"), "--eplb", dir.file("d.json")}),
                        1, "is a directory");
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

TEST(OutputsBeforeWork, TwoOutputsNamingTheSameFileAreAUsageError) {
  TempDir dir;
  const std::string trace = write_trace(dir, 500, 3, 8);
  expect_one_line_error(
      exflow_cli({"solve", trace, "--gpus-per-node", "4", "--quiet", "--out-dir", dir.file("out"),
                  "--sglang", dir.file("x.json"), "--eplb", dir.file("x.json")}),
      2, "--sglang and --eplb name the same file");
}

TEST(OutputsBeforeWork, ConvertAndReportCheckTheirOutputFirst) {
  TempDir dir;
  test::write_bytes(dir.file("in.jsonl"), "{\"topk_ids\": [[[0]]]}\n");
  expect_one_line_error(exflow_cli({"convert", dir.file("in.jsonl"), "-o", "/proc/nope/t.npy"}), 1,
                        "/proc/nope/t.npy");
  const std::string trace = write_trace(dir, 500, 3, 8);
  fs::create_directory(dir.file("r.html"));
  expect_one_line_error(
      exflow_cli({"report", trace, "--gpus-per-node", "4", "--quiet", "-o", dir.file("r.html")}), 1,
      "is a directory");
}

TEST(OutputSet, AFailedLaterOutputLeavesNoEarlierOne) {
  TempDir dir;
  test::write_bytes(dir.file("file"), "x");
  EXPECT_THROW(
      {
        OutputSet outputs;
        io::write_file_atomically(dir.file("a.csv"), "first");
        EXPECT_FALSE(fs::exists(dir.file("a.csv"))) << "staged, not yet published";
        io::write_file_atomically(dir.file("file") + "/b.json", "second");
        outputs.commit();
      },
      IoError);
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"file"});
}

TEST(OutputSet, AFailedRenameRemovesWhatTheCommitPublished) {
  TempDir dir;
  {
    OutputSet outputs;
    io::write_file_atomically(dir.file("a.csv"), "first");
    io::write_file_atomically(dir.file("b.json"), "second");
    // b.json becomes a non-empty directory before the commit: its rename fails.
    fs::create_directories(dir.file("b.json/inside"));
    EXPECT_ERROR(IoError, outputs.commit(), "b.json: cannot rename into place");
  }
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"b.json", "b.json/inside"}));
}

TEST(OutputSet, CommitPublishesEveryFileAndWritesOutsideASetArePublishedAtOnce) {
  TempDir dir;
  {
    OutputSet outputs;
    io::write_file_atomically(dir.file("a.csv"), "first");
    io::write_file_atomically(dir.file("sub/b.json"), "second");
    outputs.commit();
  }
  io::write_file_atomically(dir.file("c.txt"), "third");
  EXPECT_EQ(test::read_bytes(dir.file("a.csv")), "first");
  EXPECT_EQ(test::read_bytes(dir.file("sub/b.json")), "second");
  EXPECT_EQ(test::read_bytes(dir.file("c.txt")), "third");
  EXPECT_FALSE(any_temporary(dir.path()));
}

TEST(OutputSet, ADeviceOrPipeIsNeverReplacedByAFile) {
  TempDir dir;
  ASSERT_EQ(::mkfifo(dir.file("pipe.csv").c_str(), 0644), 0);
  EXPECT_ERROR(IoError, io::write_file_atomically(dir.file("pipe.csv"), "x"),
               "pipe.csv: cannot write, it is not a regular file");
  struct stat st {};
  ASSERT_EQ(::stat(dir.file("pipe.csv").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"pipe.csv"});
}

// A child process stages an output, then dies of `signal_number` before the commit.
TEST(TemporaryCleanup, ASignalRemovesStagedTemporariesAndStillKillsTheProcess) {
  for (int signal_number : {SIGTERM, SIGINT, SIGHUP}) {
    TempDir dir;
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      install_temporary_cleanup();
      OutputSet outputs;
      io::write_file_atomically(dir.file("a.csv"), "first");
      io::write_file_atomically(dir.file("b.json"), "second");
      ::raise(signal_number);
      ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << status;
    EXPECT_EQ(WTERMSIG(status), signal_number);
    EXPECT_TRUE(entries(dir.path()).empty()) << entries(dir.path()).front();
  }
}

// exflow solve with four outputs, killed with SIGTERM at times spread over its run: whatever
// it got to, no temporary is left, and the outputs are all there or none is.
TEST(TemporaryCleanup, SolveKilledAtAnyTimeLeavesNoTemporaries) {
  TempDir dir;
  const std::string trace = write_trace(dir, 20000, 24, 64);
  const auto args_in = [&](const std::string& out) {
    return std::vector<std::string>{EXFLOW_CLI,
                                    "solve",
                                    trace,
                                    "--gpus-per-node",
                                    "8",
                                    "--quiet",
                                    "--threads",
                                    "1",
                                    "--time-limit",
                                    "0.3",
                                    "--token-time-limit",
                                    "0.3",
                                    "--out-dir",
                                    out,
                                    "--sglang",
                                    out + "/s.json",
                                    "--eplb",
                                    out + "/e.json",
                                    "--vllm-ascend",
                                    out + "/v.json"};
  };
  const auto run_and_kill = [&](const std::string& out, double after_seconds) {
    const std::vector<std::string> args = args_in(out);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const auto start = std::chrono::steady_clock::now();
    const pid_t child = ::fork();
    if (child == 0) {
      const int null_fd = ::open("/dev/null", O_WRONLY);
      ::dup2(null_fd, 1);
      ::dup2(null_fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    int status = 0;
    if (after_seconds >= 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(after_seconds));
      ::kill(child, SIGTERM);
    }
    ::waitpid(child, &status, 0);
    return std::make_pair(
        status, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };
  const auto [status, seconds] = run_and_kill(dir.file("full"), -1);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ASSERT_EQ(entries(dir.file("full")).size(), 4u);
  constexpr int kKills = 8;
  for (int i = 0; i < kKills; ++i) {
    const std::string out = dir.file("killed" + std::to_string(i));
    run_and_kill(out, seconds * (i + 0.5) / kKills);
    if (!fs::exists(out)) continue;
    const std::vector<std::string> left = entries(out);
    EXPECT_FALSE(any_temporary(out)) << "killed after " << seconds * (i + 0.5) / kKills << " s";
    EXPECT_TRUE(left.empty() || left.size() == 4u) << left.size() << " outputs";
  }
}

}  // namespace
}  // namespace exflow
