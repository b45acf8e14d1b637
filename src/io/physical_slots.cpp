// Physical slots of a placement (src/io/physical_slots.hpp).
#include "io/physical_slots.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "exflow/error.hpp"

namespace exflow::io {
namespace {

std::string str(std::int64_t v) {
  return std::to_string(v);
}

}  // namespace

std::vector<std::vector<std::vector<int>>> physical_layout(const Placement& p) {
  const int L = p.layers(), E = p.experts(), G = p.gpus();
  std::vector<std::vector<std::vector<int>>> slots(static_cast<std::size_t>(L));
  int per_gpu = -1;
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) {
      const int g = p.gpu(l, e);
      if (g < 0 || g >= G) {
        throw UsageError("placement: layer " + str(l) + " expert " + str(e) + " is on GPU " +
                         str(g) + ", outside 0.." + str(G - 1));
      }
    }
    const std::vector<int> count = p.slots_per_gpu(l);
    for (int g = 0; g < G; ++g) {
      const int c = count[static_cast<std::size_t>(g)];
      if (c != count[0]) {
        throw UsageError("placement: layer " + str(l) + " has " + str(count[0]) +
                         " expert copies on GPU 0 but " + str(c) + " on GPU " + str(g) +
                         "; physical slots need the same number on every GPU");
      }
    }
    if (per_gpu < 0) per_gpu = count[0];
    if (count[0] != per_gpu) {
      throw UsageError("placement: layer " + str(l) + " has " + str(count[0]) +
                       " slots per GPU, layer 0 has " + str(per_gpu) +
                       "; every layer needs the same number of physical slots");
    }
    auto& layer = slots[static_cast<std::size_t>(l)];
    layer.assign(static_cast<std::size_t>(G), {});
    for (int e = 0; e < E; ++e) {
      for (int g : p.copies(l, e)) layer[static_cast<std::size_t>(g)].push_back(e);
    }
  }
  return slots;
}

Placement placement_from_phy2log(const std::vector<int>& phy2log, int layers, int slots, int gpus,
                                 int experts, const std::string& where) {
  if (gpus < 1) throw UsageError(where + "GPU count must be positive, got " + str(gpus));
  if (experts < 0) throw UsageError(where + "expert count must not be negative");
  if (slots % gpus != 0) {
    throw InputError(where + str(slots) + " slots per layer do not divide among " + str(gpus) +
                     " GPUs");
  }
  const int S = slots / gpus;
  int max_id = -1;
  for (std::size_t i = 0; i < phy2log.size(); ++i) {
    const int v = phy2log[i];
    const std::string at = "layer " + str(static_cast<std::int64_t>(i) / slots) + " slot " +
                           str(static_cast<std::int64_t>(i) % slots);
    if (v < 0) throw InputError(where + at + ": logical expert " + str(v) + " is negative");
    if (experts > 0 && v >= experts) {
      throw InputError(where + at + ": logical expert " + str(v) + " is out of range 0.." +
                       str(experts - 1));
    }
    max_id = std::max(max_id, v);
  }
  const int E = experts > 0 ? experts : max_id + 1;
  if (E > slots) {
    // Some expert of 0..slots has no slot in layer 0; name the first (before allocating E).
    std::vector<char> present(static_cast<std::size_t>(slots) + 1, 0);
    for (int s = 0; s < slots; ++s) {
      const int e = phy2log[static_cast<std::size_t>(s)];
      if (e <= slots) present[static_cast<std::size_t>(e)] = 1;
    }
    const auto missing = std::find(present.begin(), present.end(), 0) - present.begin();
    throw InputError(where + "layer 0: logical expert " + str(missing) +
                     " has no slot (experts 0.." + str(E - 1) + ", " + str(slots) +
                     " slots per layer)");
  }
  std::vector<int> gpu_of(static_cast<std::size_t>(layers) * E, -1);
  std::vector<int> first_slot(static_cast<std::size_t>(E));
  struct Extra {
    int layer, expert, gpu;
  };
  std::vector<Extra> extra;
  for (int l = 0; l < layers; ++l) {
    for (int s = 0; s < slots; ++s) {
      const int e = phy2log[static_cast<std::size_t>(l) * slots + s];
      const int g = s / S;
      int& home = gpu_of[static_cast<std::size_t>(l) * E + e];
      if (home < 0) {
        home = g;
      } else {
        extra.push_back({l, e, g});
      }
    }
    for (int e = 0; e < E; ++e) {
      if (gpu_of[static_cast<std::size_t>(l) * E + e] < 0) {
        throw InputError(where + "layer " + str(l) + ": logical expert " + str(e) +
                         " has no slot (experts 0.." + str(E - 1) + ")");
      }
    }
  }
  Placement p(layers, E, gpus, std::move(gpu_of));
  for (const Extra& x : extra) p.add_copy(x.layer, x.expert, x.gpu);
  return p;
}

}  // namespace exflow::io
