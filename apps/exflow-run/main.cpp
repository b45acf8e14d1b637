// exflow-run: a small MoE transformer whose router replays a trace, run expert-parallel or, in
// `reference` mode, in one process as the ground truth (docs/runtime.md).
//
// The CLI edge: every library error becomes one line on stderr and an exit status
// (0 success, 1 bad input, 2 bad usage).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/runtime.hpp"
#include "exflow/trace.hpp"
#include "run_options.hpp"

namespace exflow::cli {
namespace {

namespace rt = exflow::runtime;

// GPU ids a placement may name when no GPU count is given (the reference runs on none).
constexpr int kMaxPlacementGpus = 1 << 16;

std::string fixed(double v, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

struct LoadedPlacement {
  std::string path;
  int gpus = 0;  // highest GPU id + 1
};

int run(const RunArgs& args) {
  TraceOpenOptions open;
  if (args.experts > 0) open.experts = args.experts;
  const Trace trace = Trace::open(args.trace, open);

  rt::ModelConfig config;
  config.layers = trace.layers();
  config.experts = trace.experts();
  config.k = trace.k();
  config.hidden = args.hidden;
  config.heads = args.heads;
  config.ffn = args.ffn;
  config.seed = args.seed;
  config.activation = rt::parse_activation(args.activation);
  config.combine = rt::parse_combine(args.combine);
  rt::Workload workload;
  workload.batch = args.batch;
  workload.seq_len = args.seq_len;
  if (args.prefill >= 0) workload.prefill = args.prefill;
  rt::check_fits(trace, config, workload);

  std::optional<LoadedPlacement> placement;
  if (!args.placement.empty()) {
    const Placement p =
        read_placement_csv(args.placement, config.layers, config.experts, kMaxPlacementGpus);
    int top = *std::max_element(p.gpu_of().begin(), p.gpu_of().end());
    for (const Replica& r : p.replicas()) top = std::max(top, r.gpu);
    placement = LoadedPlacement{args.placement, top + 1};
  }

  const rt::ReferenceResult r = rt::run_reference(trace, config, workload);
  const double rate = r.seconds > 0 ? static_cast<double>(r.tokens) / r.seconds : 0.0;
  const int prefill = workload.prefill_positions();

  if (args.json) {
    nlohmann::json j;
    j["mode"] = args.mode;
    j["tokens"] = r.tokens;
    j["layers"] = config.layers;
    j["experts"] = config.experts;
    j["k"] = config.k;
    j["hidden"] = config.hidden;
    j["heads"] = config.heads;
    j["ffn"] = config.ffn;
    j["activation"] = rt::to_string(config.activation);
    j["combine"] = rt::to_string(config.combine);
    j["seed"] = config.seed;
    j["batch"] = workload.batch;
    j["seq_len"] = workload.seq_len;
    j["prefill"] = prefill;
    j["steps"] = r.steps;
    j["expert_rows"] = r.expert_rows;
    j["hosted_experts"] = r.hosted_experts;
    j["checksum"] = rt::checksum_hex(r.checksum);
    j["final_rms"] = r.final_rms;
    j["seconds"] = r.seconds;
    j["setup_seconds"] = r.setup_seconds;
    j["tokens_per_second"] = rate;
    j["trace"] = {{"path", trace.source()},
                  {"tokens", trace.tokens()},
                  {"layers", trace.layers()},
                  {"k", trace.k()},
                  {"experts", trace.experts()}};
    j["placement"] = placement
                         ? nlohmann::json{{"path", placement->path}, {"gpus", placement->gpus}}
                         : nlohmann::json(nullptr);
    j["options"] = options_json(run_options(), args);
    std::cout << j.dump(2) << std::endl;
    return 0;
  }

  std::ostringstream out;
  out << "trace      " << trace.source() << ": " << trace.tokens() << " tokens x " << trace.layers()
      << " layers, top-" << trace.k() << " of " << trace.experts() << " experts\n"
      << "model      " << config.layers << " layers, " << config.experts << " experts (top-"
      << config.k << "), hidden " << config.hidden << ", " << config.heads << " heads, ffn "
      << config.ffn << ", " << rt::to_string(config.activation) << ", combine "
      << rt::to_string(config.combine) << ", seed " << config.seed << "\n"
      << "workload   " << workload.batch << " sequences x " << workload.seq_len
      << " positions = " << r.tokens << " tokens: prefill " << prefill << ", then "
      << (workload.seq_len - prefill) << " decode steps\n";
  if (placement) {
    out << "placement  " << placement->path << " (" << placement->gpus
        << " GPUs; the reference does not use it)\n";
  }
  out << args.mode << "  " << std::string(args.mode.size() < 9 ? 9 - args.mode.size() : 0, ' ')
      << r.tokens << " tokens in " << fixed(r.seconds, 3) << " s (" << fixed(rate, 1)
      << " tokens/s); weights of " << r.hosted_experts << " experts in "
      << fixed(r.setup_seconds, 3) << " s\n"
      << "checksum   " << rt::checksum_hex(r.checksum) << " (final hidden RMS "
      << fixed(r.final_rms, 4) << ")\n";
  std::cout << out.str();
  return 0;
}

}  // namespace
}  // namespace exflow::cli

int main(int argc, char** argv) {
  CLI::App app{
      "exflow-run: a Mixture-of-Experts transformer whose router replays a trace, run in one "
      "process (reference)"};
  exflow::cli::RunArgs args;
  exflow::cli::register_options(app, exflow::cli::run_options(), args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "exflow-run: error: " << e.what() << " (see --help)\n";
    return 2;
  }

  try {
    return exflow::cli::run(args);
  } catch (const exflow::UsageError& e) {
    std::cerr << "exflow-run: error: " << e.what() << "\n";
    return 2;
  } catch (const exflow::Error& e) {
    std::cerr << "exflow-run: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "exflow-run: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "exflow-run: error: " << e.what() << "\n";
    return 1;
  }
}
