// Load-only placement (see load_balance.hpp). Minimising the busiest GPU's load with a fixed
// number of experts per GPU is a cardinality-constrained multiway partition, NP-hard; the
// largest-first greedy is within 4/3 of optimal for makespan, and the swap pass then removes
// every single exchange that still lowers the busiest GPU.
#include "solve/load_balance.hpp"

#include <algorithm>
#include <numeric>

#include "exflow/error.hpp"

namespace exflow::solvers {

std::int64_t max_gpu_load(const std::int64_t* load, const int* gpu_of, int experts, int gpus) {
  std::vector<std::int64_t> per_gpu(static_cast<std::size_t>(gpus), 0);
  for (int e = 0; e < experts; ++e) per_gpu[static_cast<std::size_t>(gpu_of[e])] += load[e];
  return *std::max_element(per_gpu.begin(), per_gpu.end());
}

std::vector<int> balance_layer(const std::int64_t* load, int experts, int gpus, int per_gpu) {
  return balance_layer(load, experts, std::vector<int>(static_cast<std::size_t>(gpus), per_gpu));
}

std::vector<int> balance_layer(const std::int64_t* load, int experts,
                               const std::vector<int>& capacity) {
  const int gpus = static_cast<int>(capacity.size());
  std::vector<int> order(static_cast<std::size_t>(experts));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return load[a] > load[b]; });
  std::vector<std::int64_t> total(static_cast<std::size_t>(gpus), 0);
  std::vector<std::vector<int>> members(static_cast<std::size_t>(gpus));
  std::vector<int> gpu_of(static_cast<std::size_t>(experts), -1);
  for (int e : order) {
    int best = -1;
    for (int g = 0; g < gpus; ++g) {
      if (static_cast<int>(members[static_cast<std::size_t>(g)].size()) >=
          capacity[static_cast<std::size_t>(g)]) {
        continue;
      }
      if (best < 0 || total[static_cast<std::size_t>(g)] < total[static_cast<std::size_t>(best)]) {
        best = g;
      }
    }
    gpu_of[static_cast<std::size_t>(e)] = best;
    members[static_cast<std::size_t>(best)].push_back(e);
    total[static_cast<std::size_t>(best)] += load[e];
  }
  // Swaps between the busiest GPU and any other that leave both below the busiest's load.
  for (int round = 0; round < 100000; ++round) {
    const int hot = static_cast<int>(std::max_element(total.begin(), total.end()) - total.begin());
    const std::int64_t top = total[static_cast<std::size_t>(hot)];
    std::int64_t best_max = top;
    int best_i = -1, best_g = -1, best_j = -1;
    auto& hot_members = members[static_cast<std::size_t>(hot)];
    for (int i = 0; i < static_cast<int>(hot_members.size()); ++i) {
      const std::int64_t la = load[hot_members[static_cast<std::size_t>(i)]];
      for (int g = 0; g < gpus; ++g) {
        if (g == hot) continue;
        const auto& other = members[static_cast<std::size_t>(g)];
        for (int j = 0; j < static_cast<int>(other.size()); ++j) {
          const std::int64_t lb = load[other[static_cast<std::size_t>(j)]];
          if (lb >= la) continue;
          std::int64_t m = std::max(top - la + lb, total[static_cast<std::size_t>(g)] + la - lb);
          if (m < best_max) {
            best_max = m;
            best_i = i;
            best_g = g;
            best_j = j;
          }
        }
      }
    }
    if (best_i < 0) break;
    auto& other = members[static_cast<std::size_t>(best_g)];
    int a = hot_members[static_cast<std::size_t>(best_i)];
    int b = other[static_cast<std::size_t>(best_j)];
    std::swap(hot_members[static_cast<std::size_t>(best_i)],
              other[static_cast<std::size_t>(best_j)]);
    total[static_cast<std::size_t>(hot)] += load[b] - load[a];
    total[static_cast<std::size_t>(best_g)] += load[a] - load[b];
    gpu_of[static_cast<std::size_t>(a)] = best_g;
    gpu_of[static_cast<std::size_t>(b)] = hot;
  }
  return gpu_of;
}

std::vector<std::vector<int>> balance_layer_with_replicas(const std::int64_t* load, int experts,
                                                          int gpus, int replicas) {
  if ((experts + replicas) % gpus != 0 || replicas > static_cast<long long>(experts) * (gpus - 1)) {
    throw UsageError(std::to_string(experts) + " experts and " + std::to_string(replicas) +
                     " replicas cannot fill " + std::to_string(gpus) + " GPUs equally");
  }
  const std::size_t slots = static_cast<std::size_t>((experts + replicas) / gpus);
  std::vector<int> copies(static_cast<std::size_t>(experts), 1);
  for (int r = 0; r < replicas; ++r) {
    int best = -1;
    for (int e = 0; e < experts; ++e) {
      if (copies[static_cast<std::size_t>(e)] >= gpus) continue;
      // load[e] / copies[e] > load[best] / copies[best], without division.
      if (best < 0 || static_cast<double>(load[e]) * copies[static_cast<std::size_t>(best)] >
                          static_cast<double>(load[best]) * copies[static_cast<std::size_t>(e)]) {
        best = e;
      }
    }
    ++copies[static_cast<std::size_t>(best)];
  }
  struct Item {
    int expert;
    double load;
  };
  std::vector<Item> items;
  for (int e = 0; e < experts; ++e) {
    for (int c = 0; c < copies[static_cast<std::size_t>(e)]; ++c) {
      items.push_back({e, static_cast<double>(load[e]) / copies[static_cast<std::size_t>(e)]});
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.load > b.load; });
  std::vector<std::vector<int>> hosts(static_cast<std::size_t>(gpus));
  std::vector<double> total(static_cast<std::size_t>(gpus), 0);
  auto holds = [&](int g, int e) {
    const auto& h = hosts[static_cast<std::size_t>(g)];
    return std::find(h.begin(), h.end(), e) != h.end();
  };
  for (const Item& item : items) {
    int best = -1;
    for (int g = 0; g < gpus; ++g) {
      if (hosts[static_cast<std::size_t>(g)].size() >= slots || holds(g, item.expert)) continue;
      if (best < 0 || total[static_cast<std::size_t>(g)] < total[static_cast<std::size_t>(best)]) {
        best = g;
      }
    }
    if (best < 0) {
      // Every GPU with a free slot already holds this expert: hand one of its other experts
      // to that GPU and take the freed slot elsewhere.
      int free = -1;
      for (int g = 0; g < gpus && free < 0; ++g) {
        if (hosts[static_cast<std::size_t>(g)].size() < slots) free = g;
      }
      bool moved = false;
      for (int g = 0; g < gpus && !moved; ++g) {
        if (g == free || holds(g, item.expert)) continue;
        auto& h = hosts[static_cast<std::size_t>(g)];
        for (std::size_t j = 0; j < h.size() && !moved; ++j) {
          if (holds(free, h[j])) continue;
          hosts[static_cast<std::size_t>(free)].push_back(h[j]);
          h[j] = item.expert;
          moved = true;
        }
      }
      if (!moved) throw Error("internal error: replicas could not be packed onto the GPUs");
      continue;
    }
    hosts[static_cast<std::size_t>(best)].push_back(item.expert);
    total[static_cast<std::size_t>(best)] += item.load;
  }
  return hosts;
}

}  // namespace exflow::solvers
