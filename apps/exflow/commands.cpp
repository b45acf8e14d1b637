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

#include "command_args.hpp"
#include "convert_command.hpp"
#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/formats.hpp"
#include "exflow/json.hpp"
#include "exflow/outputs.hpp"
#include "exflow/placement.hpp"
#include "exflow/plan.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "options.hpp"
#include "progress_bar.hpp"
#include "report_command.hpp"
#include "run_options.hpp"
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

Placement read_placement_arg(const std::string& path, const PlacementFileArgs& args, int layers,
                             int experts, int gpus) {
  Placement p = read_placement_file(path, layers, experts, gpus, args.decoder());
  if (args.redundant_total < 0) return p;
  std::vector<int> per_layer(static_cast<std::size_t>(layers), 0);
  for (const Replica& r : p.replicas()) ++per_layer[static_cast<std::size_t>(r.layer)];
  for (int l = 0; l < layers; ++l) {
    if (per_layer[static_cast<std::size_t>(l)] != args.redundant_total) {
      throw InputError(path + ": layer " + std::to_string(l) + " has " +
                       std::to_string(per_layer[static_cast<std::size_t>(l)]) +
                       " redundant slots (" + std::to_string(experts) + " experts in " +
                       std::to_string(experts + per_layer[static_cast<std::size_t>(l)]) +
                       " slots), --redundant-total says " + std::to_string(args.redundant_total));
    }
  }
  return p;
}

namespace {

// ---------------------------------------------------------------------------------------------
// The commands' argument structs (the shared groups are in command_args.hpp).

struct ProfileArgs : TraceArgs {};

struct EvalArgs : TraceArgs, TopologyArgs, BaselineArgs, PlacementFileArgs {
  std::string placement;
  bool unbalanced = false;
  std::string scheme = "coherent";
  std::string replica_choice = "nearest";
};

// The planning options live in `plan` (PlanOptions, filled by the rows of plan_option_specs());
// the rest say where the input comes from and where the output goes.
struct SolveArgs : TraceArgs, TopologyArgs {
  PlanOptions plan;
  std::string affinity_counts;
  int affinity_k = 1;
  std::string expert_loads;
  std::string out_dir = "solutions";
  std::string sglang;
  std::string eplb;
  std::string vllm_ascend;
  std::string eplb_padding = "max";
  std::string dense_layers;
  std::string previous;
  bool moves_curve = false;
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
    add_placement_file_rows(t);
    t.push_back(option<EvalArgs>(&EvalArgs::scheme, "--scheme",
                                 "the scheme the top-level metrics show: coherent (the seed's), "
                                 "standard (two all-to-alls), deepep (DeepEP normal mode) or "
                                 "deepep-ll (DeepEP low-latency); every scheme is listed too")
                    .check(CLI::IsMember({"coherent", "standard", "deepep", "deepep-ll"})));
    t.push_back(option<EvalArgs>(&EvalArgs::replica_choice, "--replica-choice",
                                 "which copy of a replicated expert a token uses: nearest (the "
                                 "owner's, else the nearest) or even (standard schemes: the "
                                 "owner's, else spread evenly over the copies, as SGLang's static "
                                 "dispatch; expected counts)")
                    .check(CLI::IsMember({"nearest", "even"})));
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
    for (const PlanOptionSpec& spec : plan_option_specs()) {
      if (spec.name != "seq_len") t.push_back(plan_option_row<SolveArgs>(spec));
    }
    t.push_back(
        option<SolveArgs>(&SolveArgs::out_dir, "--out-dir",
                          "directory for the placement CSV (the original tool's file name)"));
    t.push_back(option<SolveArgs>(&SolveArgs::sglang, "--sglang",
                                  "also write SGLang's --init-expert-location JSON here")
                    .shown_default("none"));
    t.push_back(option<SolveArgs>(&SolveArgs::eplb, "--eplb",
                                  "also write DeepSeek EPLB's phy2log/log2phy/logcnt JSON here")
                    .shown_default("none"));
    t.push_back(option<SolveArgs>(&SolveArgs::vllm_ascend, "--vllm-ascend",
                                  "also write vllm-ascend's expert map JSON (eplb_config."
                                  "expert_map_path) here")
                    .shown_default("none"));
    t.push_back(option<SolveArgs>(&SolveArgs::eplb_padding, "--eplb-padding",
                                  "width of log2phy in --eplb: max (the most copies of any "
                                  "expert, as SGLang and EPLB) or redundant+1 (as vLLM's EPLB)")
                    .check(CLI::IsMember({"max", "redundant+1"})));
    add_dense_layers_row(t);
    t.push_back(option<SolveArgs>(&SolveArgs::previous, "--previous",
                                  "rebalance: the placement the engine runs now (CSV, SGLang or "
                                  "EPLB JSON); the search starts there and --max-moves limits "
                                  "the slots it changes")
                    .check(CLI::ExistingFile)
                    .shown_default("none"));
    t.push_back(option<SolveArgs>(&SolveArgs::moves_curve, "--moves-curve",
                                  "with --previous: also print the cost against the slots allowed "
                                  "to move (0, 1, 2, 5, 10, 20 and 100% of them), from the one "
                                  "search"));
    t.push_back(plan_option_row<SolveArgs>(plan_option_spec("seq_len")));
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
    nlohmann::json j = trace;
    j.update(nlohmann::json(p));
    j["options"] = options_json(profile_options(), args);
    print_json(j);
    return 0;
  }
  std::cout << "trace     " << describe(trace) << "\n\n" << profile_table(p, trace.experts());
  return 0;
}

int run_eval(const EvalArgs& args) {
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  Placement placement =
      read_placement_arg(args.placement, args, trace.layers(), trace.experts(), topology.gpus());
  validate(placement, topology, args.unbalanced ? Balance::kNone : Balance::kExact, args.placement);
  EvalOptions eo;
  eo.threads = args.threads;
  eo.sequence_length = args.seq_len;
  eo.progress = &bar;
  eo.scheme = parse_scheme(args.scheme);
  eo.replica_choice = parse_replica_choice(args.replica_choice);
  const Comparison m = compare_with_vanilla(trace, placement, topology, eo);
  if (args.json) {
    nlohmann::json j = m;
    j["placement"] = args.placement;
    j["trace"] = trace;
    j["topology"] = topology;
    j["options"] = options_json(eval_options(), args);
    print_json(j);
    return 0;
  }
  std::cout << "trace     " << describe(trace) << "\n"
            << "topology  " << describe(topology) << "\n"
            << "placement " << args.placement << "\n\n"
            << compare_metrics({"placement", "vanilla"}, {&m.placement, &m.vanilla},
                               {&m.placement_baseline, &m.vanilla_baseline})
            << "\n"
            << scheme_table(m);
  return 0;
}

// The planning options as given, with the run's threads, progress bar and (--verbose) log.
PlanOptions plan_options_of(const SolveArgs& args, Progress* progress) {
  PlanOptions options = args.plan;
  options.threads = args.threads;
  options.progress = progress;
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

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The placement CSV under `name` in --out-dir, and the serving formats where asked, published
// together.
std::string write_outputs(const SolveArgs& args, const std::string& name, const Placement& p,
                          OutputSet& outputs) {
  std::string path = (std::filesystem::path(args.out_dir) / name).string();
  write_placement_csv(path, p);
  const DecoderLayers decoder =
      args.dense_layers.empty() ? DecoderLayers{} : parse_dense_layers(args.dense_layers);
  if (!args.sglang.empty()) write_sglang_expert_location(args.sglang, p, decoder);
  if (!args.eplb.empty()) {
    write_eplb_maps(
        args.eplb, p, decoder,
        args.eplb_padding == "max" ? EplbPadding::kMaxCopies : EplbPadding::kRedundantPlusOne);
  }
  if (!args.vllm_ascend.empty()) write_vllm_ascend_expert_map(args.vllm_ascend, p, decoder);
  outputs.commit();
  return path;
}

// The outputs' names, places and --dense-layers, checked before any work.
void check_outputs(const SolveArgs& args, const OutputSet& outputs) {
  const auto json_name = [](const std::string& path, const char* flag) {
    const std::string ext = std::filesystem::path(path).extension().string();
    if (!path.empty() && ext != ".json" && ext != ".JSON") {
      throw UsageError(std::string(flag) + " " + path +
                       ": the file name must end in .json (SGLang reads any other "
                       "--init-expert-location value as inline JSON)");
    }
  };
  json_name(args.sglang, "--sglang");
  json_name(args.eplb, "--eplb");
  const std::string& ascend = args.vllm_ascend;
  if (!ascend.empty() &&
      (ascend.size() < 5 || ascend.compare(ascend.size() - 5, 5, ".json") != 0)) {
    throw UsageError("--vllm-ascend " + ascend +
                     ": the file name must end in .json (vllm-ascend rejects any other "
                     "expert_map_path)");
  }
  if (!args.dense_layers.empty()) parse_dense_layers(args.dense_layers);
  const std::vector<std::pair<const char*, const std::string*>> files = {
      {"--sglang", &args.sglang}, {"--eplb", &args.eplb}, {"--vllm-ascend", &args.vllm_ascend}};
  for (std::size_t i = 0; i < files.size(); ++i) {
    for (std::size_t j = i + 1; j < files.size(); ++j) {
      if (!files[i].second->empty() && *files[i].second == *files[j].second) {
        throw UsageError(std::string(files[i].first) + " and " + files[j].first +
                         " name the same file " + *files[i].second);
      }
    }
  }
  const auto check = [&](const char* flag, const std::string& path) {
    try {
      outputs.check(path);
    } catch (const IoError& e) {
      throw IoError(std::string(flag) + " " + e.what());
    }
  };
  check("--out-dir", (std::filesystem::path(args.out_dir) / "solution.csv").string());
  for (const auto& [flag, path] : files) {
    if (!path->empty()) check(flag, *path);
  }
}

// --expert-loads: each layer balanced by its expert loads alone.
int run_solve_from_loads(const SolveArgs& args, OutputSet& outputs) {
  const auto start = std::chrono::steady_clock::now();
  if (args.experts > 0) {
    throw UsageError("--experts does not apply to --expert-loads (E is the file's width)");
  }
  // SGLang counts every decoder layer: the dense ones are dropped here and written back.
  ExpertLoads loads =
      moe_rows(read_expert_loads(args.expert_loads),
               args.dense_layers.empty() ? DecoderLayers{} : parse_dense_layers(args.dense_layers),
               args.expert_loads);
  Topology topology = make_topology(args);
  const PlanResult r = plan(loads, topology, plan_options_of(args, nullptr));
  const double worst = r.objective;
  const double worst_vanilla = *std::max_element(r.vanilla_load_ratio_per_layer.begin(),
                                                 r.vanilla_load_ratio_per_layer.end());
  std::string name = "solution_intra" + std::to_string(topology.gpus_per_node()) + "_inter" +
                     std::to_string(topology.nodes()) + "_loadratio" + python_float_repr(worst) +
                     ".csv";
  std::string path = write_outputs(args, name, r.placement, outputs);
  const double seconds = seconds_since(start);
  if (args.json) {
    nlohmann::json j = {
        {"method", r.method == Method::kEplb ? "eplb" : "load-balance"},
        {"status", to_string(r.status)},
        {"load_ratio_max", worst},
        {"load_ratio_per_layer", r.load_ratio_per_layer},
        {"replicas", r.placement.replicas().size()},
        {"cost", nullptr},
        {"vanilla",
         {{"load_ratio_max", worst_vanilla},
          {"load_ratio_per_layer", r.vanilla_load_ratio_per_layer}}},
        {"seconds", seconds},
        {"placement", path},
        {"loads",
         {{"path", args.expert_loads}, {"layers", loads.layers}, {"experts", loads.experts}}},
        {"topology", topology},
        {"options", options_json(solve_options(), args)}};
    print_json(j);
    return 0;
  }
  std::printf("%s placement in %s from %s (%d layers x %d experts)\n",
              r.method == Method::kEplb ? "eplb" : "load-balanced", format_seconds(seconds).c_str(),
              args.expert_loads.c_str(), loads.layers, loads.experts);
  std::printf("  GPU load ratio worst layer %.3f (vanilla %.3f); %zu replicas\n", worst,
              worst_vanilla, r.placement.replicas().size());
  std::printf("  transfer costs: unavailable without a trace or affinity counts\n");
  std::printf("  placement written to %s\n", path.c_str());
  return 0;
}

// --affinity-counts: the graph solvers on the counts; the objective is the graph's (for a
// top-1 trace's counts the evaluator's cost; for top-k a pairwise surrogate).
int run_solve_from_counts(const SolveArgs& args, OutputSet& outputs) {
  const auto start = std::chrono::steady_clock::now();
  AffinityGraph graph = read_affinity_counts(args.affinity_counts, args.affinity_k);
  if (args.experts > 0 && args.experts != graph.experts()) {
    throw UsageError("--experts " + std::to_string(args.experts) + " does not match the " +
                     std::to_string(graph.experts()) + " experts of " + args.affinity_counts);
  }
  Topology topology = make_topology(args);
  const PlanResult r = plan(graph, topology, plan_options_of(args, nullptr));
  std::string name = "solution_intra" + std::to_string(topology.gpus_per_node()) + "_inter" +
                     std::to_string(topology.nodes()) + "_objective" +
                     python_float_repr(r.objective) + ".csv";
  std::string path = write_outputs(args, name, r.placement, outputs);
  const double seconds = seconds_since(start);
  if (args.json) {
    nlohmann::json j = r;
    j["vanilla_objective"] = r.vanilla_objective;
    j["cost"] = nullptr;
    j["seconds"] = seconds;
    j["placement"] = path;
    j["counts"] = {{"path", args.affinity_counts},
                   {"layers", graph.layers()},
                   {"experts", graph.experts()},
                   {"tokens", graph.tokens()},
                   {"k", args.affinity_k}};
    j["topology"] = topology;
    j["options"] = options_json(solve_options(), args);
    print_json(j);
    return 0;
  }
  std::printf("%s placement in %s%s: %s\n", to_string(r.method), format_seconds(seconds).c_str(),
              r.optimal ? " (proven optimal)" : "", r.detail.c_str());
  const double vanilla_objective = r.vanilla_objective;
  std::printf(
      "  pairwise objective per token %.4f vs vanilla %.4f: %.1f%% lower\n", r.objective,
      vanilla_objective,
      vanilla_objective > 0 ? 100.0 * (vanilla_objective - r.objective) / vanilla_objective : 0.0);
  if (r.lower_bound)
    std::printf("  lower bound %.4f, gap %.2f%%\n", *r.lower_bound, 100.0 * *r.gap);
  std::printf("  top-k cost, locality and load per GPU: unavailable without a trace\n");
  std::printf("  placement written to %s\n", path.c_str());
  return 0;
}

nlohmann::json curve_json(const std::vector<MovesCurvePoint>& curve) {
  nlohmann::json out = nlohmann::json::array();
  for (const MovesCurvePoint& p : curve) {
    out.push_back(
        {{"percent", p.percent}, {"max_moves", p.max_moves}, {"moved", p.moved}, {"cost", p.cost}});
  }
  return out;
}

std::string curve_table(const std::vector<MovesCurvePoint>& curve) {
  std::string out = "slots allowed to move     moved    cost/token   recovered\n";
  const double start = curve.front().cost;
  const double best = curve.back().cost;
  for (const MovesCurvePoint& p : curve) {
    char line[160];
    std::snprintf(line, sizeof line, "%5.0f%% %12lld %10lld %13.4f %10.1f%%\n", p.percent,
                  static_cast<long long>(p.max_moves), static_cast<long long>(p.moved), p.cost,
                  start > best ? 100.0 * (start - p.cost) / (start - best) : 100.0);
    out += line;
  }
  return out;
}

int run_solve(const SolveArgs& args) {
  const int inputs =
      !args.trace.empty() + !args.affinity_counts.empty() + !args.expert_loads.empty();
  if (inputs != 1) {
    throw UsageError("solve needs exactly one of TRACE, --affinity-counts and --expert-loads");
  }
  OutputSet outputs;
  check_outputs(args, outputs);
  if (!args.expert_loads.empty()) return run_solve_from_loads(args, outputs);
  if (!args.affinity_counts.empty()) return run_solve_from_counts(args, outputs);
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  PlanOptions options = plan_options_of(args, &bar);
  if (args.moves_curve && (args.previous.empty() || options.max_moves >= 0)) {
    throw UsageError("--moves-curve needs --previous and no --max-moves (it shows every budget)");
  }
  if (!args.previous.empty()) {
    options.previous = read_placement_file(
        args.previous, trace.layers(), trace.experts(), topology.gpus(),
        args.dense_layers.empty() ? DecoderLayers{} : parse_dense_layers(args.dense_layers));
  }
  const PlanResult r = plan(trace, topology, options);
  const Comparison& m = *r.metrics;
  const std::vector<MovesCurvePoint> curve =
      args.moves_curve ? moves_curve(r, *options.previous) : std::vector<MovesCurvePoint>{};
  std::string name =
      seed_solution_filename(topology.gpus_per_node(), topology.nodes(), m.placement.cost,
                             m.placement.cintra, m.placement.cinter);
  std::string path = write_outputs(args, name, r.placement, outputs);
  const double seconds = seconds_since(start);
  if (args.json) {
    nlohmann::json j = r;
    j["bipart"] = args.plan.bipart;
    j["max_load_ratio"] = to_string(args.plan.max_load_ratio);
    j["seconds"] = seconds;
    j["placement"] = path;
    j["trace"] = trace;
    j["topology"] = topology;
    j["options"] = options_json(solve_options(), args);
    if (args.moves_curve) j["moves_curve"] = curve_json(curve);
    print_json(j);
    return 0;
  }
  std::cout << solve_summary(r, seconds, trace.tokens());
  if (!args.previous.empty()) {
    std::cout << "  " << r.moves.size() << " expert slots change from " << args.previous
              << " (every other copy stays on its GPU)\n";
  }
  std::cout << "  placement written to " << path << "\n\n"
            << "trace     " << describe(trace) << "\n"
            << "topology  " << describe(topology) << "\n\n"
            << compare_metrics({to_string(r.method), "vanilla"}, {&m.placement, &m.vanilla},
                               {&m.placement_baseline, &m.vanilla_baseline})
            << "\n"
            << scheme_table(m);
  if (args.moves_curve) std::cout << "\n" << curve_table(curve);
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
         "`apps/exflow/commands.cpp`, `src/solve/plan_options.cpp` (the planning options of "
         "`exflow solve`, shared with Python's `exflow.solve`) and "
         "`apps/common/run_options.cpp`.\n"
         "Exit status: 0 success, 1 bad input (trace, placement, file), 2 bad usage.\n\n" +
         options_markdown("exflow profile", kProfileSummary, profile_options()) +
         options_markdown("exflow eval", kEvalSummary, eval_options()) +
         options_markdown("exflow solve", kSolveSummary, solve_options()) + convert_markdown() +
         simulate_markdown() + report_markdown() +
         options_markdown("exflow-run", kRunSummary, run_options());
}

}  // namespace exflow::cli
