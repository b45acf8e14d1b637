// `exflow simulate`: per-layer all-to-all and all-gather time of a trace and placement on a
// described cluster, for every scheme with vanilla and with the placement (simulate.hpp).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "command_args.hpp"
#include "commands.hpp"
#include "exflow/simulate.hpp"

namespace exflow::cli {

// The model, cluster and step options `simulate` and `report` share.
struct SimulationArgs {
  std::string model;
  int hidden = 0;                        // 0: the preset's
  std::int64_t kv_bytes_per_token = -1;  // -1: the preset's
  int dtype_bytes = 0;                   // 0: the preset's, else 2
  double intra_gbps = Network{}.intra_gbps;
  double inter_gbps = Network{}.inter_gbps;
  double latency_us = Network{}.latency_us;
  std::int64_t tokens_per_step = 0;                        // 0: 128 per GPU
  Scheme scheme = Scheme::kContextCoherent;                // the headline's scheme (add_scheme_row)
  ReplicaChoice replica_choice = ReplicaChoice::kNearest;  // add_replica_choice_row
};

// "mixtral-8x7b, ..., olmoe-1b-7b"
std::string preset_names();

// The rows of SimulationArgs; `default_model` is what --help shows for --model.
template <class Args>
void add_simulation_rows(OptionTable<Args>& t, const std::string& default_model) {
  t.push_back(option<Args>(&SimulationArgs::model, "--model",
                           "model preset for the sizes: " + preset_names())
                  .shown_default(default_model.empty() ? "none" : default_model));
  t.push_back(
      option<Args>(&SimulationArgs::hidden, "--hidden", "hidden size: values per token transfer")
          .check(CLI::Range(1, 1 << 20))
          .shown_default("the preset's; required without --model"));
  t.push_back(option<Args>(&SimulationArgs::kv_bytes_per_token, "--kv-bytes-per-token",
                           "bytes of keys and values one token caches per layer (the "
                           "all-gather's payload)")
                  .check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40))
                  .shown_default("the preset's; required without --model"));
  t.push_back(option<Args>(&SimulationArgs::dtype_bytes, "--dtype-bytes",
                           "bytes per activation value on the wire")
                  .check(CLI::Range(1, 16))
                  .shown_default("the preset's, else 2"));
  t.push_back(option<Args>(&SimulationArgs::intra_gbps, "--intra-gbps",
                           "per-GPU bandwidth within a node, each direction, Gbit/s "
                           "(3600: NVLink 4, 450 GB/s)")
                  .check(CLI::PositiveNumber));
  t.push_back(option<Args>(&SimulationArgs::inter_gbps, "--inter-gbps",
                           "per-GPU bandwidth across nodes, each direction, Gbit/s "
                           "(400: one NDR InfiniBand NIC per GPU)")
                  .check(CLI::PositiveNumber));
  t.push_back(option<Args>(&SimulationArgs::latency_us, "--latency-us",
                           "fixed cost of every collective, microseconds")
                  .check(CLI::NonNegativeNumber));
  t.push_back(option<Args>(&SimulationArgs::tokens_per_step, "--tokens-per-step",
                           "tokens of one decode step over all GPUs")
                  .check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40))
                  .shown_default("128 x GPUs"));
}

// --scheme, read and checked by PlanOptions' own row (plan_option_spec("scheme"), as solve's):
// an unknown name is a UsageError naming --scheme. `help` says what the command does with it.
template <class Args>
void add_scheme_row(OptionTable<Args>& t, std::string help) {
  const PlanOptionSpec* s = &plan_option_spec("scheme");
  OptionRow<Args> row;
  row.name = option_flag(s->name);
  row.help = std::move(help);
  row.default_text = s->shown_default;
  row.bind = [s, flag = row.name](CLI::App& app, Args& args) -> CLI::Option* {
    Scheme* scheme = &args.scheme;
    CLI::Option* o = app.add_option_function<std::string>(flag, [s, scheme](const std::string& v) {
      PlanOptions parsed;
      s->set(parsed, v);
      *scheme = parsed.scheme;
    });
    o->type_name("TEXT");
    return o;
  };
  row.value = [s](const Args& args) {
    PlanOptions o;
    o.scheme = args.scheme;
    return nlohmann::json(s->value(o));
  };
  t.push_back(std::move(row));
}

// --replica-choice from the options table's row, into SimulationArgs::replica_choice.
template <class Args>
void add_replica_choice_row(OptionTable<Args>& t) {
  const PlanOptionSpec* s = &plan_option_spec("replica_choice");
  OptionRow<Args> row;
  row.name = option_flag(s->name);
  row.help = s->help;
  row.default_text = s->value(PlanOptions{});
  row.bind = [s, flag = row.name](CLI::App& app, Args& args) -> CLI::Option* {
    ReplicaChoice* choice = &args.replica_choice;
    CLI::Option* o = app.add_option_function<std::string>(flag, [s, choice](const std::string& v) {
      PlanOptions parsed;
      s->set(parsed, v);
      *choice = parsed.replica_choice;
    });
    o->type_name("TEXT");
    return o;
  };
  row.value = [s](const Args& args) {
    PlanOptions o;
    o.replica_choice = args.replica_choice;
    return nlohmann::json(s->value(o));
  };
  t.push_back(std::move(row));
}

// The simulator's options from the arguments: the preset's sizes unless given explicitly;
// `preset_used` receives the preset's name (empty without --model). Throws UsageError when the
// sizes are missing.
SimulationOptions simulation_options_of(const SimulationArgs& args, const BaselineArgs& baseline,
                                        const Topology& topology, std::string* preset_used);

Subcommand add_simulate_command(CLI::App& app);
std::string simulate_markdown();

}  // namespace exflow::cli
