#include "report_command.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>

#include "command_args.hpp"
#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/outputs.hpp"
#include "exflow/plan.hpp"
#include "exflow/report.hpp"
#include "exflow/simulate.hpp"
#include "exflow/solve.hpp"
#include "progress_bar.hpp"
#include "simulate_command.hpp"
#include "text_report.hpp"

namespace exflow::cli {
namespace {

struct ReportArgs : TraceArgs, TopologyArgs, BaselineArgs, SimulationArgs, PlacementFileArgs {
  std::vector<std::string> placements;
  std::string previous;
  std::string output;
  int convergence_points = 5;
  int heatmap_experts = 64;
};

constexpr const char* kReportSummary =
    "Write one self-contained HTML report (inline SVG, no network): affinity heatmaps of every "
    "layer pair, tokens staying on their GPU per layer and per-GPU load for vanilla and each "
    "placement, the cost of placements solved on growing prefixes of the trace, the "
    "simulator's time per decode step, and every scheme side by side for vanilla and each "
    "placement with the fastest (scheme, placement), and with --previous the cost against the "
    "expert slots allowed to move. Solves a placement for --scheme when none is given. See "
    "docs/report.md.";

constexpr const char* kDefaultModel = "mixtral-8x7b";
// Heatmap rows need max(kMinHeatmapRowTokens, mean expert load / kSparseRowFraction) transitions.
constexpr std::int64_t kMinHeatmapRowTokens = 5;
constexpr std::int64_t kSparseRowFraction = 20;
// --heatmap-experts all: at least any trace's expert count.
constexpr int kAllHeatmapExperts = 1 << 16;

const OptionTable<ReportArgs>& report_options() {
  static const OptionTable<ReportArgs> table = [] {
    OptionTable<ReportArgs> t;
    add_trace_rows(t);
    add_topology_rows(t);
    t.push_back(option<ReportArgs>(&ReportArgs::placements, "--placement",
                                   "placements to show (CSV, SGLang or EPLB JSON); repeat for "
                                   "several")
                    .check(CLI::ExistingFile)
                    .shown_default("one solved by exflow solve's defaults"));
    t.push_back(option<ReportArgs>(&ReportArgs::previous, "--previous",
                                   "the placement an engine runs (CSV, SGLang or EPLB JSON): "
                                   "adds the rebalancing chart, the cost of --scheme after "
                                   "moving at most 0, 1, 2, 5, 10, 20 and 100% of its expert "
                                   "slots (exflow solve --previous --moves-curve)")
                    .check(CLI::ExistingFile));
    t.push_back(
        option<ReportArgs>(&ReportArgs::output, "-o,--output", "HTML file to write").must());
    t.push_back(option<ReportArgs>(&ReportArgs::convergence_points, "--convergence-points",
                                   "prefixes of the trace solved for the convergence chart "
                                   "(n = T/2^(K-1) ... T, at least 64 tokens); 0 skips it")
                    .check(CLI::Range(0, 16)));
    t.push_back(option<ReportArgs>(&ReportArgs::heatmap_experts, "--heatmap-experts",
                                   "experts per heatmap axis: all, or the most loaded ones"));
    t.back().configure = [](CLI::Option* o) {
      // "all" stands for the most experts a trace can have; a number is checked as given.
      o->transform(CLI::Validator(
          [](std::string& text) -> std::string {
            if (text == "all") {
              text = std::to_string(kAllHeatmapExperts);
              return {};
            }
            return CLI::Range(2, 1024)(text);
          },
          "INT in [2 - 1024] or all"));
    };
    add_simulation_rows(t, std::string(kDefaultModel) + "'s sizes");
    add_scheme_row(t,
                   "the scheme the report's own solves optimise and whose row the schemes table "
                   "marks: coherent, standard, deepep or deepep-ll; every scheme is simulated");
    add_replica_choice_row(t);
    add_placement_file_rows(t);
    add_baseline_rows(t);
    t.push_back(option<ReportArgs>(&ReportArgs::quiet, "--quiet", "no progress bar on stderr"));
    return t;
  }();
  return table;
}

// What the report's own solves take from its arguments.
struct SolveSettings {
  int threads = 0;
  int redundant_total = 0;
  Scheme scheme = Scheme::kContextCoherent;
  ReplicaChoice replica_choice = ReplicaChoice::kNearest;
  std::int64_t seq_len = 1;
};

// exflow solve's placement with its defaults (exflow::plan), optimising `settings.scheme` with
// `settings.redundant_total` redundant slots, on the trace's graph `graph`; the report scores it
// itself.
Placement solve_defaults(const Trace& trace, const AffinityGraph& graph, const Topology& topology,
                         const SolveSettings& settings) {
  PlanOptions options;
  options.threads = settings.threads;
  options.redundant_total = settings.redundant_total;
  options.scheme = settings.scheme;
  options.replica_choice = settings.replica_choice;
  options.seq_len = settings.seq_len;
  options.score = false;
  return plan(trace, graph, topology, options).placement;
}

// The `count` most loaded experts of a layer, in id order (all when count >= E).
std::vector<int> shown_experts(const AffinityGraph& graph, int layer, int count) {
  std::vector<int> ids(static_cast<std::size_t>(graph.experts()));
  std::iota(ids.begin(), ids.end(), 0);
  if (count < graph.experts()) {
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int a, int b) { return graph.load(layer, a) > graph.load(layer, b); });
    ids.resize(static_cast<std::size_t>(count));
    std::sort(ids.begin(), ids.end());
  }
  return ids;
}

// The schemes table: one row per scheme (in the simulation's order), one column per placement
// name (vanilla first), and the fastest configuration.
void add_schemes_table(ReportData& d, const std::vector<ConfigurationResult>& simulated,
                       Scheme primary) {
  for (const ConfigurationResult& r : simulated) {
    if (std::find(d.scheme_columns.begin(), d.scheme_columns.end(), r.placement_name) ==
        d.scheme_columns.end()) {
      d.scheme_columns.push_back(r.placement_name);
    }
  }
  for (const ConfigurationResult& r : simulated) {
    const std::string scheme = configuration_prefix(r.scheme);
    auto row = std::find_if(d.schemes.begin(), d.schemes.end(),
                            [&](const ReportSchemeRow& x) { return x.scheme == scheme; });
    if (row == d.schemes.end()) {
      d.schemes.push_back(
          {scheme, r.scheme == primary, std::vector<ReportSchemeCell>(d.scheme_columns.size())});
      row = d.schemes.end() - 1;
    }
    const auto column = static_cast<std::size_t>(
        std::find(d.scheme_columns.begin(), d.scheme_columns.end(), r.placement_name) -
        d.scheme_columns.begin());
    row->cells[column] = {r.seconds_per_step * 1e3, r.speedup, r.metrics.inter, r.metrics.intra};
  }
  const ConfigurationResult& best = simulated[fastest(simulated)];
  d.fastest = best.name + " (scheme " + configuration_prefix(best.scheme) + ", placement " +
              best.placement_name + "): " + format_fixed(best.seconds_per_step * 1e3, 3) +
              " ms per decode step, " + format_fixed(best.speedup, 2) + "x baseline/vanilla.";
}

int run_report(const ReportArgs& args) {
  const auto start = std::chrono::steady_clock::now();
  // Everything that can be refused is checked before the solves.
  const std::filesystem::path out_dir = std::filesystem::path(args.output).parent_path();
  if (!out_dir.empty() && !std::filesystem::is_directory(out_dir)) {
    throw IoError(args.output + ": cannot write the report, directory " + out_dir.string() +
                  " does not exist");
  }
  check_writable(args.output);
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  SimulationArgs sim_args = args;
  if (sim_args.model.empty() && sim_args.hidden == 0 && sim_args.kv_bytes_per_token < 0) {
    sim_args.model = kDefaultModel;
  }
  std::string preset;
  SimulationOptions so = simulation_options_of(sim_args, args, topology, &preset);
  so.threads = args.threads;
  const int L = trace.layers();
  const int E = trace.experts();
  std::vector<std::pair<std::string, Placement>> placements;
  for (const std::string& path : args.placements) {
    Placement p = read_placement_arg(path, args, L, E, topology.gpus());
    validate(p, topology, Balance::kNone, path);
    placements.emplace_back(std::filesystem::path(path).filename().string(), std::move(p));
  }
  std::optional<Placement> previous;
  if (!args.previous.empty()) {
    previous = read_placement_arg(args.previous, args, L, E, topology.gpus());
  }
  // The stock layout, with --redundant-total or the first placement's redundant slots where the
  // experts alone do not divide over the GPUs; the report's own solves get as many.
  const Placement vanilla = args.redundant_total >= 0 || placements.empty()
                                ? stock_placement(L, E, std::max(0, args.redundant_total), topology)
                                : stock_placement_for(placements.front().second, topology);
  const int redundant_total = args.redundant_total >= 0
                                  ? args.redundant_total
                                  : static_cast<int>(vanilla.replicas().size()) / L;
  const AffinityGraph graph = AffinityGraph::from_trace(trace, args.threads, &bar);
  const SolveSettings settings{args.threads, redundant_total, args.scheme, args.replica_choice,
                               args.seq_len};
  std::optional<Placement> solved_full;
  if (placements.empty()) {
    solved_full = solve_defaults(trace, graph, topology, settings);
    placements.emplace_back("solved", *solved_full);
  }

  // Simulation: every scheme for vanilla and each placement (scheme_configurations: first
  // baseline/vanilla, exflow/vanilla, exflow/<each placement>). Its evaluator passes also give
  // the context-coherent metrics of vanilla and every placement, at 1 + i.
  std::vector<NamedPlacement> named;
  for (const auto& [name, p] : placements) named.push_back({name, &p});
  const std::vector<ConfigurationResult> simulated =
      simulate(trace, topology, scheme_configurations(vanilla, named), so);

  ReportData d;
  d.title = "exflow report: " + std::filesystem::path(trace.source()).filename().string();
  d.facts.emplace_back("trace", describe(trace));
  d.facts.emplace_back("topology", describe(topology));
  const Metrics& vanilla_metrics = simulated[1].metrics;
  for (std::size_t i = 0; i <= placements.size(); ++i) {
    const std::string name = i == 0 ? "vanilla" : placements[i - 1].first;
    const Metrics& m = simulated[1 + i].metrics;
    std::string line = "cost " + format_fixed(m.cost, 3) + " per token, " +
                       format_fixed(100 * m.local_fraction, 2) +
                       "% of moves stay on their GPU, worst layer load " +
                       format_fixed(m.load_ratio_max, 3) + "x mean";
    if (i > 0 && vanilla_metrics.cost > 0) {
      line += ", " + format_fixed(100 * (vanilla_metrics.cost - m.cost) / vanilla_metrics.cost, 2) +
              "% below vanilla";
    }
    d.facts.emplace_back(name, line);
    d.local_fraction.push_back({name, m.local_fraction_per_layer});
    d.loads.push_back({name, L, topology.gpus(), m.gpu_load});
  }

  for (const ConfigurationResult& r : simulated) {
    d.simulation.push_back(
        {r.name, r.alltoall_seconds_per_step * 1e3, r.allgather_seconds_per_step * 1e3, r.speedup});
  }
  d.simulation_note = std::string("Alpha-beta model (docs/simulator.md), ") +
                      (preset.empty() ? "" : preset + " sizes: ") + "hidden " +
                      std::to_string(so.hidden) + " x " + std::to_string(so.dtype_bytes) +
                      " bytes per transfer, " + std::to_string(so.kv_bytes_per_token) +
                      " KV bytes per token and layer; " + std::to_string(so.tokens_per_step) +
                      " tokens per step; " + format_fixed(so.network.intra_gbps, 0) +
                      " Gbit/s within a node, " + format_fixed(so.network.inter_gbps, 0) +
                      " Gbit/s across nodes, " + format_fixed(so.network.latency_us, 1) +
                      " us per collective. Speedup over baseline/vanilla in brackets.";
  add_schemes_table(d, simulated, args.scheme);

  // Rebalancing from the engine's placement: one recorded search, every budget read off it.
  if (previous) {
    PlanOptions options;
    options.threads = args.threads;
    options.scheme = args.scheme;
    options.replica_choice = args.replica_choice;
    options.seq_len = args.seq_len;
    options.previous = *previous;
    options.score = false;
    const PlanResult r = plan(trace, graph, topology, options);
    for (const MovesCurvePoint& m : moves_curve(r, *previous)) {
      d.moves_curve.push_back({m.percent, m.max_moves, m.moved, m.cost});
    }
    d.moves_note =
        "Rebalancing from " + std::filesystem::path(args.previous).filename().string() + " (" +
        std::to_string(previous->layers() * previous->experts() +
                       static_cast<int>(previous->replicas().size())) +
        " expert slots): the " + to_string(args.scheme) +
        " scheme's cost per token on this trace after moving at most the given share of the "
        "slots (count in brackets), each budget the cheapest state of one search "
        "from the previous placement (exflow solve --previous --moves-curve).";
  }

  // Convergence: placements solved on growing prefixes, scored on the whole trace.
  if (args.convergence_points > 0) {
    std::vector<std::int64_t> sizes;
    for (int j = args.convergence_points - 1; j >= 0; --j) {
      const std::int64_t n = trace.tokens() >> j;
      if (n >= 64 && (sizes.empty() || n > sizes.back())) sizes.push_back(n);
    }
    if (sizes.empty() || sizes.back() != trace.tokens()) sizes.push_back(trace.tokens());
    std::vector<Placement> solved;
    for (std::int64_t n : sizes) {
      if (n == trace.tokens()) {
        solved.push_back(solved_full ? *solved_full
                                     : solve_defaults(trace, graph, topology, settings));
      } else {
        const Trace head = trace.prefix(n);
        solved.push_back(solve_defaults(head, AffinityGraph::from_trace(head, args.threads),
                                        topology, settings));
      }
    }
    std::vector<const Placement*> ptrs;
    for (const Placement& p : solved) ptrs.push_back(&p);
    // Scored under the scheme the solves optimise, against that scheme's vanilla.
    EvalOptions eo;
    eo.threads = args.threads;
    eo.progress = &bar;
    eo.scheme = args.scheme;
    eo.replica_choice = args.replica_choice;
    eo.sequence_length = args.seq_len;
    const std::vector<Metrics> scored = evaluate_all(trace, ptrs, topology, eo);
    for (std::size_t i = 0; i < sizes.size(); ++i)
      d.convergence.push_back({sizes[i], scored[i].cost});
    for (const ConfigurationResult& r : simulated) {
      if (r.scheme == args.scheme && r.placement_name == "vanilla") d.vanilla_cost = r.metrics.cost;
    }
  }

  // Affinity heatmaps.
  // Rows of experts with few tokens are left empty: one token makes a probability of 1.
  const std::int64_t min_row = std::max<std::int64_t>(
      kMinHeatmapRowTokens, trace.tokens() * trace.k() / E / kSparseRowFraction);
  for (int l = 0; l + 1 < L; ++l) {
    ReportHeatmap h;
    h.layer = l;
    h.rows = shown_experts(graph, l, args.heatmap_experts);
    h.columns = shown_experts(graph, l + 1, args.heatmap_experts);
    for (int i : h.rows) {
      std::int64_t total = 0;
      for (int j = 0; j < E; ++j) total += graph.transition(l, i, j);
      for (int j : h.columns) {
        h.probability.push_back(total >= min_row ? static_cast<double>(graph.transition(l, i, j)) /
                                                       static_cast<double>(total)
                                                 : 0.0);
      }
    }
    d.affinity.push_back(std::move(h));
  }
  d.affinity_note =
      (args.heatmap_experts < E
           ? "The " + std::to_string(args.heatmap_experts) +
                 " most loaded experts of each layer (of " + std::to_string(E) + "), in id order. "
           : std::string("All experts, in id order. ")) +
      "Rows of experts with fewer than " + std::to_string(min_row) + " transitions are left dark.";

  write_html_report(args.output, d);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "wrote " << args.output << " (" << placements.size() << " placement"
            << (placements.size() == 1 ? "" : "s") << ", " << d.convergence.size()
            << " convergence points, " << d.affinity.size() << " heatmaps) in "
            << format_fixed(seconds, 1) << " s\n";
  return 0;
}

}  // namespace

Subcommand add_report_command(CLI::App& app) {
  return add_subcommand(app, "report", kReportSummary, report_options(), &run_report);
}

std::string report_markdown() {
  return options_markdown("exflow report", kReportSummary, report_options());
}

}  // namespace exflow::cli
