// One options table per command. Each row binds a CLI11 option to a field of the command's
// argument struct and serialises that field; the same rows drive --help, the "options" echo in
// --json output, and docs/cli.md (`exflow help-markdown`).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exflow/error.hpp"

namespace exflow::cli {

template <class Args>
struct OptionRow {
  std::string name;  // "--nodes", or a positional name such as "TRACE"
  std::string help;
  std::string default_text;  // shown in docs; empty: the default value's JSON
  bool required = false;
  std::function<CLI::Option*(CLI::App&, Args&)> bind;
  std::function<nlohmann::json(const Args&)> value;
  std::function<void(CLI::Option*)> configure;  // validators, checks

  OptionRow& check(CLI::Validator v) {
    auto prev = configure;
    configure = [prev, v](CLI::Option* o) {
      if (prev) prev(o);
      o->check(v);
    };
    return *this;
  }
  OptionRow& must() {
    required = true;
    return *this;
  }
  OptionRow& shown_default(std::string text) {
    default_text = std::move(text);
    return *this;
  }
};

template <class Args>
using OptionTable = std::vector<OptionRow<Args>>;

// The JSON key of an option: "--gpus-per-node" -> "gpus_per_node", "TRACE" -> "trace".
std::string option_key(const std::string& name);

// An error's message with the options it names (Error::options(), PlanOptions field names such
// as max_load_ratio) written as this program's flags (--max-load-ratio).
std::string message_with_flags(const Error& error);

// A check for a number option: finite and within [lo, hi] (lo excluded when `open_low`), refused
// as "must be a finite number ..., got TEXT" (CLI11's own range checks let nan through and print
// the double range in full).
CLI::Validator finite_number(double lo, double hi, bool open_low = false);

// A valued option (or positional, when name does not start with '-') bound to a member.
template <class Args, class T, class Owner>
OptionRow<Args> option(T Owner::*member, std::string name, std::string help) {
  OptionRow<Args> row;
  row.name = name;
  row.help = std::move(help);
  row.bind = [member, name](CLI::App& app, Args& args) -> CLI::Option* {
    if constexpr (std::is_same_v<T, bool>) {
      return app.add_flag(name, args.*member);
    } else {
      return app.add_option(name, args.*member)->capture_default_str();
    }
  };
  row.value = [member](const Args& args) { return nlohmann::json(args.*member); };
  return row;
}

// Registers every row of the table on `app`, binding to `args`.
template <class Args>
void register_options(CLI::App& app, const OptionTable<Args>& table, Args& args) {
  for (const auto& row : table) {
    CLI::Option* o = row.bind(app, args);
    o->description(row.help);
    if (row.required) o->required();
    if (!row.default_text.empty()) o->default_str(row.default_text);
    if (row.configure) row.configure(o);
  }
}

// {"key": value, ...} for every row.
template <class Args>
nlohmann::json options_json(const OptionTable<Args>& table, const Args& args) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& row : table) j[option_key(row.name)] = row.value(args);
  return j;
}

// A markdown section documenting one command ("exflow solve", "exflow-run") from its table.
template <class Args>
std::string options_markdown(const std::string& command, const std::string& summary,
                             const OptionTable<Args>& table) {
  const Args defaults;
  std::string md = "## `" + command + "`\n\n" + summary + "\n\n";
  md += "| option | default | description |\n| --- | --- | --- |\n";
  for (const auto& row : table) {
    std::string def = row.required                ? "required"
                      : !row.default_text.empty() ? row.default_text
                                                  : row.value(defaults).dump();
    md += "| `" + row.name + "` | " + def + " | " + row.help + " |\n";
  }
  return md + "\n";
}

}  // namespace exflow::cli
