// `exflow convert`: a JSONL routing log (one {"layer", "topk_ids"[, "token"]} object per line)
// to a trace .npy.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "commands.hpp"

namespace exflow::cli {

// Registers the subcommand on `app`; the returned object owns its parsed arguments.
Subcommand add_convert_command(CLI::App& app);

// The command's section of docs/cli.md, from its options table.
std::string convert_markdown();

}  // namespace exflow::cli
