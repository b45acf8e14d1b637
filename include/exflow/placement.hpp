// Expert placements: which GPU hosts expert e of layer l.
//
// gpu_of is [layers, experts], row-major. The original ExFlow's CSV has header `Expert,Node`
// and one row per expert with Expert = layer * E + e (global id) and Node = global GPU index.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace exflow {

class Topology;

class Placement {
 public:
  Placement(int layers, int experts, int gpus);
  Placement(int layers, int experts, int gpus, std::vector<int> gpu_of);

  int layers() const { return layers_; }
  int experts() const { return experts_; }
  int gpus() const { return gpus_; }
  int gpu(int layer, int expert) const {
    return gpu_of_[static_cast<std::size_t>(layer) * experts_ + expert];
  }
  void set(int layer, int expert, int gpu) {
    gpu_of_[static_cast<std::size_t>(layer) * experts_ + expert] = gpu;
  }
  const std::vector<int>& gpu_of() const { return gpu_of_; }  // [layers, experts]

  bool operator==(const Placement&) const = default;

 private:
  int layers_;
  int experts_;
  int gpus_;
  std::vector<int> gpu_of_;
};

// The stock expert-parallel placement: GPU g holds experts g*E/G ... (g+1)*E/G - 1 of every
// layer. Throws UsageError unless E is divisible by G.
Placement vanilla_placement(int layers, int experts, const Topology& topology);

enum class Balance {
  kExact,  // exactly E/G experts of every layer on every GPU (the default)
  kNone,   // any number of experts per GPU
};

// Checks that every GPU id is in range for `topology`, the shape matches, and (kExact) every
// GPU hosts E/G experts of every layer. Throws InputError naming the layer and GPU at fault;
// `what` names the placement in the message (e.g. its file name).
void validate(const Placement& placement, const Topology& topology, Balance balance,
              const std::string& what = "placement");

// The same with explicit limits: every GPU hosts between min_per_gpu and max_per_gpu experts
// of every layer.
void validate(const Placement& placement, const Topology& topology, int min_per_gpu,
              int max_per_gpu, const std::string& what = "placement");

// Reads the original ExFlow CSV. Rows may come in any order; every expert of every layer must
// appear exactly once, with 0 <= Node < gpus. Throws InputError naming file, line and value.
Placement read_placement_csv(const std::string& path, int layers, int experts, int gpus);

// Writes the CSV (rows in global expert order) atomically: a reader sees the old file or the
// complete new one, never a partial file.
void write_placement_csv(const std::string& path, const Placement& placement);

// The original tool's file name:
// solution_intra{P}_inter{N}_cost{cost}_cintra{cintra}_cinter{cinter}.csv with numbers
// formatted as Python's repr() formats floats (cinter is the integer 0 on one node).
std::string seed_solution_filename(int gpus_per_node, int nodes, double cost, double cintra,
                                   double cinter);

// Python's repr() of a float: shortest round-trip digits, scientific below 1e-4 and from 1e16.
std::string python_float_repr(double value);

}  // namespace exflow
