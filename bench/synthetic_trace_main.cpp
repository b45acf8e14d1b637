// synthetic_trace: writes a synthetic routing trace with inter-layer affinity (see
// synthetic_trace.hpp), for the benchmark scripts.
//   synthetic_trace OUT.npy --tokens T --layers L --experts E [--k K] [--follow P] [--seed S]
//                   [--planted PLACEMENT.csv --gpus G]
#include <CLI/CLI.hpp>
#include <iostream>

#include "exflow/placement.hpp"
#include "synthetic_trace.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Write a synthetic routing trace with inter-layer affinity"};
  std::string out;
  exflow::bench::SyntheticTraceSpec spec;
  app.add_option("OUT", out, "output .npy")->required();
  app.add_option("--tokens", spec.tokens, "tokens")->required()->check(CLI::PositiveNumber);
  app.add_option("--layers", spec.layers, "MoE layers")->required()->check(CLI::PositiveNumber);
  app.add_option("--experts", spec.experts, "experts per layer")
      ->required()
      ->check(CLI::Range(1, 32767));
  app.add_option("--k", spec.k, "experts per token and layer")->capture_default_str();
  app.add_option("--follow", spec.follow, "probability of following the layer's successor")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", spec.seed, "seed")->capture_default_str();
  std::string planted;
  int gpus = 0;
  app.add_option("--planted", planted,
                 "also write the planted placement (chains kept on one GPU) as a placement CSV");
  app.add_option("--gpus", gpus, "GPUs of the planted placement");
  CLI11_PARSE(app, argc, argv);
  try {
    exflow::bench::write_synthetic_trace(out, spec);
    if (!planted.empty()) {
      const std::vector<int> gpu_of = exflow::bench::planted_placement(spec, gpus);
      exflow::write_placement_csv(planted,
                                  exflow::Placement(spec.layers, spec.experts, gpus, gpu_of));
    }
  } catch (const std::exception& e) {
    std::cerr << "synthetic_trace: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
