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

// Bounds of the network options: a petabit per second per GPU, a thousand seconds per collective.
inline constexpr double kMaxGbps = 1e6;
inline constexpr double kMaxLatencyUs = 1e9;

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
                  .check(finite_number(0, kMaxGbps, true)));
  t.push_back(option<Args>(&SimulationArgs::inter_gbps, "--inter-gbps",
                           "per-GPU bandwidth across nodes, each direction, Gbit/s "
                           "(400: one NDR InfiniBand NIC per GPU)")
                  .check(finite_number(0, kMaxGbps, true)));
  t.push_back(option<Args>(&SimulationArgs::latency_us, "--latency-us",
                           "fixed cost of every collective, microseconds")
                  .check(finite_number(0, kMaxLatencyUs)));
  t.push_back(option<Args>(&SimulationArgs::tokens_per_step, "--tokens-per-step",
                           "tokens of one decode step over all GPUs")
                  .check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40))
                  .shown_default("128 x GPUs"));
}

// A row for one PlanOptions field held in SimulationArgs (`field` in both), read and checked by
// PlanOptions' own row (plan_option_spec(name), as solve's): a bad value is a UsageError naming
// the flag. `help` empty: the table row's help.
template <class Args, class T>
void add_plan_field_row(OptionTable<Args>& t, const char* name, T SimulationArgs::*held,
                        T PlanOptions::*field, std::string help = {}) {
  const PlanOptionSpec* s = &plan_option_spec(name);
  OptionRow<Args> row;
  row.name = option_flag(s->name);
  row.help = help.empty() ? s->help : std::move(help);
  row.default_text = s->shown_default.empty() ? s->value(PlanOptions{}) : s->shown_default;
  row.bind = [s, held, field, flag = row.name](CLI::App& app, Args& args) -> CLI::Option* {
    T* target = &(args.*held);
    CLI::Option* o =
        app.add_option_function<std::string>(flag, [s, field, target](const std::string& v) {
          PlanOptions parsed;
          s->set(parsed, v);
          *target = parsed.*field;
        });
    o->type_name("TEXT");
    return o;
  };
  row.value = [s, held, field](const Args& args) {
    PlanOptions o;
    o.*field = args.*held;
    return nlohmann::json(s->value(o));
  };
  t.push_back(std::move(row));
}

// --scheme; `help` says what the command does with it.
template <class Args>
void add_scheme_row(OptionTable<Args>& t, std::string help) {
  add_plan_field_row(t, "scheme", &SimulationArgs::scheme, &PlanOptions::scheme, std::move(help));
}

// --replica-choice.
template <class Args>
void add_replica_choice_row(OptionTable<Args>& t) {
  add_plan_field_row(t, "replica_choice", &SimulationArgs::replica_choice,
                     &PlanOptions::replica_choice);
}

// The simulator's options from the arguments: the preset's sizes unless given explicitly;
// `preset_used` receives the preset's name (empty without --model). Throws UsageError when the
// sizes are missing.
SimulationOptions simulation_options_of(const SimulationArgs& args, const BaselineArgs& baseline,
                                        const Topology& topology, std::string* preset_used);

Subcommand add_simulate_command(CLI::App& app);
std::string simulate_markdown();

}  // namespace exflow::cli
