#include "commands.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>

#include "../exflow-run/run_options.hpp"
#include "command_args.hpp"
#include "convert_command.hpp"
#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/formats.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "options.hpp"
#include "progress_bar.hpp"
#include "report_command.hpp"
#include "simulate_command.hpp"
#include "text_report.hpp"

namespace exflow::cli {

Trace open_trace(const TraceArgs& a) {
  TraceOpenOptions o;
  if (a.experts > 0) o.experts = a.experts;
  if (a.topk > 0) o.topk = a.topk;
  o.threads = a.threads;
  return Trace::open(a.trace, o);
}

Topology make_topology(const TopologyArgs& a) {
  return Topology(a.nodes, a.gpus_per_node, a.intra_cost, a.inter_cost);
}

void print_json(const nlohmann::json& j) {
  std::cout << j.dump(2) << std::endl;
}

// A placement file in any format exflow reads: by extension, .json holds SGLang's expert
// location (physical_to_logical_map) or EPLB's maps (phy2log), anything else the CSV.
Placement read_placement_file(const std::string& path, int layers, int experts, int gpus) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext != ".json" && ext != ".JSON") return read_placement_csv(path, layers, experts, gpus);
  std::string head = [&] {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(path + ": cannot open placement");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text;
  }();
  Placement p = head.find("\"physical_to_logical_map\"") != std::string::npos
                    ? read_sglang_expert_location(path, gpus, experts)
                    : read_eplb_maps(path, gpus);
  if (p.layers() != layers || p.experts() != experts) {
    throw InputError(path + ": placement has " + std::to_string(p.layers()) + " layers x " +
                     std::to_string(p.experts()) + " experts, the trace " + std::to_string(layers) +
                     " x " + std::to_string(experts));
  }
  return p;
}

namespace {

// ---------------------------------------------------------------------------------------------
// The commands' argument structs (the shared groups are in command_args.hpp).

struct ProfileArgs : TraceArgs {};

struct EvalArgs : TraceArgs, TopologyArgs, BaselineArgs {
  std::string placement;
  bool unbalanced = false;
};

struct SolveArgs : TraceArgs, TopologyArgs, BaselineArgs {
  std::string affinity_counts;
  int affinity_k = 1;
  std::string expert_loads;
  std::string method = "auto";
  std::string max_load_ratio = "auto";
  int redundant = 0;
  std::string out_dir = "solutions";
  std::string sglang;
  std::string eplb;
  double time_limit = 0;
  double token_time_limit = 0;
  std::int64_t sample_tokens = 0;
  std::uint64_t seed = 1;
  int starts = 0;  // 0: 8, or 2 for top-k traces
  int min_experts_per_gpu = -1;
  std::int64_t incremental = 0;
  bool bipart = false;
  bool verbose = false;
};

const OptionTable<ProfileArgs>& profile_options() {
  static const OptionTable<ProfileArgs> table = [] {
    OptionTable<ProfileArgs> t;
    add_trace_rows(t);
    add_output_rows(t);
    return t;
  }();
  return table;
}

const OptionTable<EvalArgs>& eval_options() {
  static const OptionTable<EvalArgs> table = [] {
    OptionTable<EvalArgs> t;
    add_trace_rows(t);
    t.insert(t.begin() + 1, option<EvalArgs>(&EvalArgs::placement, "PLACEMENT",
                                             "placement: CSV (header Expert,Node, replicas as "
                                             "extra rows), SGLang expert-location JSON or EPLB "
                                             "maps JSON")
                                .must()
                                .check(CLI::ExistingFile));
    add_topology_rows(t);
    t.push_back(
        option<EvalArgs>(&EvalArgs::unbalanced, "--unbalanced",
                         "accept placements without exactly E/G experts per GPU per layer"));
    add_baseline_rows(t);
    add_output_rows(t);
    return t;
  }();
  return table;
}

const OptionTable<SolveArgs>& solve_options() {
  static const OptionTable<SolveArgs> table = [] {
    OptionTable<SolveArgs> t;
    add_trace_rows(t);
    t[0].required = false;
    t[0].default_text = "one of TRACE, --affinity-counts, --expert-loads";
    t.insert(t.begin() + 1,
             option<SolveArgs>(&SolveArgs::affinity_counts, "--affinity-counts",
                               "solve from an inter-layer count tensor [L-1, E, E] (.npy) "
                               "instead of a trace; metrics that need tokens are unavailable")
                 .check(CLI::ExistingFile)
                 .shown_default("none"));
    t.insert(t.begin() + 2,
             option<SolveArgs>(&SolveArgs::affinity_k, "--affinity-k",
                               "experts per token of the trace the counts come from (k*k pairs "
                               "per token)")
                 .check(CLI::Range(1, 64)));
    t.insert(t.begin() + 3,
             option<SolveArgs>(&SolveArgs::expert_loads, "--expert-loads",
                               "balance by load alone from per-layer expert loads [L, E] "
                               "(SGLang logical_count JSON or .npy), no trace")
                 .check(CLI::ExistingFile)
                 .shown_default("none"));
    add_topology_rows(t);
    t.push_back(option<SolveArgs>(&SolveArgs::method, "--method",
                                  "auto (exact where it applies, else fast), exact (proven "
                                  "optimum), ilp (COIN-OR CBC), fast (local search), bcd (block "
                                  "descent baseline), vanilla (contiguous)")
                    .check(CLI::IsMember({"auto", "exact", "ilp", "fast", "bcd", "vanilla"})));
    t.push_back(option<SolveArgs>(&SolveArgs::max_load_ratio, "--max-load-ratio",
                                  "per-layer limit on the busiest GPU's token load over the "
                                  "mean: auto (never worse than vanilla on that layer), none, or "
                                  "a number >= 1"));
    t.push_back(option<SolveArgs>(&SolveArgs::redundant, "--redundant",
                                  "spare expert slots per GPU per layer, filled with replicas of "
                                  "the experts tokens ask for (tokens use the nearest copy)")
                    .check(CLI::Range(0, 1 << 16)));
    t.push_back(option<SolveArgs>(&SolveArgs::time_limit, "--time-limit",
                                  "seconds the graph solver may use (0: fast and bcd run their "
                                  "fixed budget, ilp 60 s)")
                    .check(CLI::NonNegativeNumber));
    t.push_back(option<SolveArgs>(&SolveArgs::token_time_limit, "--token-time-limit",
                                  "seconds for the token-level search that handles top-k, load "
                                  "limits and replicas (0: until it converges)")
                    .check(CLI::NonNegativeNumber));
    t.push_back(option<SolveArgs>(&SolveArgs::sample_tokens, "--sample-tokens",
                                  "tokens the token-level search holds, evenly spaced over the "
                                  "trace")
                    .check(CLI::Range(std::int64_t{0}, std::numeric_limits<std::int64_t>::max()))
                    .shown_default("all, up to 16M ids"));
    t.push_back(
        option<SolveArgs>(&SolveArgs::seed, "--seed", "seed of fast and bcd (deterministic)"));
    t.push_back(
        option<SolveArgs>(&SolveArgs::starts, "--starts", "independent starts of fast and bcd")
            .check(CLI::Range(1, 4096))
            .shown_default("8; 2 for top-k traces, which the token search refines"));
    t.push_back(option<SolveArgs>(&SolveArgs::min_experts_per_gpu, "--min-experts-per-gpu",
                                  "relaxed balance: at least M experts of every layer per GPU "
                                  "(the original tool's hard_limit)")
                    .check(CLI::Range(0, 1 << 16))
                    .shown_default("E/G exactly"));
    t.push_back(option<SolveArgs>(&SolveArgs::incremental, "--incremental",
                                  "solve on the first N tokens, add N more from the previous "
                                  "answer, until the placement is steady")
                    .check(CLI::Range(std::int64_t{0}, std::numeric_limits<std::int64_t>::max()))
                    .shown_default("off"));
    t.push_back(option<SolveArgs>(&SolveArgs::bipart, "--bipart",
                                  "recursive bisection of the GPU set (nodes first)"));
    t.push_back(
        option<SolveArgs>(&SolveArgs::out_dir, "--out-dir",
                          "directory for the placement CSV (the original tool's file name)"));
    t.push_back(option<SolveArgs>(&SolveArgs::sglang, "--sglang",
                                  "also write SGLang's --init-expert-location JSON here")
                    .shown_default("none"));
    t.push_back(option<SolveArgs>(&SolveArgs::eplb, "--eplb",
                                  "also write DeepSeek EPLB's phy2log/log2phy/logcnt JSON here")
                    .shown_default("none"));
    add_baseline_rows(t);
    add_output_rows(t);
    t.push_back(option<SolveArgs>(&SolveArgs::verbose, "--verbose",
                                  "print the solver's progress lines on stderr"));
    return t;
  }();
  return table;
}

constexpr const char* kProfileSummary =
    "Profile a routing trace: its shape, the inter-layer expert affinity of every layer pair and "
    "the expert load skew of every layer.";
constexpr const char* kEvalSummary =
    "Score a placement on a trace (hop cost, cross-GPU and cross-node moves, locality, GPU load), "
    "side by side with the vanilla contiguous placement.";
constexpr const char* kSolveSummary =
    "Compute a placement for a trace and topology, write it as CSV under the original tool's file "
    "name, and report it against vanilla.";

// ---------------------------------------------------------------------------------------------

int run_profile(const ProfileArgs& args) {
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  AffinityGraph graph = AffinityGraph::from_trace(trace, args.threads, &bar);
  AffinityProfile p = profile(graph);
  if (args.json) {
    nlohmann::json j = trace_json(trace);
    j.update(profile_json(p));
    j["options"] = options_json(profile_options(), args);
    print_json(j);
    return 0;
  }
  std::cout << "trace     " << describe(trace) << "\n\n" << profile_table(p, trace.experts());
  return 0;
}

// Both schemes for both placements: [placement, vanilla] context-coherent, then the same two
// under the two-all-to-all baseline.
struct Scored {
  std::vector<Metrics> coherent;
  std::vector<Metrics> baseline;
};

Scored score(const Trace& trace, const Placement& placement, const Placement& vanilla,
             const Topology& topology, int threads, std::int64_t seq_len, Progress* progress) {
  EvalOptions eo;
  eo.threads = threads;
  eo.sequence_length = seq_len;
  eo.progress = progress;
  Scored s;
  s.coherent = evaluate_all(trace, {&placement, &vanilla}, topology, eo);
  eo.scheme = Scheme::kBaseline;
  s.baseline = evaluate_all(trace, {&placement, &vanilla}, topology, eo);
  return s;
}

nlohmann::json scored_json(const Scored& s) {
  nlohmann::json j = metrics_json(s.coherent[0]);
  j["baseline"] = metrics_json(s.baseline[0]);
  j["vanilla"] = metrics_json(s.coherent[1]);
  j["vanilla"]["baseline"] = metrics_json(s.baseline[1]);
  return j;
}

int run_eval(const EvalArgs& args) {
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  Placement placement =
      read_placement_file(args.placement, trace.layers(), trace.experts(), topology.gpus());
  validate(placement, topology, args.unbalanced ? Balance::kNone : Balance::kExact, args.placement);
  Placement vanilla = vanilla_placement(trace.layers(), trace.experts(), topology);
  Scored m = score(trace, placement, vanilla, topology, args.threads, args.seq_len, &bar);
  if (args.json) {
    nlohmann::json j = scored_json(m);
    j["placement"] = args.placement;
    j["trace"] = trace_json(trace);
    j["topology"] = topology_json(topology);
    j["options"] = options_json(eval_options(), args);
    print_json(j);
    return 0;
  }
  std::cout << "trace     " << describe(trace) << "\n"
            << "topology  " << describe(topology) << "\n"
            << "placement " << args.placement << "\n\n"
            << compare_metrics({"placement", "vanilla"}, {&m.coherent[0], &m.coherent[1]},
                               {&m.baseline[0], &m.baseline[1]});
  return 0;
}

SolveOptions solve_options_of(const SolveArgs& args) {
  SolveOptions options;
  options.method = parse_method(args.method);
  options.time_limit = args.time_limit;
  options.seed = args.seed;
  options.threads = args.threads;
  options.starts = args.starts > 0 ? args.starts : 8;
  options.min_experts_per_gpu = args.min_experts_per_gpu;
  options.bipart = args.bipart;
  options.max_load = parse_load_limit(args.max_load_ratio);
  options.redundant = args.redundant;
  options.sample_tokens = args.sample_tokens;
  options.refine_time_limit = args.token_time_limit;
  if (args.verbose) {
    const auto start = std::chrono::steady_clock::now();
    options.log = [start](const std::string& line) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::cerr << "exflow: [" << format_seconds(s) << "] " << line << std::endl;
    };
  }
  return options;
}

// The placement CSV under `name` in --out-dir, and the serving formats where asked.
std::string write_outputs(const SolveArgs& args, const std::string& name, const Placement& p) {
  std::string path = (std::filesystem::path(args.out_dir) / name).string();
  write_placement_csv(path, p);
  if (!args.sglang.empty()) write_sglang_expert_location(args.sglang, p);
  if (!args.eplb.empty()) write_eplb_maps(args.eplb, p);
  return path;
}

// --expert-loads: each layer balanced by its expert loads alone. The loads a placement gives a
// GPU are the file's counts, a replicated expert's split evenly over its copies (EPLB's model).
int run_solve_from_loads(const SolveArgs& args) {
  const auto start = std::chrono::steady_clock::now();
  if (args.experts > 0) {
    throw UsageError("--experts does not apply to --expert-loads (E is the file's width)");
  }
  if (args.max_load_ratio != "auto" || args.method != "auto" || args.incremental > 0 ||
      args.bipart || args.min_experts_per_gpu >= 0) {
    throw UsageError(
        "--expert-loads balances by load alone: --max-load-ratio, --method, "
        "--incremental, --bipart and --min-experts-per-gpu need a trace");
  }
  ExpertLoads loads = read_expert_loads(args.expert_loads);
  Topology topology = make_topology(args);
  Placement placement =
      balance_loads(loads.counts, loads.layers, loads.experts, topology, args.redundant);
  Placement vanilla = vanilla_placement(loads.layers, loads.experts, topology);
  const int G = topology.gpus();
  auto ratios = [&](const Placement& p) {
    std::vector<double> out;
    for (int l = 0; l < loads.layers; ++l) {
      std::vector<double> gpu(static_cast<std::size_t>(G), 0.0);
      double total = 0;
      for (int e = 0; e < loads.experts; ++e) {
        std::vector<int> copies = p.copies(l, e);
        const double share = static_cast<double>(loads.count(l, e)) / copies.size();
        for (int g : copies) gpu[static_cast<std::size_t>(g)] += share;
        total += static_cast<double>(loads.count(l, e));
      }
      out.push_back(total > 0 ? *std::max_element(gpu.begin(), gpu.end()) / (total / G) : 1.0);
    }
    return out;
  };
  std::vector<double> solved = ratios(placement);
  std::vector<double> plain = ratios(vanilla);
  const double worst = *std::max_element(solved.begin(), solved.end());
  const double worst_vanilla = *std::max_element(plain.begin(), plain.end());
  std::string name = "solution_intra" + std::to_string(topology.gpus_per_node()) + "_inter" +
                     std::to_string(topology.nodes()) + "_loadratio" + python_float_repr(worst) +
                     ".csv";
  std::string path = write_outputs(args, name, placement);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (args.json) {
    nlohmann::json j = {
        {"method", "load-balance"},
        {"load_ratio_max", worst},
        {"load_ratio_per_layer", solved},
        {"replicas", placement.replicas().size()},
        {"cost", nullptr},
        {"vanilla", {{"load_ratio_max", worst_vanilla}, {"load_ratio_per_layer", plain}}},
        {"seconds", seconds},
        {"placement", path},
        {"loads",
         {{"path", args.expert_loads}, {"layers", loads.layers}, {"experts", loads.experts}}},
        {"topology", topology_json(topology)},
        {"options", options_json(solve_options(), args)}};
    print_json(j);
    return 0;
  }
  std::printf("load-balanced placement in %s from %s (%d layers x %d experts)\n",
              format_seconds(seconds).c_str(), args.expert_loads.c_str(), loads.layers,
              loads.experts);
  std::printf("  GPU load ratio worst layer %.3f (vanilla %.3f); %zu replicas\n", worst,
              worst_vanilla, placement.replicas().size());
  std::printf("  transfer costs: unavailable without a trace or affinity counts\n");
  std::printf("  placement written to %s\n", path.c_str());
  return 0;
}

// --affinity-counts: the graph solvers on the counts; the objective is the graph's (for a
// top-1 trace's counts the evaluator's cost; for top-k a pairwise surrogate).
int run_solve_from_counts(const SolveArgs& args) {
  const auto start = std::chrono::steady_clock::now();
  if (args.redundant > 0 || args.max_load_ratio != "auto" || args.incremental > 0) {
    throw UsageError(
        "--redundant, --max-load-ratio and --incremental need a trace, not "
        "--affinity-counts");
  }
  AffinityGraph graph = read_affinity_counts(args.affinity_counts, args.affinity_k);
  if (args.experts > 0 && args.experts != graph.experts()) {
    throw UsageError("--experts " + std::to_string(args.experts) + " does not match the " +
                     std::to_string(graph.experts()) + " experts of " + args.affinity_counts);
  }
  Topology topology = make_topology(args);
  SolveOptions options = solve_options_of(args);
  options.max_load = LoadLimit{};
  SolveResult r = solve(graph, topology, options);
  Placement vanilla = vanilla_placement(graph.layers(), graph.experts(), topology);
  const double vanilla_objective = graph_objective(graph, vanilla, topology);
  std::string name = "solution_intra" + std::to_string(topology.gpus_per_node()) + "_inter" +
                     std::to_string(topology.nodes()) + "_objective" +
                     python_float_repr(r.objective) + ".csv";
  std::string path = write_outputs(args, name, r.placement);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double gap =
      r.lower_bound && r.objective > 0 ? (r.objective - *r.lower_bound) / r.objective : 0.0;
  if (args.json) {
    nlohmann::json j = {{"method", to_string(r.method)},
                        {"objective", r.objective},
                        {"vanilla_objective", vanilla_objective},
                        {"optimal", r.optimal},
                        {"lower_bound", r.lower_bound ? nlohmann::json(*r.lower_bound) : nullptr},
                        {"gap", r.lower_bound ? nlohmann::json(gap) : nullptr},
                        {"cost", nullptr},
                        {"detail", r.detail},
                        {"seconds", seconds},
                        {"solve_seconds", r.seconds},
                        {"placement", path},
                        {"counts",
                         {{"path", args.affinity_counts},
                          {"layers", graph.layers()},
                          {"experts", graph.experts()},
                          {"tokens", graph.tokens()},
                          {"k", args.affinity_k}}},
                        {"topology", topology_json(topology)},
                        {"options", options_json(solve_options(), args)}};
    print_json(j);
    return 0;
  }
  std::printf("%s placement in %s%s: %s\n", to_string(r.method), format_seconds(seconds).c_str(),
              r.optimal ? " (proven optimal)" : "", r.detail.c_str());
  std::printf(
      "  pairwise objective per token %.4f vs vanilla %.4f: %.1f%% lower\n", r.objective,
      vanilla_objective,
      vanilla_objective > 0 ? 100.0 * (vanilla_objective - r.objective) / vanilla_objective : 0.0);
  if (r.lower_bound) std::printf("  lower bound %.4f, gap %.2f%%\n", *r.lower_bound, 100.0 * gap);
  std::printf("  top-k cost, locality and load per GPU: unavailable without a trace\n");
  std::printf("  placement written to %s\n", path.c_str());
  return 0;
}

int run_solve(const SolveArgs& args) {
  const int inputs =
      !args.trace.empty() + !args.affinity_counts.empty() + !args.expert_loads.empty();
  if (inputs != 1) {
    throw UsageError("solve needs exactly one of TRACE, --affinity-counts and --expert-loads");
  }
  if (!args.expert_loads.empty()) return run_solve_from_loads(args);
  if (!args.affinity_counts.empty()) return run_solve_from_counts(args);
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  SolveOptions options = solve_options_of(args);
  if (args.starts == 0) options.starts = trace.k() > 1 ? 2 : 8;
  if (options.method == Method::kVanilla && !args.bipart &&
      options.max_load.kind == LoadLimit::Kind::kRatio) {
    throw UsageError("--method vanilla keeps the contiguous placement: --max-load-ratio " +
                     args.max_load_ratio + " cannot apply");
  }
  std::int64_t tokens_used = trace.tokens();
  SolveResult r =
      args.incremental > 0
          ? solve_incremental(trace, topology, options, args.incremental, &tokens_used,
                              args.threads)
          : solve(AffinityGraph::from_trace(trace, args.threads, &bar), topology, options);
  const bool graph_bound = trace.k() == 1 && args.redundant == 0;
  r = refine(trace, topology, options, std::move(r));
  Placement vanilla = vanilla_placement(trace.layers(), trace.experts(), topology);
  Scored m = score(trace, r.placement, vanilla, topology, args.threads, args.seq_len, &bar);
  const Metrics& solved = m.coherent[0];
  std::string name = seed_solution_filename(topology.gpus_per_node(), topology.nodes(), solved.cost,
                                            solved.cintra, solved.cinter);
  std::string path = write_outputs(args, name, r.placement);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The bound is on the pairwise objective, which is the evaluator's cost only for top-1
  // without replicas; a placement profiled on a prefix is optimal (and bounded) only for that
  // prefix, so the whole trace's bound is computed instead.
  if (tokens_used < trace.tokens() && graph_bound) {
    r.optimal = false;
    r.lower_bound = objective_lower_bound(AffinityGraph::from_trace(trace, args.threads, &bar),
                                          topology, args.min_experts_per_gpu);
  }
  std::optional<double> bound;
  if (graph_bound && r.lower_bound) bound = std::min(*r.lower_bound, solved.cost);
  if (args.json) {
    nlohmann::json bound_json = nullptr;
    nlohmann::json gap_json = nullptr;
    if (bound) {
      bound_json = *bound;
      gap_json = solved.cost > 0 ? (solved.cost - *bound) / solved.cost : 0.0;
    }
    nlohmann::json j = scored_json(m);
    j["method"] = to_string(r.method);
    j["bipart"] = args.bipart;
    j["optimal"] = r.optimal && graph_bound;
    j["lower_bound"] = bound_json;
    j["gap"] = gap_json;
    j["objective"] = r.objective;
    j["max_load_ratio"] = to_string(options.max_load);
    j["layers_over_load_limit"] = r.layers_over_load_limit;
    j["detail"] = r.detail;
    j["steps"] = r.steps;
    j["tokens_used"] = tokens_used;
    j["seconds"] = seconds;
    j["solve_seconds"] = r.seconds;
    j["placement"] = path;
    j["trace"] = trace_json(trace);
    j["topology"] = topology_json(topology);
    j["options"] = options_json(solve_options(), args);
    print_json(j);
    return 0;
  }
  std::cout << solve_summary(r, m.coherent[0], m.coherent[1], m.baseline[1], bound, seconds,
                             tokens_used, trace.tokens())
            << "  placement written to " << path << "\n\n"
            << "trace     " << describe(trace) << "\n"
            << "topology  " << describe(topology) << "\n\n"
            << compare_metrics({to_string(r.method), "vanilla"}, {&m.coherent[0], &m.coherent[1]},
                               {&m.baseline[0], &m.baseline[1]});
  return 0;
}

}  // namespace

std::vector<Subcommand> add_subcommands(CLI::App& app) {
  return {add_subcommand(app, "profile", kProfileSummary, profile_options(), &run_profile),
          add_subcommand(app, "eval", kEvalSummary, eval_options(), &run_eval),
          add_subcommand(app, "solve", kSolveSummary, solve_options(), &run_solve),
          add_convert_command(app),
          add_simulate_command(app),
          add_report_command(app)};
}

std::string cli_markdown() {
  return "# Command-line reference\n\n"
         "Generated by `exflow help-markdown` from the options tables in "
         "`apps/exflow/commands.cpp` and `apps/exflow-run/run_options.cpp`.\n"
         "Exit status: 0 success, 1 bad input (trace, placement, file), 2 bad usage.\n\n" +
         options_markdown("exflow profile", kProfileSummary, profile_options()) +
         options_markdown("exflow eval", kEvalSummary, eval_options()) +
         options_markdown("exflow solve", kSolveSummary, solve_options()) + convert_markdown() +
         simulate_markdown() + report_markdown() +
         options_markdown("exflow-run", kRunSummary, run_options());
}

}  // namespace exflow::cli
