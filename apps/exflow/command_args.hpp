// What several exflow subcommands share: the trace, topology and output argument groups, their
// option-table rows, and the readers built from them.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "exflow/formats.hpp"
#include "exflow/json.hpp"
#include "exflow/placement.hpp"
#include "exflow/plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "options.hpp"

namespace exflow::cli {

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

// The baseline scheme's owners: sequences of seq_len consecutive trace tokens dealt round-robin
// to the GPUs (EvalOptions::sequence_length; 1 deals single tokens).
struct BaselineArgs {
  std::int64_t seq_len = PlanOptions{}.seq_len;
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
                  .check(finite_number(0, Topology::kMaxHopCost)));
  t.push_back(option<Args>(&TopologyArgs::inter_cost, "--inter-cost",
                           "hop cost between GPUs of different nodes")
                  .check(finite_number(0, Topology::kMaxHopCost)));
}

// A row for one PlanOptions field, from the library's options table: Args has a PlanOptions
// member `plan` that the parsed value goes into, through the table's own check.
// The serving engines' maps are indexed by decoder layer: --dense-layers says which are dense.
// Reading a placement, --redundant-total (when given) says how many redundant slots it must have.
struct PlacementFileArgs {
  std::string dense_layers;  // parse_dense_layers' text; empty: every decoder layer is MoE
  int redundant_total = -1;  // -1: any
  DecoderLayers decoder() const {
    return dense_layers.empty() ? DecoderLayers{} : parse_dense_layers(dense_layers);
  }
};

inline constexpr const char* kDenseLayersHelp =
    "decoder layers without experts, which SGLang's and EPLB's maps hold rows for (vllm-ascend's "
    "counts MoE layers only): N (the first N), a list a,b (one layer: a,) or a model "
    "(deepseek-v2-lite, deepseek-v3, ...)";

template <class Args>
void add_dense_layers_row(OptionTable<Args>& t) {
  t.push_back(
      option<Args>(&Args::dense_layers, "--dense-layers", kDenseLayersHelp).shown_default("none"));
}

// --dense-layers and --redundant-total of the commands that read a placement.
template <class Args>
void add_placement_file_rows(OptionTable<Args>& t) {
  add_dense_layers_row(t);
  t.push_back(option<Args>(&Args::redundant_total, "--redundant-total",
                           "check that the placement has this many redundant slots per layer "
                           "(E + R slots in all)")
                  .check(CLI::Range(0, 1 << 30))
                  .shown_default("any"));
}

// The placement file of `args` for a trace of `layers` x `experts` on `gpus` GPUs, through the
// decoder layers, with the redundant slot count checked.
Placement read_placement_arg(const std::string& path, const PlacementFileArgs& args, int layers,
                             int experts, int gpus);

template <class Args>
OptionRow<Args> plan_option_row(const PlanOptionSpec& spec) {
  OptionRow<Args> row;
  row.name = option_flag(spec.name);
  row.help = spec.help;
  row.default_text = spec.shown_default;
  const PlanOptionSpec* s = &spec;  // the table is static
  row.bind = [s, flag = row.name](CLI::App& app, Args& args) -> CLI::Option* {
    PlanOptions* plan = &args.plan;
    if (s->type == OptionType::kBool) {
      return app.add_flag_callback(flag, [s, plan] { s->set(*plan, "true"); });
    }
    CLI::Option* o = app.add_option_function<std::string>(
        flag, [s, plan](const std::string& v) { s->set(*plan, v); });
    o->type_name(s->type == OptionType::kInt     ? "INT"
                 : s->type == OptionType::kFloat ? "FLOAT"
                                                 : "TEXT");
    o->default_str(s->value(PlanOptions{}));
    return o;
  };
  row.value = [s](const Args& args) { return option_value_json(*s, args.plan); };
  return row;
}

// --seq-len for the commands that score without planning, with the table's help and check.
template <class Args>
void add_baseline_rows(OptionTable<Args>& t) {
  const PlanOptionSpec* s = &plan_option_spec("seq_len");
  OptionRow<Args> row;
  row.name = option_flag(s->name);
  row.help = s->help;
  row.bind = [s, flag = row.name](CLI::App& app, Args& args) -> CLI::Option* {
    std::int64_t* seq_len = &args.seq_len;
    CLI::Option* o = app.add_option_function<std::string>(flag, [s, seq_len](const std::string& v) {
      PlanOptions parsed;
      s->set(parsed, v);
      *seq_len = parsed.seq_len;
    });
    o->type_name("INT");
    o->default_str(s->value(PlanOptions{}));
    return o;
  };
  row.value = [](const Args& args) { return nlohmann::json(args.seq_len); };
  t.push_back(std::move(row));
}

// Registers a subcommand whose arguments `Args` are filled by `table` and run by `runner`; the
// returned object owns the arguments.
template <class Args>
Subcommand add_subcommand(CLI::App& app, const char* name, const char* summary,
                          const OptionTable<Args>& table, int (*runner)(const Args&)) {
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(name, summary);
  register_options(*sub, table, *args);
  return Subcommand{sub, [args, runner] { return runner(*args); }};
}

Trace open_trace(const TraceArgs& a);
Topology make_topology(const TopologyArgs& a);
void print_json(const nlohmann::json& j);
}  // namespace exflow::cli
