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

Placement vanilla_placement(int layers, int experts, const Topology& topology) {
  const int per_gpu = topology.experts_per_gpu(experts);
  Placement p(layers, experts, topology.gpus());
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) p.set(l, e, e / per_gpu);
  }
  return p;
}

void validate(const Placement& placement, const Topology& topology, Balance balance,
              const std::string& what) {
  if (balance == Balance::kExact) {
    const int per_gpu = topology.experts_per_gpu(placement.experts());
    validate(placement, topology, per_gpu, per_gpu, what);
  } else {
    validate(placement, topology, 0, placement.experts(), what);
  }
}

void validate(const Placement& placement, const Topology& topology, int min_per_gpu,
              int max_per_gpu, const std::string& what) {
  if (placement.gpus() != topology.gpus()) {
    throw InputError(what + ": made for " + std::to_string(placement.gpus()) +
                     " GPUs, the topology has " + std::to_string(topology.gpus()));
  }
  std::vector<int> count(static_cast<std::size_t>(topology.gpus()));
  for (int l = 0; l < placement.layers(); ++l) {
    std::fill(count.begin(), count.end(), 0);
    for (int e = 0; e < placement.experts(); ++e) {
      int g = placement.gpu(l, e);
      if (g < 0 || g >= topology.gpus()) {
        throw InputError(what + ": layer " + std::to_string(l) + " expert " + std::to_string(e) +
                         " is on GPU " + std::to_string(g) + ", outside 0.." +
                         std::to_string(topology.gpus() - 1));
      }
      ++count[static_cast<std::size_t>(g)];
    }
    for (int g = 0; g < topology.gpus(); ++g) {
      const int c = count[static_cast<std::size_t>(g)];
      if (c >= min_per_gpu && c <= max_per_gpu) continue;
      std::string need =
          min_per_gpu == max_per_gpu
              ? "balanced placement needs " + std::to_string(min_per_gpu) +
                    " (E/G = " + std::to_string(placement.experts()) + "/" +
                    std::to_string(topology.gpus()) + ")"
              : "allowed: " + std::to_string(min_per_gpu) + ".." + std::to_string(max_per_gpu);
      throw InputError(what + ": layer " + std::to_string(l) + " has " + std::to_string(c) +
                       " experts on GPU " + std::to_string(g) + ", " + need);
    }
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
