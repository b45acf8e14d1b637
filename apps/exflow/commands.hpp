// The exflow subcommands: their argument structs, option tables and entry points.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace exflow::cli {

// A subcommand registered on the CLI11 app; run() executes it after parsing.
struct Subcommand {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// Adds every subcommand to `app`. The returned objects own the parsed arguments.
std::vector<Subcommand> add_subcommands(CLI::App& app);

// docs/cli.md: every command's options, generated from the option tables.
std::string cli_markdown();

}  // namespace exflow::cli
