// `exflow simulate`: per-layer all-to-all and all-gather time of a trace and placement on a
// described cluster, for baseline/vanilla, exflow/vanilla and exflow/placement (simulate.hpp).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "commands.hpp"

namespace exflow::cli {

Subcommand add_simulate_command(CLI::App& app);
std::string simulate_markdown();

}  // namespace exflow::cli
