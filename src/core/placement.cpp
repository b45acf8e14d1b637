#include "exflow/placement.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "exflow/error.hpp"
#include "exflow/topology.hpp"

namespace exflow {

Placement::Placement(int layers, int experts, int gpus)
    : Placement(layers, experts, gpus,
                std::vector<int>(static_cast<std::size_t>(layers) * experts, 0)) {}

Placement::Placement(int layers, int experts, int gpus, std::vector<int> gpu_of)
    : layers_(layers), experts_(experts), gpus_(gpus), gpu_of_(std::move(gpu_of)) {
  if (layers < 1 || experts < 1 || gpus < 1) {
    throw UsageError("placement: layers, experts and GPUs must be positive (got " +
                     std::to_string(layers) + ", " + std::to_string(experts) + ", " +
                     std::to_string(gpus) + ")");
  }
  if (gpu_of_.size() != static_cast<std::size_t>(layers) * experts) {
    throw UsageError("placement: " + std::to_string(gpu_of_.size()) + " entries for " +
                     std::to_string(layers) + " layers x " + std::to_string(experts) + " experts");
  }
}

void Placement::add_replica(int layer, int expert, int gpu) {
  // Out-of-range indices are add_copy's to refuse; within range, a second copy on `gpu` is not a
  // replica.
  const bool in_range = layer >= 0 && layer < layers_ && expert >= 0 && expert < experts_;
  if (in_range && has_copy_on(layer, expert, gpu)) {
    throw UsageError("layer " + std::to_string(layer) + " expert " + std::to_string(expert) +
                     " already has a copy on GPU " + std::to_string(gpu));
  }
  add_copy(layer, expert, gpu);
}

void Placement::add_copy(int layer, int expert, int gpu) {
  if (layer < 0 || layer >= layers_ || expert < 0 || expert >= experts_ || gpu < 0 ||
      gpu >= gpus_) {
    throw UsageError("copy of layer " + std::to_string(layer) + " expert " +
                     std::to_string(expert) + " on GPU " + std::to_string(gpu) +
                     " is out of range for " + std::to_string(layers_) + " layers x " +
                     std::to_string(experts_) + " experts on " + std::to_string(gpus_) + " GPUs");
  }
  int& primary = gpu_of_[static_cast<std::size_t>(layer) * experts_ + expert];
  if (gpu < primary) std::swap(gpu, primary);
  Replica r{layer, expert, gpu};
  replicas_.insert(std::upper_bound(replicas_.begin(), replicas_.end(), r), r);
}

void Placement::move_primary(int layer, int expert, int gpu) {
  int& primary = gpu_of_[static_cast<std::size_t>(layer) * experts_ + expert];
  if (gpu == primary) return;
  auto first = std::lower_bound(replicas_.begin(), replicas_.end(), Replica{layer, expert, -1});
  auto last = first;
  while (last != replicas_.end() && last->layer == layer && last->expert == expert) ++last;
  if (first == last) {
    primary = gpu;
    return;
  }
  for (auto it = first; it != last; ++it) {
    if (it->gpu == gpu) {
      throw UsageError("layer " + std::to_string(layer) + " expert " + std::to_string(expert) +
                       " already has a copy on GPU " + std::to_string(gpu));
    }
  }
  // The copies are now the replicas' GPUs and `gpu`: the lowest becomes gpu_of, the rest stay
  // sorted in the replica list.
  std::vector<int> gpus{gpu};
  for (auto it = first; it != last; ++it) gpus.push_back(it->gpu);
  std::sort(gpus.begin(), gpus.end());
  primary = gpus.front();
  for (auto it = first; it != last; ++it) {
    it->gpu = gpus[static_cast<std::size_t>(it - first) + 1];
  }
}

bool Placement::has_copy_on(int layer, int expert, int gpu) const {
  const std::vector<int> c = copies(layer, expert);
  return std::find(c.begin(), c.end(), gpu) != c.end();
}

std::vector<int> Placement::copies(int layer, int expert) const {
  std::vector<int> out{gpu(layer, expert)};
  auto it = std::lower_bound(replicas_.begin(), replicas_.end(), Replica{layer, expert, -1});
  for (; it != replicas_.end() && it->layer == layer && it->expert == expert; ++it) {
    out.push_back(it->gpu);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int> Placement::slots_per_gpu(int layer) const {
  std::vector<int> count(static_cast<std::size_t>(gpus_), 0);
  for (int e = 0; e < experts_; ++e) {
    int g = gpu(layer, e);
    if (g >= 0 && g < gpus_) ++count[static_cast<std::size_t>(g)];
  }
  auto it = std::lower_bound(replicas_.begin(), replicas_.end(), Replica{layer, 0, -1});
  for (; it != replicas_.end() && it->layer == layer; ++it)
    ++count[static_cast<std::size_t>(it->gpu)];
  return count;
}

Placement vanilla_placement(int layers, int experts, const Topology& topology) {
  const int per_gpu = topology.experts_per_gpu(experts);
  Placement p(layers, experts, topology.gpus());
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) p.set(l, e, e / per_gpu);
  }
  return p;
}

Placement vanilla_placement_any(int layers, int experts, const Topology& topology) {
  const int G = topology.gpus();
  if (experts % G == 0) return vanilla_placement(layers, experts, topology);
  if (G % experts != 0) {
    throw UsageError("neither the " + std::to_string(experts) + " experts nor the " +
                     std::to_string(G) + " GPUs divide the other: no vanilla placement");
  }
  Placement p(layers, experts, G);
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      p.set(l, e, e);
      for (int g = e + experts; g < G; g += experts) p.add_replica(l, e, g);
    }
  }
  return p;
}

Placement trivial_placement(int layers, int experts, int redundant_total,
                            const Topology& topology) {
  const int G = topology.gpus();
  if (redundant_total < 0 || (experts + redundant_total) % G != 0) {
    throw UsageError(std::to_string(experts) + " experts + " + std::to_string(redundant_total) +
                     " redundant slots do not divide over " + std::to_string(G) + " GPUs");
  }
  const int S = (experts + redundant_total) / G;
  Placement p(layers, experts, G);
  for (int l = 0; l < layers; ++l) {
    for (int s = 0; s < G * S; ++s) {
      if (s < experts) {
        p.set(l, s, s / S);
      } else {
        p.add_copy(l, s % experts, s / S);
      }
    }
  }
  return p;
}

Placement stock_placement_for(const Placement& placement, const Topology& topology) {
  const auto& reps = placement.replicas();  // sorted by layer first
  const auto first_layer =
      std::find_if(reps.begin(), reps.end(), [](const Replica& r) { return r.layer > 0; });
  return stock_placement(placement.layers(), placement.experts(),
                         static_cast<int>(first_layer - reps.begin()), topology);
}

Placement stock_placement(int layers, int experts, int redundant_total, const Topology& topology) {
  const int G = topology.gpus();
  if (experts % G == 0 || G % experts == 0) return vanilla_placement_any(layers, experts, topology);
  if (redundant_total == 0) topology.experts_per_gpu(experts);  // throws, saying why
  return trivial_placement(layers, experts, redundant_total, topology);
}

namespace {

// Shape and GPU range; returns the replicas of each layer.
std::vector<int> check_copies(const Placement& placement, const Topology& topology,
                              const std::string& what) {
  if (placement.gpus() != topology.gpus()) {
    throw InputError(what + ": made for " + std::to_string(placement.gpus()) +
                     " GPUs, the topology has " + std::to_string(topology.gpus()));
  }
  for (int l = 0; l < placement.layers(); ++l) {
    for (int e = 0; e < placement.experts(); ++e) {
      int g = placement.gpu(l, e);
      if (g < 0 || g >= topology.gpus()) {
        throw InputError(what + ": layer " + std::to_string(l) + " expert " + std::to_string(e) +
                         " is on GPU " + std::to_string(g) + ", outside 0.." +
                         std::to_string(topology.gpus() - 1));
      }
    }
  }
  std::vector<int> per_layer(static_cast<std::size_t>(placement.layers()), 0);
  for (const Replica& r : placement.replicas()) ++per_layer[static_cast<std::size_t>(r.layer)];
  return per_layer;
}

void check_slots(const Placement& placement, const Topology& topology, int layer, int min_per_gpu,
                 int max_per_gpu, const std::string& need, const std::string& what) {
  std::vector<int> count = placement.slots_per_gpu(layer);
  for (int g = 0; g < topology.gpus(); ++g) {
    const int c = count[static_cast<std::size_t>(g)];
    if (c >= min_per_gpu && c <= max_per_gpu) continue;
    throw InputError(what + ": layer " + std::to_string(layer) + " has " + std::to_string(c) +
                     " experts on GPU " + std::to_string(g) + ", " + need);
  }
}

}  // namespace

void validate(const Placement& placement, const Topology& topology, Balance balance,
              const std::string& what) {
  if (balance == Balance::kNone) {
    validate(placement, topology, 0, placement.experts(), what);
    return;
  }
  std::vector<int> replicas = check_copies(placement, topology, what);
  const int E = placement.experts();
  const int G = topology.gpus();
  for (int l = 0; l < placement.layers(); ++l) {
    const int r = replicas[static_cast<std::size_t>(l)];
    if ((E + r) % G != 0) {
      throw InputError(what + ": layer " + std::to_string(l) + " has " + std::to_string(E) +
                       " experts + " + std::to_string(r) + " replicas = " + std::to_string(E + r) +
                       " slots, which cannot fill the " + std::to_string(G) + " GPUs equally");
    }
    const int slots = (E + r) / G;
    std::string need = "balanced placement needs " + std::to_string(slots) + " ((E + R)/G = (" +
                       std::to_string(E) + " + " + std::to_string(r) + ")/" + std::to_string(G) +
                       ")";
    check_slots(placement, topology, l, slots, slots, need, what);
  }
}

void validate(const Placement& placement, const Topology& topology, int min_per_gpu,
              int max_per_gpu, const std::string& what) {
  check_copies(placement, topology, what);
  std::string need =
      min_per_gpu == max_per_gpu
          ? "balanced placement needs " + std::to_string(min_per_gpu) +
                " (E/G = " + std::to_string(placement.experts()) + "/" +
                std::to_string(topology.gpus()) + ")"
          : "allowed: " + std::to_string(min_per_gpu) + ".." + std::to_string(max_per_gpu);
  for (int l = 0; l < placement.layers(); ++l) {
    check_slots(placement, topology, l, min_per_gpu, max_per_gpu, need, what);
  }
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0) return std::signbit(value) ? "-0.0" : "0.0";
  // Shortest round-trip digits in scientific form: [-]d[.ddd]e[+-]XX.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  std::size_t epos = sci.find('e');
  int exponent = std::stoi(sci.substr(epos + 1));
  std::string digits = sci.substr(0, epos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int n = static_cast<int>(digits.size());
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out = digits.substr(0, 1);
    if (n > 1) out.append(".").append(digits, 1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += ebuf;
  } else if (exponent < 0) {
    out.append("0.").append(static_cast<std::size_t>(-exponent - 1), '0').append(digits);
  } else if (exponent + 1 >= n) {
    out = digits + std::string(static_cast<std::size_t>(exponent + 1 - n), '0') + ".0";
  } else {
    out.append(digits, 0, static_cast<std::size_t>(exponent + 1))
        .append(".")
        .append(digits, static_cast<std::size_t>(exponent + 1));
  }
  return sign + out;
}

std::string seed_solution_filename(int gpus_per_node, int nodes, double cost, double cintra,
                                   double cinter) {
  std::string cinter_text = nodes == 1 ? "0" : python_float_repr(cinter);
  return "solution_intra" + std::to_string(gpus_per_node) + "_inter" + std::to_string(nodes) +
         "_cost" + python_float_repr(cost) + "_cintra" + python_float_repr(cintra) + "_cinter" +
         cinter_text + ".csv";
}

}  // namespace exflow
