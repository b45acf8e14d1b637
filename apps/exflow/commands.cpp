#include "commands.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <optional>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "options.hpp"
#include "progress_bar.hpp"
#include "text_report.hpp"

namespace exflow::cli {
namespace {

// ---------------------------------------------------------------------------------------------
// Argument structs. Shared groups are base structs so that their table rows are shared too.

struct TraceArgs {
  std::string trace;
  int experts = 0;  // 0: largest id + 1
  int topk = 0;     // 0: all columns
  int threads = 0;  // 0: all cores
  bool json = false;
  bool quiet = false;
};

struct TopologyArgs {
  int gpus_per_node = 0;
  int nodes = 1;
  double intra_cost = 1.0;
  double inter_cost = 2.0;
};

struct ProfileArgs : TraceArgs {};

struct EvalArgs : TraceArgs, TopologyArgs {
  std::string placement;
  bool unbalanced = false;
};

struct SolveArgs : TraceArgs, TopologyArgs {
  std::string method = "auto";
  std::string out_dir = "solutions";
  double time_limit = 0;
  std::uint64_t seed = 1;
  int starts = 8;
  int min_experts_per_gpu = -1;
  std::int64_t incremental = 0;
  bool bipart = false;
};

template <class Args>
void add_trace_rows(OptionTable<Args>& t) {
  t.push_back(option<Args>(&TraceArgs::trace, "TRACE",
                           "routing trace (.npy, integer [tokens, layers] or [tokens, layers, k])")
                  .must()
                  .check(CLI::ExistingFile));
  t.push_back(option<Args>(&TraceArgs::experts, "--experts",
                           "experts per layer E (must exceed every id in the trace)")
                  .check(CLI::Range(1, 1 << 16))
                  .shown_default("largest id + 1"));
  t.push_back(option<Args>(&TraceArgs::topk, "--topk", "use only the first K expert columns")
                  .check(CLI::Range(1, 64))
                  .shown_default("all columns"));
  t.push_back(option<Args>(&TraceArgs::threads, "--threads", "worker threads")
                  .check(CLI::Range(0, 4096))
                  .shown_default("all cores"));
}

template <class Args>
void add_output_rows(OptionTable<Args>& t) {
  t.push_back(option<Args>(&TraceArgs::json, "--json", "print one JSON object on stdout"));
  t.push_back(option<Args>(&TraceArgs::quiet, "--quiet", "no progress bar on stderr"));
}

template <class Args>
void add_topology_rows(OptionTable<Args>& t) {
  t.push_back(option<Args>(&TopologyArgs::gpus_per_node, "--gpus-per-node", "GPUs per node P")
                  .must()
                  .check(CLI::Range(1, 65536)));
  t.push_back(option<Args>(&TopologyArgs::nodes, "--nodes", "nodes N").check(CLI::Range(1, 65536)));
  t.push_back(option<Args>(&TopologyArgs::intra_cost, "--intra-cost",
                           "hop cost between two GPUs of one node")
                  .check(CLI::NonNegativeNumber));
  t.push_back(option<Args>(&TopologyArgs::inter_cost, "--inter-cost",
                           "hop cost between GPUs of different nodes")
                  .check(CLI::NonNegativeNumber));
}

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
                                             "placement CSV (header Expert,Node)")
                                .must()
                                .check(CLI::ExistingFile));
    add_topology_rows(t);
    t.push_back(
        option<EvalArgs>(&EvalArgs::unbalanced, "--unbalanced",
                         "accept placements without exactly E/G experts per GPU per layer"));
    add_output_rows(t);
    return t;
  }();
  return table;
}

const OptionTable<SolveArgs>& solve_options() {
  static const OptionTable<SolveArgs> table = [] {
    OptionTable<SolveArgs> t;
    add_trace_rows(t);
    add_topology_rows(t);
    t.push_back(option<SolveArgs>(&SolveArgs::method, "--method",
                                  "auto (exact where it applies, else fast), exact (proven "
                                  "optimum), ilp (COIN-OR CBC), fast (local search), bcd (block "
                                  "descent baseline), vanilla (contiguous)")
                    .check(CLI::IsMember({"auto", "exact", "ilp", "fast", "bcd", "vanilla"})));
    t.push_back(option<SolveArgs>(&SolveArgs::time_limit, "--time-limit",
                                  "seconds the solver may use (0: fast and bcd run their fixed "
                                  "budget, ilp 60 s)")
                    .check(CLI::NonNegativeNumber));
    t.push_back(
        option<SolveArgs>(&SolveArgs::seed, "--seed", "seed of fast and bcd (deterministic)"));
    t.push_back(
        option<SolveArgs>(&SolveArgs::starts, "--starts", "independent starts of fast and bcd")
            .check(CLI::Range(1, 4096)));
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
    add_output_rows(t);
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

int run_eval(const EvalArgs& args) {
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  Placement placement =
      read_placement_csv(args.placement, trace.layers(), trace.experts(), topology.gpus());
  validate(placement, topology, args.unbalanced ? Balance::kNone : Balance::kExact, args.placement);
  Placement vanilla = vanilla_placement(trace.layers(), trace.experts(), topology);
  EvalOptions eo;
  eo.threads = args.threads;
  eo.progress = &bar;
  std::vector<Metrics> m = evaluate_all(trace, {&placement, &vanilla}, topology, eo);
  if (args.json) {
    nlohmann::json j = metrics_json(m[0]);
    j["placement"] = args.placement;
    j["vanilla"] = metrics_json(m[1]);
    j["trace"] = trace_json(trace);
    j["topology"] = topology_json(topology);
    j["options"] = options_json(eval_options(), args);
    print_json(j);
    return 0;
  }
  std::cout << "trace     " << describe(trace) << "\n"
            << "topology  " << describe(topology) << "\n"
            << "placement " << args.placement << "\n\n"
            << compare_metrics({"placement", "vanilla"}, {&m[0], &m[1]});
  return 0;
}

int run_solve(const SolveArgs& args) {
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  SolveOptions options;
  options.method = parse_method(args.method);
  options.time_limit = args.time_limit;
  options.seed = args.seed;
  options.threads = args.threads;
  options.starts = args.starts;
  options.min_experts_per_gpu = args.min_experts_per_gpu;
  options.bipart = args.bipart;
  std::int64_t tokens_used = trace.tokens();
  SolveResult r =
      args.incremental > 0
          ? solve_incremental(trace, topology, options, args.incremental, &tokens_used,
                              args.threads)
          : solve(AffinityGraph::from_trace(trace, args.threads, &bar), topology, options);
  Placement vanilla = vanilla_placement(trace.layers(), trace.experts(), topology);
  EvalOptions eo;
  eo.threads = args.threads;
  eo.progress = &bar;
  std::vector<Metrics> m = evaluate_all(trace, {&r.placement, &vanilla}, topology, eo);
  std::string name = seed_solution_filename(topology.gpus_per_node(), topology.nodes(), m[0].cost,
                                            m[0].cintra, m[0].cinter);
  std::string path = (std::filesystem::path(args.out_dir) / name).string();
  write_placement_csv(path, r.placement);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The bound is on the pairwise objective, which is the evaluator's cost only for top-1; a
  // placement profiled on a prefix is optimal (and bounded) only for that prefix, so the
  // whole trace's bound is computed instead.
  if (tokens_used < trace.tokens()) {
    r.optimal = false;
    r.lower_bound = objective_lower_bound(AffinityGraph::from_trace(trace, args.threads, &bar),
                                          topology, args.min_experts_per_gpu);
  }
  std::optional<double> bound;
  if (trace.k() == 1 && r.lower_bound) bound = std::min(*r.lower_bound, m[0].cost);
  if (args.json) {
    nlohmann::json bound_json = nullptr;
    nlohmann::json gap_json = nullptr;
    if (bound) {
      bound_json = *bound;
      gap_json = m[0].cost > 0 ? (m[0].cost - *bound) / m[0].cost : 0.0;
    }
    nlohmann::json j = metrics_json(m[0]);
    j["method"] = to_string(r.method);
    j["bipart"] = args.bipart;
    j["optimal"] = r.optimal && trace.k() == 1;
    j["lower_bound"] = bound_json;
    j["gap"] = gap_json;
    j["objective"] = r.objective;
    j["detail"] = r.detail;
    j["steps"] = r.steps;
    j["tokens_used"] = tokens_used;
    j["seconds"] = seconds;
    j["solve_seconds"] = r.seconds;
    j["placement"] = path;
    j["vanilla"] = metrics_json(m[1]);
    j["trace"] = trace_json(trace);
    j["topology"] = topology_json(topology);
    j["options"] = options_json(solve_options(), args);
    print_json(j);
    return 0;
  }
  std::cout << solve_summary(r, m[0], m[1], bound, seconds, tokens_used, trace.tokens())
            << "  placement written to " << path << "\n\n"
            << "trace     " << describe(trace) << "\n"
            << "topology  " << describe(topology) << "\n\n"
            << compare_metrics({to_string(r.method), "vanilla"}, {&m[0], &m[1]});
  return 0;
}

template <class Args>
Subcommand add(CLI::App& app, const char* name, const char* summary, const OptionTable<Args>& table,
               int (*runner)(const Args&)) {
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(name, summary);
  register_options(*sub, table, *args);
  return Subcommand{sub, [args, runner] { return runner(*args); }};
}

}  // namespace

std::vector<Subcommand> add_subcommands(CLI::App& app) {
  return {add(app, "profile", kProfileSummary, profile_options(), &run_profile),
          add(app, "eval", kEvalSummary, eval_options(), &run_eval),
          add(app, "solve", kSolveSummary, solve_options(), &run_solve)};
}

std::string cli_markdown() {
  return "# Command-line reference\n\n"
         "Generated by `exflow help-markdown` from the options tables in "
         "`apps/exflow/commands.cpp`.\n"
         "Exit status: 0 success, 1 bad input (trace, placement, file), 2 bad usage.\n\n" +
         options_markdown("profile", kProfileSummary, profile_options()) +
         options_markdown("eval", kEvalSummary, eval_options()) +
         options_markdown("solve", kSolveSummary, solve_options());
}

}  // namespace exflow::cli
