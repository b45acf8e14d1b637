// The routing rulebook: every rule that says where a token goes, in one place. The evaluator
// (src/core/evaluate.cpp), the token search (src/solve/token_*.cpp), the graph local search's
// hop costs (src/solve/local_search.cpp), exflow-run's route plan (src/runtime/route_plan.cpp)
// and, through the evaluator, the simulator call these functions; none of them restates a rule.
//
// The rules (docs/cost-model.md has the maths):
//
//   hop cost     d(a, b): 0 on one GPU, Topology::intra_cost() within a node,
//                Topology::inter_cost() across nodes (HopTable caches it by hop class).
//   owner        baseline (standard) scheme: token t lives on GPU floor(t / S) mod G, S the
//                sequence length (1: tokens dealt round-robin).
//   copy choice  nearest: a token on GPU `at` uses the copy of an expert on `at` if there is
//                one, else the copy with the lowest hop cost from `at`, ties to the lowest GPU id.
//                even (standard schemes; SGLang's static dispatch, expert_location_dispatch.py):
//                the copy on the owner if there is one, else each of the c copies with
//                probability 1/c, the columns independent; H_l and every transfer are then
//                expected values (SpreadGpus, expected_transfers).
//   start        context-coherent scheme, layer 0: the token starts on the lowest-id copy of
//                its column-0 expert.
//   H_l          the distinct GPUs of the copies a token uses at layer l, in order of first
//                appearance over its columns (column 0 first), each with the number of its
//                columns it serves.
//   home         context-coherent h_l: the GPU of H_l serving most of the token's columns;
//                ties go to column 0's GPU if it is among the most, else to the lowest id.
//   transfers    context-coherent layer l: dispatch h_{l-1} -> g for every g in H_l but
//                h_{l-1} (none at layer 0), then combine g -> h_l for every g in H_l but h_l.
//                Baseline (standard): dispatch owner -> g and combine g -> owner for every g in
//                H_l but the owner.
//                DeepEP normal mode: for every other node m holding a GPU of H_l, one inter-node
//                transfer owner -> relay(m) (the GPU of node m with the owner's local index),
//                then relay(m) -> g within node m for every other GPU g of H_l there; owner -> g
//                for every other GPU g of H_l on the owner's node. Combine mirrors dispatch.
//                DeepEP low-latency mode: one transfer owner -> g per column of the token served
//                by a GPU g other than the owner (no merging); combine mirrors it.
//                (../shared/docs/SCHEMES.md; DeepEP csrc/kernels/internode.cu, internode_ll.cu.)
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "exflow/evaluate.hpp"
#include "exflow/topology.hpp"

namespace exflow {

class Placement;

namespace routing {

// Hop classes as array indices: 0 local, 1 within a node, 2 across nodes.
inline constexpr int kLocal = static_cast<int>(Hop::kLocal);
inline constexpr int kIntra = static_cast<int>(Hop::kIntraNode);
inline constexpr int kInter = static_cast<int>(Hop::kInterNode);

// Transfer phases.
inline constexpr int kDispatch = 0;
inline constexpr int kCombine = 1;

// The topology's hop classes and costs, built once: node_of [G], cost by class [3].
class HopTable {
 public:
  explicit HopTable(const Topology& topology);

  int gpus() const { return static_cast<int>(node_of_.size()); }
  int nodes() const { return node_of_.empty() ? 1 : node_of_.back() + 1; }
  int node_of(int gpu) const { return node_of_[static_cast<std::size_t>(gpu)]; }
  // The GPU of `node` with the same local index as `gpu` (DeepEP normal mode's RDMA target).
  int relay(int gpu, int node) const { return node * gpus_per_node_ + gpu % gpus_per_node_; }
  // kLocal, kIntra or kInter.
  int hop(int a, int b) const { return (a != b) + (node_of(a) != node_of(b)); }
  double cost_of_hop(int hop_class) const { return cost_[static_cast<std::size_t>(hop_class)]; }
  double cost(int a, int b) const { return cost_of_hop(hop(a, b)); }
  // The sum of cost(x, g) over a multiset of GPUs x, from its size, how many of them lie on g's
  // node and how many are g: a sum of hops needs only per-GPU and per-node counts.
  double sum_of_hops_to(double total, double on_node, double on_gpu) const {
    return cost_[kInter] * total - (cost_[kInter] - cost_[kIntra]) * on_node -
           (cost_[kIntra] - cost_[kLocal]) * on_gpu;
  }

 private:
  std::vector<int> node_of_;
  int gpus_per_node_ = 1;
  std::array<double, 3> cost_{};
};

// Baseline owner of token t (sequence_length >= 1).
inline int owner(std::int64_t token, std::int64_t sequence_length, int gpus) {
  return static_cast<int>((token / sequence_length) % gpus);
}

// Copy choice. `primary` is one copy, `others` the rest, in any order.
inline int choose_copy(int primary, std::span<const int> others, int at, const HopTable& hops) {
  if (others.empty() || primary == at) return primary;
  int best = primary;
  double best_cost = hops.cost(at, primary);
  for (int g : others) {
    if (g == at) return g;
    const double c = hops.cost(at, g);
    if (c < best_cost || (c == best_cost && g < best)) {
      best = g;
      best_cost = c;
    }
  }
  return best;
}
// The same for all copies in one list (non-empty).
inline int choose_copy(std::span<const int> copies, int at, const HopTable& hops) {
  return choose_copy(copies.front(), copies.subspan(1), at, hops);
}

// Layer-0 start of the context-coherent scheme, from the copies of the token's column-0 expert
// (`primary` and `others` as for choose_copy): the lowest GPU id.
inline int start_gpu(int primary, std::span<const int> others) {
  int lowest = primary;
  for (int g : others) lowest = g < lowest ? g : lowest;
  return lowest;
}

// The GPUs holding a copy of every (layer, expert) of a placement, distinct and ascending (two
// slots of an expert on one GPU count once): CSR over l * E + e.
class CopyTable {
 public:
  explicit CopyTable(const Placement& placement);

  std::span<const int> copies(int layer, int expert) const {
    const std::size_t i = static_cast<std::size_t>(layer) * static_cast<std::size_t>(experts_) +
                          static_cast<std::size_t>(expert);
    return {gpu_.data() + start_[i], start_[i + 1] - start_[i]};
  }
  int choose(int layer, int expert, int at, const HopTable& hops) const {
    return choose_copy(copies(layer, expert), at, hops);
  }
  int start(int expert_at_layer0) const {
    const std::span<const int> c = copies(0, expert_at_layer0);
    return start_gpu(c.front(), c.subspan(1));
  }

 private:
  int experts_;
  std::vector<std::size_t> start_;  // [L * E + 1]
  std::vector<int> gpu_;
};

// H_l of one token: the distinct GPUs of its chosen copies with multiplicities. Holds scratch
// for k columns; reuse one per thread.
class TokenGpus {
 public:
  explicit TokenGpus(int k) : gpu_(static_cast<std::size_t>(k)), count_(gpu_.size()) {}

  void clear() { size_ = 0; }
  void add(int g) {
    int j = 0;
    while (j < size_ && gpu_[static_cast<std::size_t>(j)] != g) ++j;
    if (j == size_) {
      gpu_[static_cast<std::size_t>(j)] = g;
      count_[static_cast<std::size_t>(j)] = 0;
      ++size_;
    }
    ++count_[static_cast<std::size_t>(j)];
  }
  int size() const { return size_; }
  int gpu(int j) const { return gpu_[static_cast<std::size_t>(j)]; }
  int count(int j) const { return count_[static_cast<std::size_t>(j)]; }
  // The home h_l (the set must hold column 0's GPU first, as add() in column order gives).
  int home() const {
    int most = 0;
    for (int j = 0; j < size_; ++j) most = std::max(most, count(j));
    if (count(0) == most) return gpu(0);
    int h = std::numeric_limits<int>::max();
    for (int j = 1; j < size_; ++j) {
      if (count(j) == most) h = std::min(h, gpu(j));
    }
    return h;
  }

 private:
  std::vector<int> gpu_;
  std::vector<int> count_;
  int size_ = 0;
};

// The transfers of one token at one layer, as visit(phase, src, dst) calls with src != dst.
// Context-coherent: `from` is h_{l-1}, or -1 at layer 0 (no dispatch). Returns whether no
// dispatch was needed (every GPU of H_l is `from`).
template <class Visit>
bool coherent_transfers(const TokenGpus& h, int from, int home, Visit&& visit) {
  bool local = true;
  for (int j = 0; j < h.size(); ++j) {
    const int g = h.gpu(j);
    if (from >= 0 && g != from) {
      local = false;
      visit(kDispatch, from, g);
    }
    if (g != home) visit(kCombine, g, home);
  }
  return local;
}

// Baseline: dispatch from the owner to every other GPU of H_l and combine back. Returns whether
// the token stayed on its owner.
template <class Visit>
bool baseline_transfers(const TokenGpus& h, int owner_gpu, Visit&& visit) {
  bool local = true;
  for (int j = 0; j < h.size(); ++j) {
    if (h.gpu(j) == owner_gpu) continue;
    local = false;
    visit(kDispatch, owner_gpu, h.gpu(j));
    visit(kCombine, h.gpu(j), owner_gpu);
  }
  return local;
}

// DeepEP normal mode (node-deduplicated dispatch): see the rules above. Returns whether the
// token stayed on its owner.
template <class Visit>
bool deepep_transfers(const TokenGpus& h, int owner_gpu, const HopTable& hops, Visit&& visit) {
  const int owner_node = hops.node_of(owner_gpu);
  bool local = true;
  for (int j = 0; j < h.size(); ++j) {
    const int g = h.gpu(j);
    if (g == owner_gpu) continue;
    local = false;
    const int node = hops.node_of(g);
    if (node == owner_node) {
      visit(kDispatch, owner_gpu, g);
      visit(kCombine, g, owner_gpu);
      continue;
    }
    const int relay = hops.relay(owner_gpu, node);
    bool node_seen = false;  // an earlier GPU of H_l on this node carried its RDMA transfer
    for (int i = 0; i < j && !node_seen; ++i) node_seen = hops.node_of(h.gpu(i)) == node;
    if (!node_seen) {
      visit(kDispatch, owner_gpu, relay);
      visit(kCombine, relay, owner_gpu);
    }
    if (g != relay) {
      visit(kDispatch, relay, g);
      visit(kCombine, g, relay);
    }
  }
  return local;
}

// DeepEP low-latency mode: one transfer per token-expert off the owner, each way. Returns whether
// the token stayed on its owner.
template <class Visit>
bool deepep_low_latency_transfers(const TokenGpus& h, int owner_gpu, Visit&& visit) {
  bool local = true;
  for (int j = 0; j < h.size(); ++j) {
    const int g = h.gpu(j);
    if (g == owner_gpu) continue;
    local = false;
    for (int c = 0; c < h.count(j); ++c) {
      visit(kDispatch, owner_gpu, g);
      visit(kCombine, g, owner_gpu);
    }
  }
  return local;
}

// H_l of one token under copy choice even: for each GPU a column may land on, the probability
// that H_l holds it (1 - prod over columns of (1 - p_c(g))) and the expected number of columns
// it serves; and the same by node. Holds scratch; reuse one per thread.
class SpreadGpus {
 public:
  struct Entry {
    int id;          // GPU or node
    double miss;     // probability that no column lands here
    double columns;  // expected columns served here
  };

  void clear() {
    gpus_.clear();
    nodes_.clear();
  }
  // One column whose expert has `copies` (distinct GPUs), for a token owned by `owner`; calls
  // landed(g, p) for each GPU g the column lands on with probability p > 0.
  template <class Landed>
  void add_column(std::span<const int> copies, int owner, const HopTable& hops, Landed&& landed) {
    column_nodes_.clear();
    const bool on_owner = std::find(copies.begin(), copies.end(), owner) != copies.end();
    const double p = on_owner ? 1.0 : 1.0 / static_cast<double>(copies.size());
    for (int g : copies) {
      if (on_owner && g != owner) continue;
      landed(g, p);
      land(gpus_, g, p);
      add_mass(column_nodes_, hops.node_of(g), p);
    }
    for (const Entry& n : column_nodes_) land(nodes_, n.id, n.columns);
  }
  std::span<const Entry> gpus() const { return gpus_; }
  std::span<const Entry> nodes() const { return nodes_; }
  // Probability that H_l holds `id` among `entries` (0 if absent).
  static double reach(std::span<const Entry> entries, int id) {
    for (const Entry& e : entries) {
      if (e.id == id) return 1.0 - e.miss;
    }
    return 0.0;
  }

 private:
  static Entry& find(std::vector<Entry>& list, int id) {
    for (Entry& e : list) {
      if (e.id == id) return e;
    }
    list.push_back({id, 1.0, 0.0});
    return list.back();
  }
  static void land(std::vector<Entry>& list, int id, double p) {
    Entry& e = find(list, id);
    e.miss *= 1.0 - p;
    e.columns += p;
  }
  static void add_mass(std::vector<Entry>& list, int id, double p) { find(list, id).columns += p; }

  std::vector<Entry> gpus_;
  std::vector<Entry> nodes_;
  std::vector<Entry> column_nodes_;
};

// The expected transfers of one token at one layer of a standard scheme under copy choice even,
// as visit(phase, src, dst, expected count) calls with src != dst: each rule of the scheme's
// transfers above, weighted by the probability that its GPU (or for DeepEP normal mode's RDMA
// transfer, its node) is in H_l; low latency weights each transfer by the expected columns.
// Returns the probability that the token stays on its owner.
template <class Visit>
double expected_transfers(Scheme scheme, const SpreadGpus& h, int owner_gpu, const HopTable& hops,
                          Visit&& visit) {
  const int owner_node = hops.node_of(owner_gpu);
  for (const SpreadGpus::Entry& e : h.gpus()) {
    if (e.id == owner_gpu) continue;
    const double q = 1.0 - e.miss;
    const bool remote = hops.node_of(e.id) != owner_node;
    if (scheme == Scheme::kDeepEPLowLatency) {
      visit(kDispatch, owner_gpu, e.id, e.columns);
      visit(kCombine, e.id, owner_gpu, e.columns);
    } else if (scheme == Scheme::kDeepEP && remote) {
      const int relay = hops.relay(owner_gpu, hops.node_of(e.id));
      if (e.id != relay) {
        visit(kDispatch, relay, e.id, q);
        visit(kCombine, e.id, relay, q);
      }
    } else {
      visit(kDispatch, owner_gpu, e.id, q);
      visit(kCombine, e.id, owner_gpu, q);
    }
  }
  if (scheme == Scheme::kDeepEP) {
    for (const SpreadGpus::Entry& n : h.nodes()) {
      if (n.id == owner_node) continue;
      const int relay = hops.relay(owner_gpu, n.id);
      visit(kDispatch, owner_gpu, relay, 1.0 - n.miss);
      visit(kCombine, relay, owner_gpu, 1.0 - n.miss);
    }
  }
  // A column lands off the owner with positive probability unless its expert has a copy there.
  for (const SpreadGpus::Entry& e : h.gpus()) {
    if (e.id != owner_gpu) return 0.0;
  }
  return 1.0;
}

// The hop cost of a token's transfers at one layer of the context-coherent scheme.
inline double coherent_layer_cost(const TokenGpus& h, int from, int home, const HopTable& hops) {
  double cost = 0;
  coherent_transfers(h, from, home, [&](int, int src, int dst) { cost += hops.cost(src, dst); });
  return cost;
}

}  // namespace routing
}  // namespace exflow
