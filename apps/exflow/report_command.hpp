// `exflow report`: one self-contained HTML file with the affinity, locality, load, convergence
// and simulated-time views of a trace and its placements (include/exflow/report.hpp).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "commands.hpp"

namespace exflow::cli {

Subcommand add_report_command(CLI::App& app);
std::string report_markdown();

}  // namespace exflow::cli
