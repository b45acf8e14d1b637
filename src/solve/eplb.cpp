// DeepSeek's EPLB (include/exflow/eplb.hpp), written from the specification of
// github.com/deepseek-ai/EPLB eplb.py. Every layer is solved on its own:
//
// 1. Groups to nodes. The experts form num_groups groups of E/num_groups consecutive ids. The
//    group loads are packed onto the nodes, num_groups/num_nodes groups per node (balanced
//    packing, below). This renumbers the experts "node-major": node n's groups, in the order
//    they were packed, get the ids n*E/N ... (n+1)*E/N - 1 (N = num_nodes), a group's experts
//    staying consecutive.
// 2. Replicas within each node. Each node has num_replicas/N slots for its E/N experts. Every
//    expert gets one slot; each further slot goes to the expert whose load per copy
//    (load / copies) is the highest, the lowest id on ties. A copy's replica rank is the number
//    of copies its expert had before it.
// 3. Copies to GPUs. The node's slots, each weighted by its expert's load per copy, are packed
//    onto the node's GPUs, num_replicas/num_gpus slots per GPU; a slot's position on its GPU is
//    the order in which it was packed.
//
// Balanced packing of n weighted items into m packs of n/m items: if n/m is 1, item i goes to
// pack i. Otherwise the items are visited by descending weight, and each goes to the lightest
// pack that still has room (the lowest pack index on ties), taking the next position there.
//
// The global policy is this with one group and one node. Ties match upstream, which computes in
// float32 with torch on the CPU: the descending sort is not stable; torch's CPU sort is
// std::sort over (key, index) pairs comparing keys only, which is what sort_descending does, so
// equal weights come out in the same order as upstream. Load per copy is load / float(copies);
// pack weights accumulate in float.
#include "exflow/eplb.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "exflow/error.hpp"

namespace exflow {
namespace {

using std::size_t;

std::string str(long long v) {
  return std::to_string(v);
}

// Item indices by descending weight, ties in the order torch's CPU sort leaves them.
std::vector<int> sort_descending(const float* w, int n) {
  std::vector<std::pair<float, int>> items(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) items[static_cast<size_t>(i)] = {w[i], i};
  std::sort(items.begin(), items.end(),
            [](const std::pair<float, int>& a, const std::pair<float, int>& b) {
              return a.first > b.first;
            });
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[static_cast<size_t>(i)] = items[static_cast<size_t>(i)].second;
  return order;
}

// Balanced packing of w [n] into `packs` packs: pack[i] and rank[i] (position in the pack).
void balanced_packing(const float* w, int n, int packs, int* pack, int* rank) {
  const int per_pack = n / packs;
  if (per_pack == 1) {
    for (int i = 0; i < n; ++i) {
      pack[i] = i;
      rank[i] = 0;
    }
    return;
  }
  std::vector<float> weight(static_cast<size_t>(packs), 0.0f);
  std::vector<int> items(static_cast<size_t>(packs), 0);
  for (int i : sort_descending(w, n)) {
    int best = -1;
    for (int p = 0; p < packs; ++p) {
      if (items[static_cast<size_t>(p)] == per_pack) continue;
      if (best < 0 || weight[static_cast<size_t>(p)] < weight[static_cast<size_t>(best)]) best = p;
    }
    pack[i] = best;
    rank[i] = items[static_cast<size_t>(best)]++;
    weight[static_cast<size_t>(best)] += w[i];
  }
}

// Replicates `n` experts of loads w [n] into `slots` >= n slots: slot_expert [slots], slot_rank
// [slots] (the copy's replica rank) and copies [n].
void replicate(const float* w, int n, int slots, int* slot_expert, int* slot_rank, int* copies) {
  for (int e = 0; e < n; ++e) {
    slot_expert[e] = e;
    slot_rank[e] = 0;
    copies[e] = 1;
  }
  for (int s = n; s < slots; ++s) {
    int best = 0;
    float best_share = w[0] / static_cast<float>(copies[0]);
    for (int e = 1; e < n; ++e) {
      const float share = w[e] / static_cast<float>(copies[e]);
      if (share > best_share) {
        best = e;
        best_share = share;
      }
    }
    slot_expert[s] = best;
    slot_rank[s] = copies[best]++;
  }
}

struct Shape {
  int experts, slots, groups, nodes, gpus;
};

// One layer: w [E] -> phy2log [slots], rank [slots], logcnt [E].
void rebalance_layer(const float* w, const Shape& s, int* phy2log, int* rank, int* logcnt) {
  const int E = s.experts, N = s.nodes;
  const int group_size = E / s.groups, groups_per_node = s.groups / N;
  const int per_node = E / N, slots_per_node = s.slots / N;
  const int gpus_per_node = s.gpus / N, slots_per_gpu = s.slots / s.gpus;

  // Step 1: group loads onto nodes; log2mlog[e] is e's node-major id, mlog2log its inverse.
  std::vector<float> group_load(static_cast<size_t>(s.groups));
  for (int g = 0; g < s.groups; ++g) {
    double sum = 0;
    for (int i = 0; i < group_size; ++i) sum += w[g * group_size + i];
    group_load[static_cast<size_t>(g)] = static_cast<float>(sum);
  }
  std::vector<int> group_pack(static_cast<size_t>(s.groups)), group_rank(group_pack.size());
  balanced_packing(group_load.data(), s.groups, N, group_pack.data(), group_rank.data());
  std::vector<int> log2mlog(static_cast<size_t>(E)), mlog2log(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) {
    const auto g = static_cast<size_t>(e / group_size);
    const int m = (group_pack[g] * groups_per_node + group_rank[g]) * group_size + e % group_size;
    log2mlog[static_cast<size_t>(e)] = m;
    mlog2log[static_cast<size_t>(m)] = e;
  }

  std::vector<float> node_load(static_cast<size_t>(per_node));
  std::vector<int> slot_expert(static_cast<size_t>(slots_per_node));
  std::vector<int> slot_rank(slot_expert.size()), copies(static_cast<size_t>(per_node));
  std::vector<float> slot_load(slot_expert.size());
  std::vector<int> pack(slot_expert.size()), pos(slot_expert.size());
  for (int n = 0; n < N; ++n) {
    // Step 2: replicas of the node's experts (local ids 0 .. E/N - 1).
    for (int j = 0; j < per_node; ++j) {
      node_load[static_cast<size_t>(j)] = w[mlog2log[static_cast<size_t>(n * per_node + j)]];
    }
    replicate(node_load.data(), per_node, slots_per_node, slot_expert.data(), slot_rank.data(),
              copies.data());
    for (int j = 0; j < per_node; ++j) {
      logcnt[mlog2log[static_cast<size_t>(n * per_node + j)]] = copies[static_cast<size_t>(j)];
    }
    // Step 3: the node's slots onto its GPUs.
    for (int p = 0; p < slots_per_node; ++p) {
      const auto j = static_cast<size_t>(slot_expert[static_cast<size_t>(p)]);
      slot_load[static_cast<size_t>(p)] = node_load[j] / static_cast<float>(copies[j]);
    }
    balanced_packing(slot_load.data(), slots_per_node, gpus_per_node, pack.data(), pos.data());
    for (int p = 0; p < slots_per_node; ++p) {
      const auto pi = static_cast<size_t>(p);
      const int slot = n * slots_per_node + pack[pi] * slots_per_gpu + pos[pi];
      phy2log[slot] = mlog2log[static_cast<size_t>(n * per_node + slot_expert[pi])];
      rank[slot] = slot_rank[pi];
    }
  }
}

void check_shape(std::size_t weight_size, int layers, int experts, int num_replicas, int num_groups,
                 int num_nodes, int num_gpus) {
  auto refuse = [](const std::string& what) { throw UsageError("EPLB: " + what); };
  if (layers < 1 || experts < 1) {
    refuse("need at least one layer and one expert, got " + str(layers) + " layers of " +
           str(experts) + " experts");
  }
  if (weight_size != static_cast<std::size_t>(layers) * static_cast<std::size_t>(experts)) {
    refuse("weight has " + str(static_cast<long long>(weight_size)) + " entries for " +
           str(layers) + " layers x " + str(experts) + " experts");
  }
  if (num_nodes < 1 || num_gpus < 1 || num_gpus % num_nodes != 0) {
    refuse("the GPUs (" + str(num_gpus) + ") must be a positive multiple of the nodes (" +
           str(num_nodes) + ")");
  }
  if (num_replicas < experts || num_replicas % num_gpus != 0) {
    refuse("the physical slots (" + str(num_replicas) + ") must be at least the experts (" +
           str(experts) + ") and a multiple of the GPUs (" + str(num_gpus) + ")");
  }
  if (num_groups < 1) refuse("the expert groups must be at least 1, got " + str(num_groups));
  if (eplb_is_hierarchical(num_groups, num_nodes) && experts % num_groups != 0) {
    refuse("the expert groups (" + str(num_groups) + ") must divide the experts (" + str(experts) +
           ")");
  }
}

EplbMaps rebalance(const std::vector<float>& w, int layers, int experts, int num_replicas,
                   int num_groups, int num_nodes, int num_gpus) {
  for (float v : w) {
    if (!std::isfinite(v) || v < 0) {
      throw UsageError("EPLB: expert loads must be finite and >= 0, got " + std::to_string(v));
    }
  }
  Shape s{experts, num_replicas, num_groups, num_nodes, num_gpus};
  if (!eplb_is_hierarchical(num_groups, num_nodes)) s.groups = s.nodes = 1;

  EplbMaps m;
  m.layers = layers;
  m.experts = experts;
  m.slots = num_replicas;
  m.phy2log.resize(static_cast<size_t>(layers) * static_cast<size_t>(num_replicas));
  m.logcnt.resize(static_cast<size_t>(layers) * static_cast<size_t>(experts));
  std::vector<int> rank(m.phy2log.size());
  for (int l = 0; l < layers; ++l) {
    const auto lo = static_cast<size_t>(l);
    rebalance_layer(w.data() + lo * static_cast<size_t>(experts), s,
                    m.phy2log.data() + lo * static_cast<size_t>(num_replicas),
                    rank.data() + lo * static_cast<size_t>(num_replicas),
                    m.logcnt.data() + lo * static_cast<size_t>(experts));
  }
  m.max_replicas = *std::max_element(m.logcnt.begin(), m.logcnt.end());
  // log2phy[l][e][r]: the slot of e's copy of replica rank r.
  const auto X = static_cast<size_t>(m.max_replicas);
  m.log2phy.assign(m.logcnt.size() * X, -1);
  for (int l = 0; l < layers; ++l) {
    for (int p = 0; p < num_replicas; ++p) {
      const size_t i =
          static_cast<size_t>(l) * static_cast<size_t>(num_replicas) + static_cast<size_t>(p);
      const size_t e =
          static_cast<size_t>(l) * static_cast<size_t>(experts) + static_cast<size_t>(m.phy2log[i]);
      m.log2phy[e * X + static_cast<size_t>(rank[i])] = p;
    }
  }
  return m;
}

}  // namespace

bool eplb_is_hierarchical(int num_groups, int num_nodes) {
  return num_nodes > 0 && num_groups % num_nodes == 0;
}

EplbMaps rebalance_experts(const std::vector<double>& weight, int layers, int experts,
                           int num_replicas, int num_groups, int num_nodes, int num_gpus) {
  check_shape(weight.size(), layers, experts, num_replicas, num_groups, num_nodes, num_gpus);
  std::vector<float> w(weight.size());
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(weight[i]) || weight[i] < 0) {
      throw UsageError("EPLB: expert loads must be finite and >= 0, got " +
                       std::to_string(weight[i]));
    }
    w[i] = static_cast<float>(weight[i]);
  }
  return rebalance(w, layers, experts, num_replicas, num_groups, num_nodes, num_gpus);
}

EplbMaps rebalance_experts(const std::vector<std::int64_t>& weight, int layers, int experts,
                           int num_replicas, int num_groups, int num_nodes, int num_gpus) {
  check_shape(weight.size(), layers, experts, num_replicas, num_groups, num_nodes, num_gpus);
  std::vector<float> w(weight.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(weight[i]);
  return rebalance(w, layers, experts, num_replicas, num_groups, num_nodes, num_gpus);
}

}  // namespace exflow
