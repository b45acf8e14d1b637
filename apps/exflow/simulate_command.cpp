#include "simulate_command.hpp"

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "command_args.hpp"
#include "exflow/error.hpp"
#include "exflow/simulate.hpp"
#include "progress_bar.hpp"
#include "text_report.hpp"

namespace exflow::cli {
namespace {

struct SimulateArgs : TraceArgs, TopologyArgs, BaselineArgs, SimulationArgs, PlacementFileArgs {
  std::string placement;
  bool matrices = false;
  bool unbalanced = false;
};

constexpr const char* kSimulateSummary =
    "Project the communication time of every MoE layer on a described cluster (alpha-beta model, "
    "bounded by the busiest GPU) under every scheme, each from its own traffic, for vanilla and "
    "the placement: baseline (two all-to-alls), exflow (context-coherent: one all-to-all plus the "
    "KV all-gather), deepep (DeepEP normal mode: RDMA to one GPU per node, NVLink forwards) and "
    "deepep-ll (DeepEP low-latency: one transfer per token-expert); per decode step and per "
    "token, with the speedup over baseline/vanilla and the fastest (scheme, placement). See "
    "docs/simulator.md.";

}  // namespace

std::string preset_names() {
  std::string names;
  for (const ModelPreset& p : model_presets()) names += (names.empty() ? "" : ", ") + p.name;
  return names;
}

SimulationOptions simulation_options_of(const SimulationArgs& args, const BaselineArgs& baseline,
                                        const Topology& topology, std::string* preset_used) {
  std::optional<ModelPreset> preset;
  if (!args.model.empty()) preset = find_model_preset(args.model);
  if (preset_used) *preset_used = preset ? preset->name : "";
  SimulationOptions so;
  so.hidden = args.hidden > 0 ? args.hidden : preset ? preset->hidden : 0;
  so.kv_bytes_per_token = args.kv_bytes_per_token >= 0 ? args.kv_bytes_per_token
                          : preset                     ? preset->kv_bytes_per_token
                                                       : -1;
  so.dtype_bytes = args.dtype_bytes > 0 ? args.dtype_bytes : preset ? preset->dtype_bytes : 2;
  if (so.hidden == 0 || so.kv_bytes_per_token < 0) {
    throw UsageError("give --model or both --hidden and --kv-bytes-per-token");
  }
  so.tokens_per_step =
      args.tokens_per_step > 0 ? args.tokens_per_step : std::int64_t{128} * topology.gpus();
  so.sequence_length = baseline.seq_len;
  so.replica_choice = args.replica_choice;
  if (args.replica_choice == ReplicaChoice::kEven && args.scheme == Scheme::kContextCoherent) {
    throw UsageError(
        "--replica-choice even spreads tokens over copies from their owner: it applies to the "
        "standard schemes (standard, deepep, deepep-ll), not coherent");
  }
  so.network = Network{args.intra_gbps, args.inter_gbps, args.latency_us};
  return so;
}

namespace {

const OptionTable<SimulateArgs>& simulate_options() {
  static const OptionTable<SimulateArgs> table = [] {
    OptionTable<SimulateArgs> t;
    add_trace_rows(t);
    t.push_back(option<SimulateArgs>(&SimulateArgs::placement, "--placement",
                                     "placement to simulate under every scheme as "
                                     "<scheme>/placement (CSV, SGLang or EPLB JSON)")
                    .check(CLI::ExistingFile)
                    .shown_default("none: the two vanilla configurations only"));
    add_topology_rows(t);
    t.push_back(
        option<SimulateArgs>(&SimulateArgs::unbalanced, "--unbalanced",
                             "accept a placement without exactly E/G experts per GPU per layer"));
    add_simulation_rows(t, "");
    add_scheme_row(t,
                   "the headline scheme (its rows come first): coherent, standard, deepep or "
                   "deepep-ll; every scheme is simulated");
    add_replica_choice_row(t);
    add_placement_file_rows(t);
    add_baseline_rows(t);
    t.push_back(option<SimulateArgs>(&SimulateArgs::matrices, "--matrices",
                                     "with --json, add every layer's GPU x GPU byte matrices over "
                                     "the whole trace (L x 2 x G x G numbers)"));
    add_output_rows(t);
    return t;
  }();
  return table;
}

nlohmann::json collective_json(const CollectiveTime& c) {
  return {{"bytes", c.bytes}, {"busiest_gpu_bytes", c.busiest_bytes}, {"seconds", c.seconds}};
}

nlohmann::json matrix_json(const std::vector<std::int64_t>& bytes, int l, int phase, int G) {
  nlohmann::json m = nlohmann::json::array();
  for (int a = 0; a < G; ++a) {
    nlohmann::json row = nlohmann::json::array();
    for (int b = 0; b < G; ++b) {
      row.push_back(bytes[((static_cast<std::size_t>(l) * 2 + static_cast<std::size_t>(phase)) *
                               static_cast<std::size_t>(G) +
                           static_cast<std::size_t>(a)) *
                              static_cast<std::size_t>(G) +
                          static_cast<std::size_t>(b)]);
    }
    m.push_back(row);
  }
  return m;
}

// The name --scheme takes for a scheme ("coherent", "standard", "deepep", "deepep-ll").
std::string option_scheme_name(Scheme scheme) {
  PlanOptions o;
  o.scheme = scheme;
  return plan_option_spec("scheme").value(o);
}

// The headline scheme's vanilla and placement configurations (placement: none without one).
struct Headline {
  Scheme scheme = Scheme::kContextCoherent;
  std::size_t vanilla = 0;
  std::optional<std::size_t> placement;
};

Headline headline_of(const std::vector<ConfigurationResult>& results, Scheme scheme) {
  Headline h;
  h.scheme = scheme;
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].scheme != scheme) continue;
    if (results[i].placement_name == "vanilla") {
      h.vanilla = i;
    } else if (!h.placement) {
      h.placement = i;
    }
  }
  return h;
}

double ratio(double a, double b) {
  return b > 0 ? a / b : 0.0;
}

nlohmann::json configuration_summary_json(const ConfigurationResult& r) {
  return {{"name", r.name},
          {"scheme", to_string(r.scheme)},
          {"placement", r.placement_name},
          {"seconds_per_step", r.seconds_per_step},
          {"speedup", r.speedup}};
}

// The headline: the --scheme's placement against its own vanilla, and against baseline/vanilla.
nlohmann::json headline_json(const std::vector<ConfigurationResult>& results, const Headline& h) {
  const ConfigurationResult& v = results[h.vanilla];
  nlohmann::json j = {{"scheme", to_string(h.scheme)},
                      {"vanilla", v.name},
                      {"placement", nullptr},
                      {"speedup_over_vanilla", nullptr},
                      {"speedup", v.speedup}};
  if (h.placement) {
    const ConfigurationResult& p = results[*h.placement];
    j["placement"] = p.name;
    j["speedup_over_vanilla"] = ratio(v.seconds_per_step, p.seconds_per_step);
    j["speedup"] = p.speedup;
  }
  return j;
}

std::string headline_text(const std::vector<ConfigurationResult>& results, const Headline& h) {
  const ConfigurationResult& v = results[h.vanilla];
  std::string text = "headline  " + option_scheme_name(h.scheme) + ": ";
  if (h.placement) {
    const ConfigurationResult& p = results[*h.placement];
    text += "the placement takes " + format_fixed(p.seconds_per_step * 1e3, 4) +
            " ms per step, vanilla " + format_fixed(v.seconds_per_step * 1e3, 4) + " ms (" +
            format_fixed(ratio(v.seconds_per_step, p.seconds_per_step), 2) + "x); " +
            format_fixed(p.speedup, 2) + "x baseline/vanilla\n";
  } else {
    text += "vanilla takes " + format_fixed(v.seconds_per_step * 1e3, 4) + " ms per step, " +
            format_fixed(v.speedup, 2) + "x baseline/vanilla\n";
  }
  return text;
}

// The text table's order: the --scheme's configurations, then the others as simulated.
std::vector<std::size_t> text_order(const std::vector<ConfigurationResult>& results,
                                    Scheme scheme) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].scheme == scheme) order.push_back(i);
  }
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].scheme != scheme) order.push_back(i);
  }
  return order;
}

int run_simulate(const SimulateArgs& args) {
  ProgressBar bar(!args.quiet);
  Trace trace = open_trace(args);
  Topology topology = make_topology(args);
  std::string preset_name;
  SimulationOptions so = simulation_options_of(args, args, topology, &preset_name);
  std::optional<ModelPreset> preset;
  if (!preset_name.empty()) preset = find_model_preset(preset_name);
  so.matrices = args.matrices;
  so.threads = args.threads;

  std::optional<Placement> placement;
  if (!args.placement.empty()) {
    placement =
        read_placement_arg(args.placement, args, trace.layers(), trace.experts(), topology.gpus());
    validate(*placement, topology, args.unbalanced ? Balance::kNone : Balance::kExact,
             args.placement);
  }
  const Placement vanilla = placement
                                ? stock_placement_for(*placement, topology)
                                : vanilla_placement_any(trace.layers(), trace.experts(), topology);
  std::vector<NamedPlacement> named;
  if (placement) named.push_back({"placement", &*placement});
  const std::vector<ConfigurationResult> results =
      simulate(trace, topology, scheme_configurations(vanilla, named), so);
  const std::size_t best = fastest(results);
  const Headline headline = headline_of(results, args.scheme);
  const int L = trace.layers();
  const int G = topology.gpus();
  const bool shape_matches =
      !preset ||
      (preset->layers == L && preset->experts == trace.experts() && preset->k == trace.k());

  if (args.json) {
    nlohmann::json j = nlohmann::json(trace);
    j["gpus"] = G;
    j["nodes"] = topology.nodes();
    j["gpus_per_node"] = topology.gpus_per_node();
    j["model"] = {{"preset", preset ? nlohmann::json(preset->name) : nlohmann::json(nullptr)},
                  {"hidden", so.hidden},
                  {"kv_bytes_per_token", so.kv_bytes_per_token},
                  {"dtype_bytes", so.dtype_bytes},
                  {"preset_matches_trace", shape_matches}};
    j["network"] = {{"intra_gbps", so.network.intra_gbps},
                    {"inter_gbps", so.network.inter_gbps},
                    {"latency_us", so.network.latency_us}};
    j["tokens_per_step"] = so.tokens_per_step;
    j["seq_len"] = so.sequence_length;
    j["placement"] =
        args.placement.empty() ? nlohmann::json(nullptr) : nlohmann::json(args.placement);
    nlohmann::json cs = nlohmann::json::array();
    for (const ConfigurationResult& r : results) {
      nlohmann::json c = {{"name", r.name},
                          {"scheme", to_string(r.scheme)},
                          {"placement", r.placement_name},
                          {"cost", r.metrics.cost},
                          {"intra", r.metrics.intra},
                          {"inter", r.metrics.inter},
                          {"alltoall_bytes_per_step", r.alltoall_bytes_per_step},
                          {"alltoall_seconds_per_step", r.alltoall_seconds_per_step},
                          {"allgather_bytes_per_step", r.allgather_bytes_per_step},
                          {"allgather_seconds_per_step", r.allgather_seconds_per_step},
                          {"seconds_per_step", r.seconds_per_step},
                          {"seconds_per_token", r.seconds_per_token},
                          {"speedup", r.speedup}};
      nlohmann::json layers = nlohmann::json::array();
      for (int l = 0; l < L; ++l) {
        nlohmann::json layer = {
            {"layer", l},
            {"dispatch", collective_json(r.dispatch[static_cast<std::size_t>(l)])},
            {"combine", collective_json(r.combine[static_cast<std::size_t>(l)])}};
        if (!r.bytes.empty()) {
          layer["dispatch_bytes"] = matrix_json(r.bytes, l, 0, G);
          layer["combine_bytes"] = matrix_json(r.bytes, l, 1, G);
        }
        layers.push_back(layer);
      }
      c["per_layer"] = layers;
      cs.push_back(c);
    }
    j["configurations"] = cs;
    j["scheme"] = to_string(args.scheme);
    j["headline"] = headline_json(results, headline);
    j["fastest"] = configuration_summary_json(results[best]);
    j["options"] = options_json(simulate_options(), args);
    print_json(j);
    return 0;
  }

  std::ostringstream out;
  out << "trace     " << describe(trace) << "\n"
      << "topology  " << describe(topology) << "\n"
      << "model     " << (preset ? preset->name + ": " : std::string()) << "hidden " << so.hidden
      << " x " << so.dtype_bytes << " bytes per transfer, " << so.kv_bytes_per_token
      << " KV bytes per token and layer\n";
  if (!shape_matches) {
    out << "note      the preset has " << preset->layers << " layers x " << preset->experts
        << " experts, top-" << preset->k << "; the trace's shape is used\n";
  }
  out << "network   " << format_fixed(so.network.intra_gbps, 0) << " Gbit/s within a node, "
      << format_fixed(so.network.inter_gbps, 0) << " Gbit/s across nodes, "
      << format_fixed(so.network.latency_us, 1) << " us per collective; " << so.tokens_per_step
      << " tokens per decode step\n\n";
  out << "per decode step, speedup over baseline/vanilla; * --scheme "
      << option_scheme_name(args.scheme) << "\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-22s %11s %11s %11s %11s %11s %11s %8s\n", "configuration",
                "a2a MiB", "a2a ms", "gather MiB", "gather ms", "total ms", "us/token", "speedup");
  out << line;
  for (std::size_t i : text_order(results, args.scheme)) {
    const ConfigurationResult& r = results[i];
    const std::string name = r.name + (r.scheme == args.scheme ? " *" : "");
    std::snprintf(line, sizeof line, "%-22s %11.3f %11.4f %11.3f %11.4f %11.4f %11.4f %7.2fx\n",
                  name.c_str(), r.alltoall_bytes_per_step / 1048576.0,
                  r.alltoall_seconds_per_step * 1e3, r.allgather_bytes_per_step / 1048576.0,
                  r.allgather_seconds_per_step * 1e3, r.seconds_per_step * 1e3,
                  r.seconds_per_token * 1e6, r.speedup);
    out << line;
  }
  out << "\n"
      << headline_text(results, headline) << "fastest   " << results[best].name << ": "
      << format_fixed(results[best].seconds_per_step * 1e3, 4) << " ms per step, "
      << format_fixed(results[best].speedup, 2) << "x baseline/vanilla\n";
  if (placement) {
    out << "note      deepep-ll sends one transfer per token-expert from the token's owner: under "
           "round-robin owners a placement barely changes it; replicas and owners that follow "
           "routing (--seq-len) can\n";
  }
  // Per layer: baseline/vanilla and the headline scheme's configurations (all of them in --json).
  std::vector<const ConfigurationResult*> shown = {&results.front()};
  for (const ConfigurationResult& r : results) {
    if (r.scheme == args.scheme && &r != &results.front()) shown.push_back(&r);
  }
  out << "\nper layer, all-to-all ms per decode step (dispatch + combine)\n";
  std::string head = "layer";
  for (const ConfigurationResult* r : shown) head += "  " + r->name;
  out << head << "\n";
  for (int l = 0; l < L; ++l) {
    out << (l < 10 ? "    " : l < 100 ? "   " : "  ") << l;
    for (const ConfigurationResult* r : shown) {
      const auto i = static_cast<std::size_t>(l);
      const std::string v = format_fixed((r->dispatch[i].seconds + r->combine[i].seconds) * 1e3, 4);
      out << std::string(r->name.size() + 2 > v.size() ? r->name.size() + 2 - v.size() : 1, ' ')
          << v;
    }
    out << "\n";
  }
  std::cout << out.str();
  return 0;
}

}  // namespace

Subcommand add_simulate_command(CLI::App& app) {
  return add_subcommand(app, "simulate", kSimulateSummary, simulate_options(), &run_simulate);
}

std::string simulate_markdown() {
  return options_markdown("exflow simulate", kSimulateSummary, simulate_options());
}

}  // namespace exflow::cli
