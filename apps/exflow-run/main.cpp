// exflow-run: a small MoE transformer whose router replays a trace, run expert-parallel on MPI
// (baseline, exflow, deepep) or, in `reference` mode, in one process without MPI, as the ground
// truth (docs/runtime.md).
//
// The CLI edge: every library error becomes one line on stderr and an exit status (0 success,
// 1 bad input, 2 bad usage). Under a launcher (mpirun) every rank initialises MPI, and before any
// work the ranks agree, in this order, that each parsed its command line, that each was given
// rank 0's options, that each read and checked its inputs, and that the ids the run replays and
// the placement hash the same on every rank. The line of a failed step comes from one rank (the
// lowest that failed) and every rank exits with the same status; an error in the middle of a run
// aborts the job (MPI_Abort), which no rank can wait on.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/expert_parallel.hpp"
#include "exflow/formats.hpp"
#include "exflow/outputs.hpp"
#include "exflow/placement.hpp"
#include "exflow/runtime.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "run_options.hpp"

namespace exflow::cli {
namespace {

namespace rt = exflow::runtime;
using nlohmann::json;

// GPU ids a placement may name when no GPU count is given (the reference runs on none).
constexpr int kMaxPlacementGpus = 1 << 16;

std::string fixed(double v, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

// The rank the launcher gave this process, before MPI is initialised (-1: not launched by one).
int launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return -1;
}

// The exit status of an error, and its line.
int exit_code(std::exception_ptr error, std::string& line) {
  try {
    std::rethrow_exception(error);
  } catch (const UsageError& e) {
    line = e.what();
    return 2;
  } catch (const Error& e) {
    line = e.what();
    return 1;
  } catch (const std::bad_alloc&) {
    line = "out of memory";
    return 1;
  } catch (const std::exception& e) {
    line = e.what();
    return 1;
  }
}

struct Setup {
  Trace trace;
  rt::ModelConfig config;
  rt::Workload workload;
};

Setup prepare(const RunArgs& args) {
  TraceOpenOptions open;
  if (args.experts > 0) open.experts = args.experts;
  Setup s{Trace::open(args.trace, open), {}, {}};
  s.config.layers = s.trace.layers();
  s.config.experts = s.trace.experts();
  s.config.k = args.topk > 0 ? args.topk : s.trace.k();
  s.config.hidden = args.hidden;
  s.config.heads = args.heads;
  s.config.ffn = args.ffn;
  s.config.seed = args.seed;
  s.config.activation = rt::parse_activation(args.activation);
  s.config.combine = rt::parse_combine(args.combine);
  s.workload.batch = args.batch;
  s.workload.seq_len = args.seq_len;
  if (args.prefill >= 0) s.workload.prefill = args.prefill;
  rt::validate(s.config);
  rt::validate(s.workload);
  rt::check_fits(s.trace, s.config, s.workload);
  return s;
}

json common_json(const RunArgs& args, const Setup& s) {
  json j;
  j["mode"] = args.mode;
  j["tokens"] = s.workload.tokens();
  j["layers"] = s.config.layers;
  j["experts"] = s.config.experts;
  j["k"] = s.config.k;
  j["hidden"] = s.config.hidden;
  j["heads"] = s.config.heads;
  j["ffn"] = s.config.ffn;
  j["activation"] = rt::to_string(s.config.activation);
  j["combine"] = rt::to_string(s.config.combine);
  j["seed"] = s.config.seed;
  j["batch"] = s.workload.batch;
  j["seq_len"] = s.workload.seq_len;
  j["prefill"] = s.workload.prefill_positions();
  j["trace"] = {{"path", s.trace.source()},
                {"tokens", s.trace.tokens()},
                {"layers", s.trace.layers()},
                {"k", s.trace.k()},
                {"experts", s.trace.experts()}};
  return j;
}

// The keys every mode reports about its run.
json outcome_json(std::size_t steps, std::int64_t expert_rows, std::uint64_t checksum,
                  double final_rms, double seconds, double setup_seconds, double rate) {
  return {{"steps", steps},
          {"expert_rows", expert_rows},
          {"checksum", rt::checksum_hex(checksum)},
          {"final_rms", final_rms},
          {"seconds", seconds},
          {"setup_seconds", setup_seconds},
          {"tokens_per_second", rate}};
}

std::string header_text(const Setup& s) {
  std::ostringstream out;
  const int prefill = s.workload.prefill_positions();
  out << "trace      " << s.trace.source() << ": " << s.trace.tokens() << " tokens x "
      << s.trace.layers() << " layers, top-" << s.trace.k() << " of " << s.trace.experts()
      << " experts\n"
      << "model      " << s.config.layers << " layers, " << s.config.experts << " experts (top-"
      << s.config.k << "), hidden " << s.config.hidden << ", " << s.config.heads << " heads, ffn "
      << s.config.ffn << ", " << rt::to_string(s.config.activation) << ", combine "
      << rt::to_string(s.config.combine) << ", seed " << s.config.seed << "\n"
      << "workload   " << s.workload.batch << " sequences x " << s.workload.seq_len
      << " positions = " << s.workload.tokens() << " tokens: prefill " << prefill << ", then "
      << (s.workload.seq_len - prefill) << " decode steps\n";
  return out.str();
}

int run_reference_mode(const RunArgs& args) {
  const Setup s = prepare(args);
  std::optional<int> placement_gpus;
  if (!args.placement.empty()) {
    // A CSV names its GPUs; a JSON placement holds slots, whose GPUs only a topology gives.
    const std::string& path = args.placement;
    const bool json_file = path.size() >= 5 && (path.compare(path.size() - 5, 5, ".json") == 0 ||
                                                path.compare(path.size() - 5, 5, ".JSON") == 0);
    if (json_file && args.gpus_per_node <= 0) {
      throw UsageError("--placement " + path +
                       ": give --gpus-per-node (and --nodes) for a JSON placement in reference "
                       "mode, its GPU count is not in the file");
    }
    const int gpus =
        args.gpus_per_node > 0 ? args.gpus_per_node * std::max(1, args.nodes) : kMaxPlacementGpus;
    const Placement p = read_placement_file(path, s.config.layers, s.config.experts, gpus);
    int top = *std::max_element(p.gpu_of().begin(), p.gpu_of().end());
    for (const Replica& r : p.replicas()) top = std::max(top, r.gpu);
    placement_gpus = top + 1;
  }
  const rt::ReferenceResult r = rt::run_reference(s.trace, s.config, s.workload);
  const double rate = r.seconds > 0 ? static_cast<double>(r.tokens) / r.seconds : 0.0;
  if (args.json) {
    json j = common_json(args, s);
    j.update(outcome_json(r.steps, r.expert_rows, r.checksum, r.final_rms, r.seconds,
                          r.setup_seconds, rate));
    j["hosted_experts"] = r.hosted_experts;
    j["placement"] =
        placement_gpus ? json{{"path", args.placement}, {"gpus", *placement_gpus}} : json(nullptr);
    j["options"] = options_json(run_options(), args);
    std::cout << j.dump(2) << std::endl;
    return 0;
  }
  std::ostringstream out;
  out << header_text(s);
  if (placement_gpus) {
    out << "placement  " << args.placement << " (" << *placement_gpus
        << " GPUs; the reference does not use it)\n";
  }
  out << "reference  " << r.tokens << " tokens in " << fixed(r.seconds, 3) << " s ("
      << fixed(rate, 1) << " tokens/s); weights of " << r.hosted_experts << " experts in "
      << fixed(r.setup_seconds, 3) << " s\n"
      << "checksum   " << rt::checksum_hex(r.checksum) << " (final hidden RMS "
      << fixed(r.final_rms, 4) << ")\n";
  std::cout << out.str();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// baseline, exflow and deepep on MPI

struct ParallelSetup {
  Setup setup;
  Topology topology;
  Placement placement;
};

ParallelSetup prepare_parallel(const RunArgs& args, int ranks) {
  Setup s = prepare(args);
  const int P = args.gpus_per_node > 0 ? args.gpus_per_node : ranks;
  const int N = args.nodes > 0 ? args.nodes : std::max(1, ranks / P);
  if (static_cast<long long>(N) * P != ranks) {
    throw UsageError("the job has " + std::to_string(ranks) + " ranks, the topology " +
                     std::to_string(N) + " nodes x " + std::to_string(P) +
                     " GPUs per node; run mpirun -np " + std::to_string(N * P) +
                     " or change --nodes / --gpus-per-node");
  }
  Topology topology(N, P);
  Placement placement =
      args.placement.empty()
          ? vanilla_placement(s.config.layers, s.config.experts, topology)
          : read_placement_file(args.placement, s.config.layers, s.config.experts, topology.gpus());
  validate(placement, topology, Balance::kExact,
           args.placement.empty() ? "vanilla" : args.placement);
  return ParallelSetup{std::move(s), topology, std::move(placement)};
}

// The evaluator's scheme whose traffic a mode moves.
Scheme scheme_of(rt::ParallelMode mode) {
  switch (mode) {
    case rt::ParallelMode::kBaseline:
      return Scheme::kBaseline;
    case rt::ParallelMode::kDeepEP:
      return Scheme::kDeepEP;
    case rt::ParallelMode::kExflow:
      break;
  }
  return Scheme::kContextCoherent;
}

// The evaluator's prediction for this run: its traffic matrices on the workload's tokens, times
// the 4·H bytes of one transfer.
std::vector<std::int64_t> predicted_bytes(const ParallelSetup& p, rt::ParallelMode mode) {
  const Setup& s = p.setup;
  std::vector<std::int32_t> ids = rt::workload_routes(s.trace, s.config, s.workload);
  const Trace tokens = Trace::from_ids(std::move(ids), s.workload.tokens(), s.config.layers,
                                       s.config.k, s.config.experts);
  EvalOptions eo;
  eo.scheme = scheme_of(mode);
  eo.sequence_length = s.workload.seq_len;
  eo.traffic = true;
  eo.threads = 1;
  Metrics m = evaluate(tokens, p.placement, p.topology, eo);
  for (std::int64_t& v : m.traffic) v *= 4LL * s.config.hidden;
  return m.traffic;
}

template <typename T>
T sum(const std::vector<T>& v) {
  T total{};
  for (const T& x : v) total += x;
  return total;
}

void report_parallel(const RunArgs& args, const ParallelSetup& p, const rt::ParallelResult& r) {
  const Setup& s = p.setup;
  const int G = r.ranks;
  const int L = r.layers;
  const rt::ParallelMode mode = rt::parse_parallel_mode(args.mode);
  const std::vector<std::int64_t> predicted = predicted_bytes(p, mode);
  const std::int64_t predicted_total = sum(predicted);
  const bool matches = predicted == r.alltoall_bytes;
  const double rate = r.seconds > 0 ? static_cast<double>(r.tokens) / r.seconds : 0.0;

  // Decode steps (one position each) apart from the prefill.
  struct StepTotals {
    int steps = 0;
    double seconds = 0;
    std::int64_t alltoall = 0, allgather = 0;
  } decode, prefill;
  for (const rt::StepRecord& st : r.steps) {
    StepTotals& into =
        st.positions == 1 && st.first_position >= s.workload.prefill_positions() ? decode : prefill;
    ++into.steps;
    into.seconds += st.seconds;
    into.alltoall += st.alltoall_bytes;
    into.allgather += st.allgather_bytes;
  }
  auto per_step = [](const StepTotals& t) {
    const double n = t.steps > 0 ? t.steps : 1;
    return json{{"steps", t.steps},
                {"seconds", t.seconds},
                {"seconds_per_step", t.seconds / n},
                {"alltoall_bytes_per_step", static_cast<double>(t.alltoall) / n},
                {"allgather_bytes_per_step", static_cast<double>(t.allgather) / n}};
  };

  const auto at = [&](const std::vector<std::int64_t>& v, int l, int phase, int src, int dst) {
    return v[((static_cast<std::size_t>(l) * 2 + static_cast<std::size_t>(phase)) * G +
              static_cast<std::size_t>(src)) *
                 G +
             static_cast<std::size_t>(dst)];
  };
  std::vector<std::int64_t> rank_alltoall(static_cast<std::size_t>(G), 0),
      rank_alltoall_messages(static_cast<std::size_t>(G), 0),
      rank_allgather(static_cast<std::size_t>(G), 0);
  for (int l = 0; l < L; ++l) {
    for (int ph = 0; ph < 2; ++ph) {
      for (int a = 0; a < G; ++a) {
        for (int b = 0; b < G; ++b) {
          rank_alltoall[static_cast<std::size_t>(a)] += at(r.alltoall_bytes, l, ph, a, b);
          rank_alltoall_messages[static_cast<std::size_t>(a)] +=
              at(r.alltoall_messages, l, ph, a, b);
        }
      }
    }
    for (int a = 0; a < G; ++a) {
      rank_allgather[static_cast<std::size_t>(a)] +=
          r.allgather_bytes[static_cast<std::size_t>(l) * G + static_cast<std::size_t>(a)];
    }
  }

  if (args.json) {
    json j = common_json(args, s);
    j["ranks"] = G;
    j["nodes"] = p.topology.nodes();
    j["gpus_per_node"] = p.topology.gpus_per_node();
    j.update(outcome_json(r.steps.size(), r.expert_rows, r.checksum, r.final_rms, r.seconds,
                          r.setup_seconds, rate));
    j["alltoall_bytes"] = r.total_alltoall_bytes();
    j["allgather_bytes"] = r.total_allgather_bytes();
    j["alltoall_messages"] = sum(r.alltoall_messages);
    j["allgather_messages"] = sum(r.allgather_messages);
    j["output_bytes"] = r.output_bytes;
    j["cost_model"] = {{"alltoall_bytes", predicted_total}, {"matches", matches}};
    j["decode"] = per_step(decode);
    j["prefill_step"] = per_step(prefill);
    json layers = json::array();
    for (int l = 0; l < L; ++l) {
      json phases;
      for (int ph = 0; ph < 2; ++ph) {
        json bytes = json::array(), messages = json::array();
        for (int a = 0; a < G; ++a) {
          json brow = json::array(), mrow = json::array();
          for (int b = 0; b < G; ++b) {
            brow.push_back(at(r.alltoall_bytes, l, ph, a, b));
            mrow.push_back(at(r.alltoall_messages, l, ph, a, b));
          }
          bytes.push_back(brow);
          messages.push_back(mrow);
        }
        const char* name = ph == 0 ? "dispatch" : "combine";
        phases[std::string(name) + "_bytes"] = bytes;
        phases[std::string(name) + "_messages"] = messages;
      }
      json gathered = json::array();
      for (int a = 0; a < G; ++a) {
        gathered.push_back(
            r.allgather_bytes[static_cast<std::size_t>(l) * G + static_cast<std::size_t>(a)]);
      }
      phases["layer"] = l;
      phases["allgather_bytes"] = gathered;
      layers.push_back(phases);
    }
    j["per_layer"] = layers;
    json ranks = json::array();
    for (int a = 0; a < G; ++a) {
      const auto i = static_cast<std::size_t>(a);
      const rt::PhaseSeconds& t = r.seconds_per_rank[i];
      ranks.push_back({{"rank", a},
                       {"experts", r.experts_per_rank[i]},
                       {"alltoall_bytes", rank_alltoall[i]},
                       {"alltoall_messages", rank_alltoall_messages[i]},
                       {"allgather_bytes", rank_allgather[i]},
                       {"allgather_messages", r.allgather_messages[i]},
                       {"seconds",
                        {{"attention", t.attention},
                         {"experts", t.experts},
                         {"combine", t.combine},
                         {"alltoall", t.alltoall},
                         {"allgather", t.allgather}}}});
    }
    j["per_rank"] = ranks;
    json steps = json::array();
    for (const rt::StepRecord& st : r.steps) {
      steps.push_back({{"first_position", st.first_position},
                       {"positions", st.positions},
                       {"seconds", st.seconds},
                       {"alltoall_bytes", st.alltoall_bytes},
                       {"alltoall_messages", st.alltoall_messages},
                       {"allgather_bytes", st.allgather_bytes},
                       {"allgather_messages", st.allgather_messages}});
    }
    j["per_step"] = steps;
    j["placement"] = json{{"path", args.placement.empty() ? json(nullptr) : json(args.placement)},
                          {"replicas", p.placement.replicas().size()}};
    j["options"] = options_json(run_options(), args);
    std::cout << j.dump(2) << std::endl;
    return;
  }
  std::ostringstream out;
  out << header_text(s) << "ranks      " << G << " (" << p.topology.nodes() << " node"
      << (p.topology.nodes() > 1 ? "s" : "") << " x " << p.topology.gpus_per_node()
      << "), placement " << (args.placement.empty() ? "vanilla" : args.placement) << "\n"
      << args.mode << std::string(args.mode.size() < 11 ? 11 - args.mode.size() : 1, ' ')
      << r.tokens << " tokens in " << fixed(r.seconds, 3) << " s (" << fixed(rate, 1)
      << " tokens/s); setup " << fixed(r.setup_seconds, 3) << " s\n"
      << "all-to-all " << r.total_alltoall_bytes() << " bytes in " << sum(r.alltoall_messages)
      << " messages; the cost model predicts " << predicted_total << " ("
      << (matches ? "equal for every layer, phase and rank pair" : "DIFFERENT") << ")\n"
      << "all-gather " << r.total_allgather_bytes() << " bytes in " << sum(r.allgather_messages)
      << " messages\n";
  if (decode.steps > 0) {
    const double n = decode.steps;
    out << "decode     " << decode.steps << " steps: " << fixed(decode.seconds / n * 1e3, 2)
        << " ms, " << fixed(static_cast<double>(decode.alltoall) / n, 0) << " all-to-all + "
        << fixed(static_cast<double>(decode.allgather) / n, 0) << " all-gather bytes per step\n";
  }
  out << "checksum   " << rt::checksum_hex(r.checksum) << " (final hidden RMS "
      << fixed(r.final_rms, 4) << ")\n";
  std::cout << out.str();
}

// Every rank's status of one step agreed on: the worst status; the lowest rank that failed prints
// its line.
int agree(int code, const std::string& line, int rank, int ranks) {
  int worst = 0, first_failed = ranks;
  const int failed_rank = code != 0 ? rank : ranks;
  MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(&failed_rank, &first_failed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (worst != 0 && rank == first_failed) std::cerr << "exflow-run: error: " << line << std::endl;
  return worst;
}

// Rank 0's text on every rank.
std::string broadcast(std::string text) {
  unsigned long long size = text.size();
  MPI_Bcast(&size, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
  text.resize(static_cast<std::size_t>(size));
  MPI_Bcast(text.data(), static_cast<int>(size), MPI_CHAR, 0, MPI_COMM_WORLD);
  return text;
}

// The first option in which this rank's command line differs from rank 0's, as an error; the
// input paths may differ (a node may mount them elsewhere): their contents are compared later.
void check_same_options(const RunArgs& args, int rank) {
  nlohmann::json mine = options_json(run_options(), args);
  const nlohmann::json first = nlohmann::json::parse(broadcast(mine.dump()));
  for (const auto& row : run_options()) {
    const std::string key = option_key(row.name);
    if (key == "trace" || key == "placement") continue;
    if (mine[key] != first[key]) {
      throw UsageError("rank " + std::to_string(rank) + " was given " + row.name + " " +
                       mine[key].dump() + ", rank 0 " + first[key].dump() +
                       ": every rank needs the same options");
    }
  }
  if (args.placement.empty() != first["placement"].get<std::string>().empty()) {
    throw UsageError("rank " + std::to_string(rank) +
                     (args.placement.empty() ? " was not" : " was") +
                     " given --placement, rank 0 " + (args.placement.empty() ? "was" : "was not") +
                     ": every rank needs the same options");
  }
}

// FNV-1a over 64-bit words.
class Digest {
 public:
  template <typename T>
  void add(const std::vector<T>& values) {
    add_bytes(values.data(), values.size() * sizeof(T));
  }
  void add(std::int64_t v) { add_bytes(&v, sizeof v); }
  std::uint64_t value() const { return h_; }

 private:
  void add_bytes(const void* data, std::size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
      h_ ^= p[i];
      h_ *= 0x100000001b3ULL;
    }
  }
  std::uint64_t h_ = 0xcbf29ce484222325ULL;
};

// The ids the run replays (with the trace's shape) and the placement, hashed; a rank whose
// hashes differ from rank 0's fails naming its input.
void check_same_inputs(const RunArgs& args, const ParallelSetup& p, int rank) {
  const Setup& s = p.setup;
  Digest trace;
  trace.add(s.trace.tokens());
  trace.add(s.trace.layers());
  trace.add(s.trace.k());
  trace.add(s.trace.experts());
  trace.add(rt::workload_routes(s.trace, s.config, s.workload));
  Digest placement;
  placement.add(p.placement.gpu_of());
  for (const Replica& r : p.placement.replicas()) {
    placement.add(std::vector<int>{r.layer, r.expert, r.gpu});
  }
  std::uint64_t digests[2] = {trace.value(), placement.value()};
  std::uint64_t first[2] = {digests[0], digests[1]};
  MPI_Bcast(first, 2, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  if (digests[0] != first[0]) {
    throw InputError("rank " + std::to_string(rank) + "'s trace " + args.trace +
                     " differs from rank 0's in the ids this run replays: every rank needs the "
                     "same trace");
  }
  if (digests[1] != first[1]) {
    throw InputError("rank " + std::to_string(rank) + "'s placement " + args.placement +
                     " differs from rank 0's: every rank needs the same placement");
  }
}

// Under a launcher: the agreement steps, then the run. `parse_code` and `parse_line`: this
// rank's command line (0: parsed).
int run_launched(const RunArgs& args, int parse_code, const std::string& parse_line) {
  MPI_Init(nullptr, nullptr);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const auto finish = [](int code) {
    MPI_Finalize();
    return code;
  };
  if (const int code = agree(parse_code, parse_line + " (see --help)", rank, ranks)) {
    return finish(code);
  }

  // Each step: run it, then agree on every rank's status.
  std::string line;
  const auto step = [&](const auto& work) {
    int code = 0;
    try {
      work();
    } catch (...) {
      code = exit_code(std::current_exception(), line);
    }
    return agree(code, line, rank, ranks);
  };
  if (const int code = step([&] {
        check_same_options(args, rank);
        if (args.mode == "reference" && ranks > 1) {
          throw UsageError(
              "--mode reference runs in one process; run it without mpirun or "
              "with -np 1, not on " +
              std::to_string(ranks) + " ranks");
        }
      })) {
    return finish(code);
  }
  if (args.mode == "reference") {
    if (const int code = step([&] { run_reference_mode(args); })) return finish(code);
    return finish(0);
  }
  std::optional<ParallelSetup> setup;
  if (const int code = step([&] { setup = prepare_parallel(args, ranks); })) return finish(code);
  if (const int code = step([&] { check_same_inputs(args, *setup, rank); })) return finish(code);

  try {
    const rt::ParallelMode mode = rt::parse_parallel_mode(args.mode);
    const rt::ParallelResult r =
        rt::run_expert_parallel(setup->setup.trace, setup->setup.config, setup->setup.workload,
                                setup->placement, setup->topology, mode);
    if (rank == 0) report_parallel(args, *setup, r);
  } catch (...) {
    const int code = exit_code(std::current_exception(), line);
    std::cerr << "exflow-run: error: rank " << rank << ": " << line << std::endl;
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  return finish(0);
}

}  // namespace
}  // namespace exflow::cli

int main(int argc, char** argv) {
  exflow::install_temporary_cleanup();
  CLI::App app{exflow::cli::kRunSummary, "exflow-run"};
  exflow::cli::RunArgs args;
  exflow::cli::register_options(app, exflow::cli::run_options(), args);

  const int rank = exflow::cli::launcher_rank();
  int parse_code = 0;
  std::string parse_line;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return rank > 0 ? 0 : app.exit(e);  // --help
    parse_code = 2;
    parse_line = e.what();
  }
  // Under a launcher (mpirun) even a rank that could not parse its command line joins the
  // agreement, so that the job ends with its line and every rank's status.
  if (rank >= 0 || (parse_code == 0 && args.mode != "reference")) {
    return exflow::cli::run_launched(args, parse_code, parse_line);
  }
  if (parse_code != 0) {
    std::cerr << "exflow-run: error: " << parse_line << " (see --help)\n";
    return parse_code;
  }
  try {
    return exflow::cli::run_reference_mode(args);
  } catch (...) {
    std::string line;
    const int code = exflow::cli::exit_code(std::current_exception(), line);
    std::cerr << "exflow-run: error: " << line << "\n";
    return code;
  }
}
