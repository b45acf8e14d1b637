// The routing rulebook's tables (src/core/routing.hpp).
#include "core/routing.hpp"

#include <algorithm>

#include "exflow/placement.hpp"

namespace exflow::routing {

HopTable::HopTable(const Topology& topology) : gpus_per_node_(topology.gpus_per_node()) {
  node_of_.resize(static_cast<std::size_t>(topology.gpus()));
  for (int g = 0; g < topology.gpus(); ++g) {
    node_of_[static_cast<std::size_t>(g)] = topology.node_of(g);
  }
  for (Hop h : {Hop::kLocal, Hop::kIntraNode, Hop::kInterNode}) {
    cost_[static_cast<std::size_t>(h)] = topology.cost(h);
  }
}

CopyTable::CopyTable(const Placement& placement) : experts_(placement.experts()) {
  const std::size_t n = placement.gpu_of().size();
  start_.assign(n + 1, 0);
  for (const Replica& r : placement.replicas()) {
    ++start_[static_cast<std::size_t>(r.layer) * static_cast<std::size_t>(experts_) +
             static_cast<std::size_t>(r.expert) + 1];
  }
  for (std::size_t i = 0; i < n; ++i) start_[i + 1] += start_[i] + 1;
  gpu_.resize(start_[n]);
  std::vector<std::size_t> fill(start_.begin(), start_.end() - 1);
  for (std::size_t i = 0; i < n; ++i) gpu_[fill[i]++] = placement.gpu_of()[i];
  for (const Replica& r : placement.replicas()) {
    gpu_[fill[static_cast<std::size_t>(r.layer) * static_cast<std::size_t>(experts_) +
              static_cast<std::size_t>(r.expert)]++] = r.gpu;
  }
  // Sort each expert's copies and drop repeats (two slots of one expert on one GPU: a token there
  // uses it once), compacting the table.
  std::size_t out = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto first = gpu_.begin() + static_cast<std::ptrdiff_t>(start_[i]);
    const auto last = gpu_.begin() + static_cast<std::ptrdiff_t>(start_[i + 1]);
    std::sort(first, last);
    const auto end = std::unique(first, last);
    start_[i] = out;
    for (auto it = first; it != end; ++it) gpu_[out++] = *it;
  }
  start_[n] = out;
  gpu_.resize(out);
}

}  // namespace exflow::routing
