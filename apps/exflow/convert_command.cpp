#include "convert_command.hpp"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "command_args.hpp"
#include "exflow/formats.hpp"
#include "exflow/outputs.hpp"

namespace exflow::cli {
namespace {

struct ConvertArgs {
  std::string input;
  std::string output;
  bool json = false;
};

constexpr const char* kConvertSummary =
    "Convert a JSONL routing log (one {\"layer\": l, \"topk_ids\": [...]} object per token and "
    "layer, optional \"token\") into a trace .npy (SGLang's .pt recorder dumps: python3 -m exflow "
    "convert).";

const OptionTable<ConvertArgs>& convert_options() {
  static const OptionTable<ConvertArgs> table = [] {
    OptionTable<ConvertArgs> t;
    t.push_back(option<ConvertArgs>(&ConvertArgs::input, "INPUT",
                                    "JSONL routing log, or - for standard input")
                    .must()
                    .check(CLI::Validator(
                        [](std::string& path) -> std::string {
                          return path == "-" ? std::string() : CLI::ExistingFile(path);
                        },
                        "FILE or -")));
    t.push_back(option<ConvertArgs>(&ConvertArgs::output, "-o,--output",
                                    "trace to write (.npy; int16, or int32 for ids >= 32768)")
                    .must()
                    .check(CLI::Validator(
                        [](std::string& path) -> std::string {
                          return path.size() > 4 && path.compare(path.size() - 4, 4, ".npy") == 0
                                     ? std::string()
                                     : "the output must be a .npy file: " + path;
                        },
                        "FILE.npy")));
    t.push_back(
        option<ConvertArgs>(&ConvertArgs::json, "--json", "print one JSON object on stdout"));
    return t;
  }();
  return table;
}

int run_convert(const ConvertArgs& args) {
  check_writable(args.output);
  ConvertResult r = convert_jsonl_to_npy(args.input, args.output);
  if (args.json) {
    nlohmann::json j = {{"output", args.output},
                        {"tokens", r.tokens},
                        {"layers", r.layers},
                        {"k", r.k},
                        {"dtype", r.dtype}};
    std::cout << j.dump(2) << std::endl;
    return 0;
  }
  std::cout << "wrote " << args.output << ": " << r.tokens << " tokens x " << r.layers
            << " layers x top-" << r.k << " (" << (r.dtype == "<i2" ? "int16" : "int32") << ")\n";
  return 0;
}

}  // namespace

Subcommand add_convert_command(CLI::App& app) {
  return add_subcommand(app, "convert", kConvertSummary, convert_options(), &run_convert);
}

std::string convert_markdown() {
  return options_markdown("exflow convert", kConvertSummary, convert_options());
}

}  // namespace exflow::cli
