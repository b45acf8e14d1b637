// exflow-run end to end: the reference mode in one process, and the baseline, exflow and deepep
// modes under mpirun (with more ranks than this machine has cores, and as root where the tests run
// as root): final states bit for bit equal to the reference, all-to-all bytes equal to the
// evaluator's traffic matrices for every layer, phase and rank pair, and one error line with a
// non-zero status on every rank for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/formats.hpp"
#include "exflow/placement.hpp"
#include "exflow/runtime.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow::runtime {
namespace {

using nlohmann::json;

Workload workload(int batch, int seq_len, std::optional<int> prefill = std::nullopt) {
  Workload w;
  w.batch = batch;
  w.seq_len = seq_len;
  w.prefill = prefill;
  return w;
}

// ---------------------------------------------------------------------------------------------
// exflow-run CLI

using CliRun = test::CommandRun;

CliRun exflow_run(const std::vector<std::string>& args) {
  return test::run_command(EXFLOW_RUN_CLI, args);
}

// exflow-run's refusals: test::expect_one_line_error with its program name.
void expect_run_error(const CliRun& r, int code, const std::string& fragment) {
  test::expect_one_line_error(r, code, fragment, "exflow-run");
}

const std::string kExample = std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.npy";
const std::vector<std::string> kSmall = {"--trace",  kExample, "--mode",    "reference",
                                         "--batch",  "2",      "--seq-len", "8",
                                         "--hidden", "32",     "--ffn",     "64"};

std::vector<std::string> small_args(std::vector<std::string> more) {
  std::vector<std::string> args = kSmall;
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

TEST(RunCli, ReferenceJsonMatchesTheLibrary) {
  const CliRun r = exflow_run(small_args({"--json"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const json j = json::parse(r.out);
  for (const char* key : {"mode", "tokens", "layers", "experts", "k", "hidden", "ffn", "checksum",
                          "seconds", "tokens_per_second", "options"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["mode"], "reference");
  EXPECT_EQ(j["tokens"], 16);
  EXPECT_EQ(j["layers"], 26);
  EXPECT_EQ(j["experts"], 64);
  EXPECT_EQ(j["k"], 6);
  EXPECT_EQ(j["hidden"], 32);
  EXPECT_EQ(j["ffn"], 64);
  EXPECT_EQ(j["prefill"], 4);
  EXPECT_EQ(j["steps"], 5);
  EXPECT_EQ(j["options"]["batch"], 2);
  EXPECT_EQ(j["options"]["seq_len"], 8);
  EXPECT_EQ(j["options"]["trace"], kExample);
  EXPECT_TRUE(j["placement"].is_null());
  const std::string sum = j["checksum"].get<std::string>();
  EXPECT_EQ(sum.size(), 16u);
  EXPECT_EQ(sum.find_first_not_of("0123456789abcdef"), std::string::npos) << sum;

  // The same run in process gives the same checksum.
  const Trace trace = Trace::open(kExample);
  ModelConfig c;
  c.layers = trace.layers();
  c.experts = trace.experts();
  c.k = trace.k();
  c.hidden = 32;
  c.ffn = 64;
  EXPECT_EQ(checksum_hex(run_reference(trace, c, workload(2, 8)).checksum), sum);
}

TEST(RunCli, PlacementIsCheckedAndDoesNotChangeTheOutput) {
  test::TempDir dir;
  write_placement_csv(dir.file("p.csv"), vanilla_placement(26, 64, Topology(1, 8)));
  const CliRun plain = exflow_run(small_args({"--json"}));
  const CliRun placed = exflow_run(small_args({"--placement", dir.file("p.csv"), "--json"}));
  ASSERT_EQ(placed.code, 0) << placed.err;
  const json a = json::parse(plain.out), b = json::parse(placed.out);
  EXPECT_EQ(b["placement"]["gpus"], 8);
  EXPECT_EQ(a["checksum"], b["checksum"]);

  write_placement_csv(dir.file("q.csv"), vanilla_placement(2, 64, Topology(1, 8)));
  expect_run_error(exflow_run(small_args({"--placement", dir.file("q.csv")})), 1, "q.csv");
  // A JSON placement holds slots: its GPUs need the topology.
  write_sglang_expert_location(dir.file("p.json"), vanilla_placement(26, 64, Topology(1, 8)));
  expect_run_error(exflow_run(small_args({"--placement", dir.file("p.json")})), 2,
                   "give --gpus-per-node");
  const CliRun from_json =
      exflow_run(small_args({"--placement", dir.file("p.json"), "--gpus-per-node", "8", "--json"}));
  ASSERT_EQ(from_json.code, 0) << from_json.err;
  EXPECT_EQ(json::parse(from_json.out)["placement"]["gpus"], 8);
  EXPECT_EQ(json::parse(from_json.out)["checksum"], a["checksum"]);
}

TEST(RunCli, TextSummary) {
  const CliRun r = exflow_run(small_args({"--activation", "gelu", "--combine", "uniform"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("checksum"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gelu, combine uniform"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("16 tokens"), std::string::npos) << r.out;
}

TEST(RunCli, BadInputAndUsage) {
  expect_run_error(exflow_run({"--trace", kExample, "--mode", "reference", "--batch", "1000",
                               "--hidden", "8", "--ffn", "8"}),
                   1, "needs 64000 tokens (batch 1000 x seq-len 64), the trace has 8222");
  expect_run_error(exflow_run(small_args({"--heads", "3"})), 2, "not divisible by heads 3");
  expect_run_error(exflow_run(small_args({"--prefill", "9"})), 2, "prefill 9");
  expect_run_error(exflow_run(small_args({"--experts", "10"})), 1, "out of range");
  expect_run_error(
      exflow_run({"--trace", kExample, "--mode", "ring", "--batch", "2", "--seq-len", "8"}), 2,
      "--mode");
  expect_run_error(exflow_run({"--mode", "reference"}), 2, "--trace");
  const std::string bad = std::string(EXFLOW_SOURCE_DIR) + "/README.md";
  const CliRun r = exflow_run({"--trace", bad, "--mode", "reference"});
  EXPECT_EQ(r.code, 1) << r.err;
}

// ---------------------------------------------------------------------------------------------
// baseline and exflow under mpirun

// mpirun refuses root without these, and a container may forbid the cross-memory attach that
// Open MPI's shared-memory transport uses for large messages.
void mpi_environment() {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
  // Under scripts/test --sanitize the ranks keep AddressSanitizer's and UBSan's checks but not
  // LeakSanitizer's: Open MPI's plugins allocate memory they never free and are unloaded by
  // MPI_Finalize, which leaves the reports without a module to suppress them by. The runtime's
  // own code is leak-checked by runtime_test, which runs it without MPI.
  if (const char* asan = std::getenv("ASAN_OPTIONS")) {
    const std::string options = std::string(asan) + ":detect_leaks=0";
    setenv("ASAN_OPTIONS", options.c_str(), 1);
  }
}

CliRun mpirun(int ranks, const std::vector<std::string>& args) {
  mpi_environment();
  std::vector<std::string> all = {"-np", std::to_string(ranks), "--oversubscribe", EXFLOW_RUN_CLI};
  all.insert(all.end(), args.begin(), args.end());
  return test::run_command(EXFLOW_MPIEXEC, all);
}

const std::string kSolved =
    std::string(EXFLOW_SOURCE_DIR) + "/examples/esft-intent-top6.solved-1x4.csv";

struct Case {
  int batch = 2;
  int seq_len = 8;
  int prefill = 4;
  int topk = 6;
  int hidden = 32;
};

std::vector<std::string> parallel_args(const std::string& mode, const Case& c,
                                       std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"--trace",   kExample,
                                   "--mode",    mode,
                                   "--batch",   std::to_string(c.batch),
                                   "--seq-len", std::to_string(c.seq_len),
                                   "--prefill", std::to_string(c.prefill),
                                   "--topk",    std::to_string(c.topk),
                                   "--hidden",  std::to_string(c.hidden),
                                   "--heads",   "4",
                                   "--ffn",     "48",
                                   "--json"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::string reference_checksum(const Case& c) {
  const Trace trace = Trace::open(kExample);
  ModelConfig m;
  m.layers = trace.layers();
  m.experts = trace.experts();
  m.k = c.topk;
  m.hidden = c.hidden;
  m.heads = 4;
  m.ffn = 48;
  return checksum_hex(run_reference(trace, m, workload(c.batch, c.seq_len, c.prefill)).checksum);
}

// The evaluator's traffic for the workload's tokens, in bytes: [L, 2, G, G].
std::vector<std::int64_t> predicted_bytes(const Case& c, const Placement& p, const Topology& topo,
                                          Scheme scheme) {
  const Trace trace = Trace::open(kExample);
  std::vector<std::int32_t> ids;
  const std::int64_t tokens = static_cast<std::int64_t>(c.batch) * c.seq_len;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < trace.layers(); ++l) {
      for (int k = 0; k < c.topk; ++k) ids.push_back(trace.at(t, l, k));
    }
  }
  const Trace head = Trace::from_ids(ids, tokens, trace.layers(), c.topk, trace.experts());
  EvalOptions o;
  o.scheme = scheme;
  o.sequence_length = c.seq_len;
  o.traffic = true;
  Metrics m = evaluate(head, p, topo, o);
  for (std::int64_t& v : m.traffic) v *= 4LL * c.hidden;
  return m.traffic;
}

// The matrices of a JSON report (exflow-run's, or one configuration of exflow simulate's),
// [L, 2, G, G] like the evaluator's.
std::vector<std::int64_t> measured_bytes(const json& j, const char* what = "_bytes") {
  std::vector<std::int64_t> out;
  for (const json& layer : j["per_layer"]) {
    for (const char* phase : {"dispatch", "combine"}) {
      for (const json& row : layer[std::string(phase) + what]) {
        for (const json& v : row) out.push_back(v.get<std::int64_t>());
      }
    }
  }
  return out;
}

json run_ok(int ranks, const std::vector<std::string>& args) {
  const CliRun r = mpirun(ranks, args);
  EXPECT_EQ(r.code, 0) << r.err;
  if (r.code != 0) return json();
  return json::parse(r.out);
}

void expect_matches_cost_model(const json& j, const Case& c, const Placement& p,
                               const Topology& topo, Scheme scheme) {
  const std::vector<std::int64_t> predicted = predicted_bytes(c, p, topo, scheme);
  const std::vector<std::int64_t> measured = measured_bytes(j);
  ASSERT_EQ(measured.size(), predicted.size());
  for (std::size_t i = 0; i < predicted.size(); ++i) {
    EXPECT_EQ(measured[i], predicted[i]) << "entry " << i << " of [L, 2, G, G]";
  }
  std::int64_t total = 0;
  for (std::int64_t v : predicted) total += v;
  EXPECT_EQ(j["alltoall_bytes"].get<std::int64_t>(), total);
  EXPECT_EQ(j["cost_model"]["matches"], true);
  // Messages: at least one per non-empty matrix entry, never more than its rows.
  const std::vector<std::int64_t> messages = measured_bytes(j, "_messages");
  for (std::size_t i = 0; i < predicted.size(); ++i) {
    EXPECT_EQ(messages[i] > 0, predicted[i] > 0) << i;
    EXPECT_LE(messages[i] * 4 * c.hidden, predicted[i]) << i;
  }
}

Placement random_placement(int gpus, std::uint32_t seed, int replicas_per_gpu) {
  std::mt19937 rng(seed);
  Topology topo(1, gpus);
  Placement p(26, 64, gpus);
  for (int l = 0; l < 26; ++l) {
    std::vector<int> order(64);
    for (int e = 0; e < 64; ++e) order[static_cast<std::size_t>(e)] = e % gpus;
    std::shuffle(order.begin(), order.end(), rng);
    for (int e = 0; e < 64; ++e) p.set(l, e, order[static_cast<std::size_t>(e)]);
    for (int g = 0; g < gpus; ++g) {
      for (int r = 0; r < replicas_per_gpu; ++r) {
        for (int tries = 0; tries < 100; ++tries) {
          const int e = static_cast<int>(rng() % 64);
          const std::vector<int> copies = p.copies(l, e);
          if (std::find(copies.begin(), copies.end(), g) == copies.end()) {
            p.add_replica(l, e, g);
            break;
          }
        }
      }
    }
  }
  return p;
}

TEST(MpiRun, BothModesReproduceTheReferenceAndMoveWhatTheCostModelPredicts) {
  const Case c;
  const std::string expected = reference_checksum(c);
  test::TempDir dir;
  const Topology topo(1, 4);
  const Placement vanilla = vanilla_placement(26, 64, topo);
  const Placement solved = read_placement_csv(kSolved, 26, 64, 4);
  const Placement random = random_placement(4, 17, 0);
  const Placement replicated = random_placement(4, 23, 2);
  write_placement_csv(dir.file("random.csv"), random);
  write_placement_csv(dir.file("replicated.csv"), replicated);
  const std::vector<std::pair<std::string, const Placement*>> placements = {
      {"", &vanilla},
      {kSolved, &solved},
      {dir.file("random.csv"), &random},
      {dir.file("replicated.csv"), &replicated}};
  for (const auto& [path, placement] : placements) {
    for (const std::string mode : {"baseline", "exflow"}) {
      SCOPED_TRACE(mode + " " + (path.empty() ? "vanilla" : path));
      std::vector<std::string> more;
      if (!path.empty()) more = {"--placement", path};
      const json j = run_ok(4, parallel_args(mode, c, more));
      if (j.is_null()) continue;
      EXPECT_EQ(j["checksum"], expected);
      EXPECT_EQ(j["ranks"], 4);
      EXPECT_EQ(j["expert_rows"], 16 * 26 * 6);
      expect_matches_cost_model(j, c, *placement, topo,
                                mode == "baseline" ? Scheme::kBaseline : Scheme::kContextCoherent);
      if (mode == "baseline") {
        EXPECT_EQ(j["allgather_bytes"], 0);
      } else {
        // Every key and value of layers 1..L-1 reaches the 3 other ranks: 16 tokens x 25 layers
        // x 2 x 32 floats x 4 bytes x 3.
        EXPECT_EQ(j["allgather_bytes"], 16 * 25 * 2 * 32 * 4 * 3);
      }
    }
  }
}

TEST(MpiRun, TopOneTopTwoAndTwoNodesWithMoreRanksThanCores) {
  // k = 1: no combine at all in exflow mode; the plan skips the empty collectives.
  Case one;
  one.topk = 1;
  one.prefill = 0;
  const json a = run_ok(4, parallel_args("exflow", one));
  ASSERT_FALSE(a.is_null());
  EXPECT_EQ(a["checksum"], reference_checksum(one));
  const Topology topo(1, 4);
  expect_matches_cost_model(a, one, vanilla_placement(26, 64, topo), topo,
                            Scheme::kContextCoherent);
  for (const json& layer : a["per_layer"]) {
    for (const json& row : layer["combine_bytes"]) {
      for (const json& v : row) EXPECT_EQ(v, 0);
    }
  }

  // 8 ranks as 2 nodes x 4, top-2, prefill of every position at once.
  Case two;
  two.topk = 2;
  two.prefill = 8;
  two.batch = 3;
  const json b = run_ok(8, parallel_args("exflow", two, {"--gpus-per-node", "4"}));
  ASSERT_FALSE(b.is_null());
  EXPECT_EQ(b["checksum"], reference_checksum(two));
  EXPECT_EQ(b["nodes"], 2);
  const Topology two_nodes(2, 4);
  expect_matches_cost_model(b, two, vanilla_placement(26, 64, two_nodes), two_nodes,
                            Scheme::kContextCoherent);
  const json base = run_ok(8, parallel_args("baseline", two, {"--gpus-per-node", "4"}));
  ASSERT_FALSE(base.is_null());
  EXPECT_EQ(base["checksum"], reference_checksum(two));
  expect_matches_cost_model(base, two, vanilla_placement(26, 64, two_nodes), two_nodes,
                            Scheme::kBaseline);
}

TEST(MpiRun, DeepEPReproducesTheReferenceAndMovesTheEvaluatorsDeepEPTraffic) {
  // 2 nodes x 2 GPUs: a token's rows to the other node go once to the GPU with its owner's local
  // index there, which forwards them. Top-6 on vanilla and on a placement with replicas, top-2
  // with every position in the prefill.
  test::TempDir dir;
  const Topology topo(2, 2);
  const Placement vanilla = vanilla_placement(26, 64, topo);
  const Placement replicated = random_placement(4, 29, 2);
  write_placement_csv(dir.file("replicated.csv"), replicated);
  Case two;
  two.topk = 2;
  two.prefill = 8;
  two.batch = 3;
  const std::vector<std::tuple<Case, std::string, const Placement*>> runs = {
      {Case{}, "", &vanilla},
      {Case{}, dir.file("replicated.csv"), &replicated},
      {two, "", &vanilla}};
  for (const auto& [c, path, placement] : runs) {
    SCOPED_TRACE("top-" + std::to_string(c.topk) + " " + (path.empty() ? "vanilla" : path));
    std::vector<std::string> more = {"--gpus-per-node", "2"};
    if (!path.empty()) more.insert(more.end(), {"--placement", path});
    const json j = run_ok(4, parallel_args("deepep", c, more));
    if (j.is_null()) continue;
    EXPECT_EQ(j["mode"], "deepep");
    EXPECT_EQ(j["checksum"], reference_checksum(c));
    EXPECT_EQ(j["nodes"], 2);
    EXPECT_EQ(j["expert_rows"], c.batch * c.seq_len * 26 * c.topk);
    EXPECT_EQ(j["allgather_bytes"], 0);
    expect_matches_cost_model(j, c, *placement, topo, Scheme::kDeepEP);
  }
}

TEST(MpiRun, SolvedPlacementMovesFewerBytesThanVanillaAndBaseline) {
  // The bundled real trace at the default workload shape (8 sequences of 64 tokens), smaller
  // tensors: bytes scale with H, the comparison does not.
  Case c;
  c.batch = 8;
  c.seq_len = 64;
  c.prefill = 32;
  c.hidden = 16;
  const json solved = run_ok(4, parallel_args("exflow", c, {"--placement", kSolved}));
  const json vanilla = run_ok(4, parallel_args("exflow", c));
  const json baseline = run_ok(4, parallel_args("baseline", c));
  ASSERT_FALSE(solved.is_null() || vanilla.is_null() || baseline.is_null());
  const auto bytes = [](const json& j) { return j["alltoall_bytes"].get<std::int64_t>(); };
  EXPECT_LT(bytes(solved), bytes(vanilla));
  EXPECT_LT(bytes(vanilla), bytes(baseline));
  EXPECT_EQ(solved["checksum"], vanilla["checksum"]);
  EXPECT_EQ(baseline["checksum"], vanilla["checksum"]);
}

TEST(MpiRun, SimulatorByteMatricesEqualTheMeasuredBytes) {
  // `exflow simulate` on the workload's tokens (as a trace file) with exflow-run's sizes: one
  // transfer = H float32 values, keys and values 2 x H float32 per token and layer, baseline
  // owners by sequence. Its whole-trace matrices must be exflow-run's per-layer matrices.
  const Case c;
  test::TempDir dir;
  const Trace trace = Trace::open(kExample);
  const std::int64_t tokens = static_cast<std::int64_t>(c.batch) * c.seq_len;
  std::vector<std::int64_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < trace.layers(); ++l) {
      for (int k = 0; k < c.topk; ++k) ids.push_back(trace.at(t, l, k));
    }
  }
  test::write_npy(dir.file("head.npy"), ids, {tokens, trace.layers(), c.topk});
  const CliRun sim = test::run_command(EXFLOW_CLI, {"simulate",
                                                    dir.file("head.npy"),
                                                    "--experts",
                                                    "64",
                                                    "--gpus-per-node",
                                                    "4",
                                                    "--placement",
                                                    kSolved,
                                                    "--hidden",
                                                    std::to_string(c.hidden),
                                                    "--dtype-bytes",
                                                    "4",
                                                    "--kv-bytes-per-token",
                                                    std::to_string(8 * c.hidden),
                                                    "--seq-len",
                                                    std::to_string(c.seq_len),
                                                    "--tokens-per-step",
                                                    std::to_string(tokens),
                                                    "--matrices",
                                                    "--json",
                                                    "--quiet"});
  ASSERT_EQ(sim.code, 0) << sim.err;
  const json s = json::parse(sim.out);
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {"baseline/vanilla", {"baseline"}},
      {"exflow/vanilla", {"exflow"}},
      {"exflow/placement", {"exflow", "--placement", kSolved}}};
  for (std::size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE(runs[i].first);
    const json& config = s["configurations"][i];
    ASSERT_EQ(config["name"], runs[i].first);
    std::vector<std::string> more(runs[i].second.begin() + 1, runs[i].second.end());
    const json measured = run_ok(4, parallel_args(runs[i].second[0], c, more));
    ASSERT_FALSE(measured.is_null());
    EXPECT_EQ(measured_bytes(config), measured_bytes(measured));
    EXPECT_EQ(config["alltoall_bytes_per_step"].get<double>(),
              measured["alltoall_bytes"].get<double>());
    EXPECT_EQ(config["allgather_bytes_per_step"].get<double>(),
              measured["allgather_bytes"].get<double>());
  }
}

void expect_one_error_line(const CliRun& r, int code, const std::string& fragment) {
  EXPECT_EQ(r.code == 0, code == 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  std::size_t lines = 0, at = 0;
  while ((at = r.err.find("exflow-run: error: ", at)) != std::string::npos) {
    ++lines;
    ++at;
  }
  EXPECT_EQ(lines, 1u) << r.err;
  EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
}

TEST(MpiRun, BadInputIsOneLineAndANonZeroExitOnEveryRank) {
  const Case c;
  expect_one_error_line(mpirun(3, parallel_args("exflow", c, {"--gpus-per-node", "2"})), 2,
                        "the job has 3 ranks, the topology 1 nodes x 2 GPUs per node");
  test::TempDir dir;
  write_placement_csv(dir.file("eight.csv"), vanilla_placement(26, 64, Topology(1, 8)));
  expect_one_error_line(
      mpirun(4, parallel_args("baseline", c, {"--placement", dir.file("eight.csv")})), 1,
      "eight.csv");
  Case big = c;
  big.batch = 2000;
  expect_one_error_line(mpirun(2, parallel_args("exflow", big)), 1,
                        "needs 16000 tokens (batch 2000 x seq-len 8), the trace has 8222");
  Case odd = c;
  odd.hidden = 30;
  expect_one_error_line(mpirun(2, parallel_args("exflow", odd)), 2, "not divisible by heads 4");
  Case wide = c;
  wide.topk = 7;
  expect_one_error_line(mpirun(2, parallel_args("exflow", wide)), 2, "7");
  expect_one_error_line(mpirun(2, parallel_args("exflow", c, {"--bogus"})), 2, "--bogus");
}

// One rank per argument list (mpirun's MPMD form: -np 1 prog args : -np 1 prog other-args).
CliRun mpirun_per_rank(const std::vector<std::vector<std::string>>& per_rank) {
  mpi_environment();
  std::vector<std::string> all = {"--oversubscribe"};
  for (std::size_t i = 0; i < per_rank.size(); ++i) {
    if (i > 0) all.push_back(":");
    all.insert(all.end(), {"-np", "1", EXFLOW_RUN_CLI});
    all.insert(all.end(), per_rank[i].begin(), per_rank[i].end());
  }
  return test::run_command(EXFLOW_MPIEXEC, all);
}

TEST(MpiRun, RanksGivenDifferentOptionsAgreeOnOneLineBeforeAnyWork) {
  const Case c;
  const auto on_rank_1 = [&](std::vector<std::string> more, const std::string& mode = "exflow") {
    return mpirun_per_rank({parallel_args("exflow", c), parallel_args(mode, c, more)});
  };
  expect_one_error_line(on_rank_1({"--bogus"}), 2, "--bogus");
  expect_one_error_line(on_rank_1({"--placement", "/nonexistent/p.csv"}), 2, "/nonexistent/p.csv");
  expect_one_error_line(on_rank_1({}, "baseline"), 2,
                        "rank 1 was given --mode \"baseline\", rank 0 \"exflow\"");
  Case longer = c;
  longer.seq_len = 16;
  expect_one_error_line(
      mpirun_per_rank({parallel_args("exflow", c), parallel_args("exflow", longer)}), 2,
      "rank 1 was given --seq-len 16, rank 0 8");
  Case wider = c;
  wider.hidden = 64;
  expect_one_error_line(mpirun_per_rank({parallel_args("exflow", c), parallel_args("exflow", wider),
                                         parallel_args("exflow", c)}),
                        2, "rank 1 was given --hidden 64");
  expect_one_error_line(on_rank_1({"--placement", kSolved}), 2, "--placement");
  expect_one_error_line(mpirun(2, parallel_args("reference", c)), 2,
                        "--mode reference runs in one process");
}

TEST(MpiRun, ATraceOrPlacementDifferingOnOneRankIsRefused) {
  const Case c;
  test::TempDir dir;
  // The example with one id the run replays changed (token 3, layer 5, slot 0).
  const Trace example = Trace::open(kExample);
  std::vector<std::int64_t> ids;
  for (std::int64_t t = 0; t < example.tokens(); ++t) {
    for (int l = 0; l < example.layers(); ++l) {
      for (int k = 0; k < example.k(); ++k) ids.push_back(example.at(t, l, k));
    }
  }
  std::size_t changed = (3 * static_cast<std::size_t>(example.layers()) + 5) * example.k();
  ids[changed] = (ids[changed] + 1) % example.experts();
  while (std::count(ids.begin() + changed - changed % example.k(),
                    ids.begin() + changed - changed % example.k() + example.k(),
                    ids[changed]) > 1) {
    ids[changed] = (ids[changed] + 1) % example.experts();
  }
  test::write_npy(dir.file("other.npy"), ids, {example.tokens(), example.layers(), example.k()},
                  "<i2");
  std::vector<std::string> other = parallel_args("exflow", c);
  other[1] = dir.file("other.npy");
  expect_one_error_line(mpirun_per_rank({parallel_args("exflow", c), other}), 1,
                        "rank 1's trace " + dir.file("other.npy") + " differs from rank 0's");

  // The same trace under another path is the same input.
  std::filesystem::copy_file(kExample, dir.file("copy.npy"));
  std::vector<std::string> copy = parallel_args("exflow", c);
  copy[1] = dir.file("copy.npy");
  EXPECT_EQ(mpirun_per_rank({parallel_args("exflow", c), copy}).code, 0);

  write_placement_csv(dir.file("vanilla.csv"), vanilla_placement(26, 64, Topology(1, 4)));
  expect_one_error_line(
      mpirun_per_rank({parallel_args("exflow", c, {"--placement", kSolved}),
                       parallel_args("exflow", c, {"--placement", dir.file("vanilla.csv")}),
                       parallel_args("exflow", c, {"--placement", kSolved}),
                       parallel_args("exflow", c, {"--placement", kSolved})}),
      1, "rank 1's placement " + dir.file("vanilla.csv") + " differs from rank 0's");
}

TEST(MpiRun, PlacementsAreReadAndCheckedAsEvalDoes) {
  const Case c;
  test::TempDir dir;
  // Expert 0 of layer 0 moved from GPU 0 to GPU 1: 15 and 17 experts, refused as eval refuses it.
  const Placement vanilla = vanilla_placement(26, 64, Topology(1, 4));
  std::vector<int> gpu_of = vanilla.gpu_of();
  gpu_of[0] = 1;
  write_placement_csv(dir.file("unbalanced.csv"), Placement(26, 64, 4, gpu_of));
  expect_one_error_line(
      mpirun(4, parallel_args("exflow", c, {"--placement", dir.file("unbalanced.csv")})), 1,
      "unbalanced.csv");
  const CliRun eval = test::run_command(
      EXFLOW_CLI, {"eval", kExample, dir.file("unbalanced.csv"), "--gpus-per-node", "4"});
  EXPECT_EQ(eval.code, 1) << eval.err;

  // SGLang's expert-location JSON of the solved placement runs as its CSV does.
  const Placement solved = read_placement_csv(kSolved, 26, 64, 4);
  write_sglang_expert_location(dir.file("solved.json"), solved);
  const json from_csv = run_ok(4, parallel_args("exflow", c, {"--placement", kSolved}));
  const json from_json =
      run_ok(4, parallel_args("exflow", c, {"--placement", dir.file("solved.json")}));
  EXPECT_EQ(from_json["checksum"], reference_checksum(c));
  EXPECT_EQ(from_json["alltoall_bytes"], from_csv["alltoall_bytes"]);
}

}  // namespace
}  // namespace exflow::runtime
