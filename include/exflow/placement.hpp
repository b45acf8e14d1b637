// Expert placements: which GPU hosts expert e of layer l.
//
// gpu_of is [layers, experts], row-major. The original ExFlow's CSV has header `Expert,Node`
// and one row per expert with Expert = layer * E + e (global id) and Node = global GPU index.
//
// Redundant experts: an expert may have replicas, further copies on other GPUs (as DeepSeek's
// EPLB adds for load). Copies are interchangeable; gpu_of holds the copy on the lowest GPU id
// and replicas() the others, sorted. Every mutator (set, add_replica, clear_replicas) keeps
// that form, so placements with the same copies compare equal. In the CSV a replica is one more row
// with the same Expert and another Node.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

namespace exflow {

class Topology;

// One extra copy of an expert.
struct Replica {
  int layer = 0;
  int expert = 0;
  int gpu = 0;
  auto operator<=>(const Replica&) const = default;
};

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
  // Moves the copy of (layer, expert) that gpu_of names to `gpu`; an expert without replicas
  // simply goes there. With replicas the copies are re-ordered so that gpu_of stays the lowest;
  // throws UsageError if `gpu` already holds another copy of the expert.
  void set(int layer, int expert, int gpu) {
    if (replicas_.empty()) {
      gpu_of_[static_cast<std::size_t>(layer) * experts_ + expert] = gpu;
    } else {
      move_primary(layer, expert, gpu);
    }
  }
  const std::vector<int>& gpu_of() const { return gpu_of_; }  // [layers, experts]

  // Adds a copy of (layer, expert) on `gpu`. If `gpu` is below the expert's gpu_of, the two
  // swap roles. Throws UsageError for an index out of range or a GPU that already holds a copy.
  void add_replica(int layer, int expert, int gpu);
  // The same, also where `gpu` holds a copy already: serving engines' maps may give an expert two
  // slots of one GPU (DeepSeek's EPLB does). Such a copy fills a slot; a token on that GPU uses
  // the expert once, so routing sees the GPU once (routing::CopyTable).
  void add_copy(int layer, int expert, int gpu);
  void clear_replicas() { replicas_.clear(); }
  const std::vector<Replica>& replicas() const { return replicas_; }  // sorted
  bool has_replicas() const { return !replicas_.empty(); }
  // Whether `gpu` holds a copy of (layer, expert).
  bool has_copy_on(int layer, int expert, int gpu) const;
  // The GPU of every copy of (layer, expert), ascending; a GPU with two slots of it appears twice.
  std::vector<int> copies(int layer, int expert) const;
  // Copies of layer l's experts on each GPU: [gpus].
  std::vector<int> slots_per_gpu(int layer) const;

  // Equal when the shapes and every expert's set of copies are equal (the representation is
  // canonical: gpu_of the lowest copy, replicas sorted).
  bool operator==(const Placement&) const = default;

 private:
  void move_primary(int layer, int expert, int gpu);

  int layers_;
  int experts_;
  int gpus_;
  std::vector<int> gpu_of_;
  std::vector<Replica> replicas_;  // sorted by (layer, expert, gpu)
};

// The stock expert-parallel placement: GPU g holds experts g*E/G ... (g+1)*E/G - 1 of every
// layer. Throws UsageError unless E is divisible by G.
//
// trivial_placement: the serving engines' stock layout with R redundant slots in all (SGLang's
// trivial expert location): S = (E + R)/G slots per GPU, slot s = g*S + i holds expert s mod E,
// so the first slots hold every expert once in order and the last R repeat experts 0, 1, ...
// (vanilla_placement when R = 0). Throws UsageError unless G divides E + R.
Placement trivial_placement(int layers, int experts, int redundant_total, const Topology& topology);

// The stock placement the comparisons use: vanilla_placement_any where it exists, else (E and G
// not dividing each other) trivial_placement with `redundant_total` slots.
Placement stock_placement(int layers, int experts, int redundant_total, const Topology& topology);

// The stock placement to compare `placement` with: stock_placement with as many redundant slots
// as `placement` has in its first layer.
Placement stock_placement_for(const Placement& placement, const Topology& topology);
Placement vanilla_placement(int layers, int experts, const Topology& topology);

// Vanilla for any divisibility: vanilla_placement when G divides E; when E divides G (more GPUs
// than experts), expert-parallel groups of E consecutive GPUs, each holding every expert once:
// expert e on GPUs e, e + E, e + 2E, ... (the lowest copy in gpu_of, the others as replicas).
// Throws UsageError when neither divides the other.
Placement vanilla_placement_any(int layers, int experts, const Topology& topology);

enum class Balance {
  kExact,  // exactly E/G experts of every layer on every GPU (the default)
  kNone,   // any number of experts per GPU
};

// Checks that every GPU id is in range for `topology`, the shape matches and (kExact) every GPU
// hosts the same number of expert copies (slots) of every layer: (E + replicas of the layer) / G,
// which must be a whole number (the slots divide over the GPUs, the experts need not). A GPU may
// hold two copies of one expert (add_copy). Throws
// InputError naming the layer and GPU at fault; `what` names the placement in the message
// (e.g. its file name).
void validate(const Placement& placement, const Topology& topology, Balance balance,
              const std::string& what = "placement");

// The same with explicit limits: every GPU hosts between min_per_gpu and max_per_gpu expert
// copies of every layer.
void validate(const Placement& placement, const Topology& topology, int min_per_gpu,
              int max_per_gpu, const std::string& what = "placement");

// Reads the original ExFlow CSV. Rows may come in any order; every expert of every layer must
// appear at least once, with 0 <= Node < gpus; further rows of an expert are replicas on other
// GPUs. Throws InputError naming file, line and value.
Placement read_placement_csv(const std::string& path, int layers, int experts, int gpus);

// Writes the CSV (one row per expert in global expert order, then one per replica) atomically: a
// reader sees the old file or the complete new one, never a partial file.
void write_placement_csv(const std::string& path, const Placement& placement);

// The original tool's file name:
// solution_intra{P}_inter{N}_cost{cost}_cintra{cintra}_cinter{cinter}.csv with numbers
// formatted as Python's repr() formats floats (cinter is the integer 0 on one node).
std::string seed_solution_filename(int gpus_per_node, int nodes, double cost, double cintra,
                                   double cinter);

// Python's repr() of a float: shortest round-trip digits, scientific below 1e-4 and from 1e16.
std::string python_float_repr(double value);

}  // namespace exflow
