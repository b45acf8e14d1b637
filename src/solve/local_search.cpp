// fast and bcd: local search on the placement objective (include/exflow/solve.hpp).
//
// Two exact moves, each never increasing the objective:
//  * block step: with layers l - 1 and l + 1 fixed, re-placing layer l is a linear assignment
//    of its experts to GPU slots, cost(e, g) = sum of w * d(neighbour's GPU, g) over e's
//    edges to both neighbours (solved exactly, solve/assignment.hpp);
//  * suffix re-alignment: relabelling GPUs by a topology automorphism in every layer after l
//    changes only pair (l, l + 1); the best such relabelling is an exact alignment
//    (solve/alignment.hpp). Block steps alone cannot make it: it moves many layers at once.
// bcd is plain block-coordinate descent (block steps until a sweep gains nothing) from random
// balanced starts, best of `starts`. fast builds greedy chains (each layer assigned to follow
// its predecessor), descends with both moves, then iterates: perturb a random window of
// layers with random swaps, descend from there, keep the result if it is better. Starts run on
// all threads; each start's random stream derives from (seed, start), and the best start wins
// (ties: lowest start), so the answer depends only on the seed unless the time limit strikes.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <thread>

#include "core/routing.hpp"
#include "core/splitmix64.hpp"
#include "exflow/error.hpp"
#include "solve/alignment.hpp"
#include "solve/assignment.hpp"
#include "solve/methods.hpp"

namespace exflow::solvers {
namespace {

using Clock = std::chrono::steady_clock;

struct Edge {
  int other;
  double w;
};

// Sparse counts of one layer pair: out[i] lists (j, w) of expert i at l; in[j] lists (i, w).
struct PairEdges {
  std::vector<int> out_begin, in_begin;  // [E + 1]
  std::vector<Edge> out, in;
  double total = 0;
};

class Model {
 public:
  explicit Model(const Instance& in)
      : L(in.layers()),
        E(in.experts()),
        G(in.gpus()),
        P(in.topology.gpus_per_node()),
        c1(in.topology.intra_cost()),
        c2(in.topology.inter_cost()),
        min_per_gpu(in.min_per_gpu),
        hops(in.topology),
        tokens(static_cast<double>(std::max<std::int64_t>(1, in.graph.tokens()))) {
    for (int l = 0; l + 1 < L; ++l) {
      PairEdges p;
      p.out_begin.assign(static_cast<std::size_t>(E) + 1, 0);
      p.in_begin.assign(static_cast<std::size_t>(E) + 1, 0);
      for (int i = 0; i < E; ++i) {
        for (int j = 0; j < E; ++j) {
          const auto w = static_cast<double>(in.graph.transition(l, i, j));
          if (w == 0) continue;
          p.out.push_back({j, w});
          ++p.in_begin[static_cast<std::size_t>(j) + 1];
          p.total += w;
        }
        p.out_begin[static_cast<std::size_t>(i) + 1] = static_cast<int>(p.out.size());
      }
      for (int j = 0; j < E; ++j)
        p.in_begin[static_cast<std::size_t>(j) + 1] += p.in_begin[static_cast<std::size_t>(j)];
      p.in.resize(p.out.size());
      std::vector<int> fill(p.in_begin.begin(), p.in_begin.end() - 1);
      for (int i = 0; i < E; ++i) {
        for (int k = p.out_begin[static_cast<std::size_t>(i)];
             k < p.out_begin[static_cast<std::size_t>(i) + 1]; ++k) {
          const Edge& e = p.out[static_cast<std::size_t>(k)];
          p.in[static_cast<std::size_t>(fill[static_cast<std::size_t>(e.other)]++)] = {i, e.w};
        }
      }
      pairs.push_back(std::move(p));
    }
  }

  double hop(int a, int b) const { return hops.cost(a, b); }

  const int L, E, G, P;
  const double c1, c2;
  const int min_per_gpu;
  const routing::HopTable hops;
  const double tokens;
  std::vector<PairEdges> pairs;  // [L - 1]
};

// A labelled placement: gpu[l * E + e].
using Labels = std::vector<int>;

double pair_cost(const Model& m, const Labels& x, int l) {
  const PairEdges& p = m.pairs[static_cast<std::size_t>(l)];
  const int* from = x.data() + static_cast<std::size_t>(l) * m.E;
  const int* to = from + m.E;
  double c = 0;
  for (int i = 0; i < m.E; ++i) {
    for (int k = p.out_begin[static_cast<std::size_t>(i)];
         k < p.out_begin[static_cast<std::size_t>(i) + 1]; ++k) {
      const Edge& e = p.out[static_cast<std::size_t>(k)];
      c += e.w * m.hop(from[i], to[e.other]);
    }
  }
  return c;
}

// Splits of a two-GPU re-split per layer at most (C(10, 5) = 252: up to 5 experts per GPU). Its
// dynamic program costs the square of this per layer pair: 6 experts per GPU (924 splits) made a
// re-split take a third of a second on 16 layers, and an 18-expert, 3-GPU solve minutes.
constexpr double kMaxSplitStates = 300;

double binomial(int n, int k) {
  double b = 1;
  for (int i = 1; i <= k; ++i) b = b * (n - k + i) / i;
  return b;
}

// Flow between the members of two consecutive layers that a split (sa, sb) puts on different
// GPUs; w is [na, nb], bit a of sa set = member a on the first GPU.
double cross_flow(const std::vector<double>& w, std::size_t na, std::size_t nb, std::uint32_t sa,
                  std::uint32_t sb) {
  double c = 0;
  for (std::size_t a = 0; a < na; ++a) {
    const bool first = (sa >> a) & 1u;
    for (std::size_t b = 0; b < nb; ++b) {
      if (first != static_cast<bool>((sb >> b) & 1u)) c += w[a * nb + b];
    }
  }
  return c;
}

class Search {
 public:
  explicit Search(const Model& m) : m_(m), mass_(static_cast<std::size_t>(m.E) * m.G) {}

  void load(const Labels& x) {
    x_ = x;
    pair_.assign(static_cast<std::size_t>(std::max(0, m_.L - 1)), 0.0);
    for (int l = 0; l + 1 < m_.L; ++l) pair_[static_cast<std::size_t>(l)] = pair_cost(m_, x_, l);
  }
  const Labels& labels() const { return x_; }
  double total() const {
    double t = 0;
    for (double c : pair_) t += c;
    return t;
  }

  // Re-places layer l optimally given its neighbours (only the left one if !use_right, only
  // the right one if !use_left). Returns true if the objective decreased.
  bool block_step(int l, bool use_left = true, bool use_right = true) {
    const int E = m_.E, G = m_.G, P = m_.P;
    use_left = use_left && l > 0;
    use_right = use_right && l + 1 < m_.L;
    std::fill(mass_.begin(), mass_.end(), 0.0);
    if (use_left) {
      const PairEdges& p = m_.pairs[static_cast<std::size_t>(l) - 1];
      const int* prev = x_.data() + static_cast<std::size_t>(l - 1) * E;
      for (int j = 0; j < E; ++j) {
        double* row = mass_.data() + static_cast<std::size_t>(j) * G;
        for (int k = p.in_begin[static_cast<std::size_t>(j)];
             k < p.in_begin[static_cast<std::size_t>(j) + 1]; ++k) {
          row[prev[p.in[static_cast<std::size_t>(k)].other]] += p.in[static_cast<std::size_t>(k)].w;
        }
      }
    }
    if (use_right) {
      const PairEdges& p = m_.pairs[static_cast<std::size_t>(l)];
      const int* next = x_.data() + static_cast<std::size_t>(l + 1) * E;
      for (int i = 0; i < E; ++i) {
        double* row = mass_.data() + static_cast<std::size_t>(i) * G;
        for (int k = p.out_begin[static_cast<std::size_t>(i)];
             k < p.out_begin[static_cast<std::size_t>(i) + 1]; ++k) {
          row[next[p.out[static_cast<std::size_t>(k)].other]] +=
              p.out[static_cast<std::size_t>(k)].w;
        }
      }
    }
    // cost(e, g) = the hops to g from the GPUs of mass_e: c2 * total_e - (c2 - c1) *
    // node_mass_e(node of g) - c1 * mass_e(g) (HopTable::sum_of_hops_to).
    // A transportation problem: column g takes min_per_gpu experts; when the balance is
    // relaxed, one more column takes the remaining E - G * min experts, each at its
    // cheapest GPU (any GPU may exceed the minimum).
    const int free = E - m_.min_per_gpu * G;
    const int cols = G + (free > 0 ? 1 : 0);
    cost_.resize(static_cast<std::size_t>(E) * cols);
    std::vector<int>& best_gpu = best_gpu_;
    best_gpu.assign(static_cast<std::size_t>(E), 0);
    std::vector<double> node(static_cast<std::size_t>(G / P));
    for (int e = 0; e < E; ++e) {
      const double* mass = mass_.data() + static_cast<std::size_t>(e) * G;
      double total = 0;
      std::fill(node.begin(), node.end(), 0.0);
      for (int g = 0; g < G; ++g) {
        total += mass[g];
        node[static_cast<std::size_t>(g / P)] += mass[g];
      }
      double* out = cost_.data() + static_cast<std::size_t>(e) * cols;
      double cheapest = std::numeric_limits<double>::infinity();
      for (int g = 0; g < G; ++g) {
        out[g] = m_.hops.sum_of_hops_to(total, node[static_cast<std::size_t>(g / P)], mass[g]);
        if (out[g] < cheapest) {
          cheapest = out[g];
          best_gpu[static_cast<std::size_t>(e)] = g;
        }
      }
      if (free > 0) out[G] = cheapest;
    }
    capacity_.assign(static_cast<std::size_t>(cols), m_.min_per_gpu);
    if (free > 0) capacity_[static_cast<std::size_t>(G)] = free;
    const double before = (use_left ? pair_[static_cast<std::size_t>(l) - 1] : 0.0) +
                          (use_right ? pair_[static_cast<std::size_t>(l)] : 0.0);
    Assignment a = min_cost_transport(E, cols, cost_, capacity_);
    if (a.cost >= before - 1e-9 * std::max(1.0, before)) return false;
    int* row = x_.data() + static_cast<std::size_t>(l) * E;
    for (int e = 0; e < E; ++e) {
      const int c = a.column_of_row[static_cast<std::size_t>(e)];
      row[e] = c < G ? c : best_gpu[static_cast<std::size_t>(e)];
    }
    if (l > 0) pair_[static_cast<std::size_t>(l) - 1] = pair_cost(m_, x_, l - 1);
    if (l + 1 < m_.L) pair_[static_cast<std::size_t>(l)] = pair_cost(m_, x_, l);
    return true;
  }

  // Relabels layers l + 1 .. L - 1 by the automorphism that best aligns them with layer l.
  bool realign(int l) {
    const int E = m_.E, G = m_.G;
    std::vector<double> flow(static_cast<std::size_t>(G) * G, 0.0);
    const PairEdges& p = m_.pairs[static_cast<std::size_t>(l)];
    const int* from = x_.data() + static_cast<std::size_t>(l) * E;
    const int* to = from + E;
    for (int i = 0; i < E; ++i) {
      for (int k = p.out_begin[static_cast<std::size_t>(i)];
           k < p.out_begin[static_cast<std::size_t>(i) + 1]; ++k) {
        const Edge& e = p.out[static_cast<std::size_t>(k)];
        flow[static_cast<std::size_t>(from[i]) * G + to[e.other]] += e.w;
      }
    }
    GroupLayout layout{G / m_.P, m_.P, m_.c1, m_.c2};
    Alignment a = align_groups(flow, layout);
    const double cost = m_.c2 * p.total - a.saved;
    if (cost >= pair_[static_cast<std::size_t>(l)] - 1e-9 * std::max(1.0, cost)) return false;
    for (std::size_t k = static_cast<std::size_t>(l + 1) * E; k < x_.size(); ++k) {
      x_[k] = a.gpu_of_group[static_cast<std::size_t>(x_[k])];
    }
    pair_[static_cast<std::size_t>(l)] = pair_cost(m_, x_, l);
    return true;
  }

  // Two-GPU re-split: over all layers at once, re-decide which of the experts now on GPUs g
  // and h go to g and which to h (keeping each GPU's count per layer), exactly, by dynamic
  // programming over the splits of each layer; everything else stays. The cost splits into
  // per-layer terms (edges to experts on other GPUs, fixed) and pair terms (edges between
  // the two GPUs' experts of consecutive layers, hop d(g, h) when split apart). This re-pairs
  // whole chains of experts across layers, which single-layer steps cannot. Marks the
  // changed layers in `changed` and returns true if the objective decreased.
  bool resplit(int g, int h, std::vector<char>& changed) {
    if (g == h) return false;
    const int L = m_.L, E = m_.E;
    const double dgh = m_.hop(g, h);
    std::vector<std::vector<int>> members(static_cast<std::size_t>(L));
    std::vector<std::vector<std::uint32_t>> states(static_cast<std::size_t>(L));
    std::vector<std::uint32_t> now(static_cast<std::size_t>(L), 0);
    std::vector<int> pos(static_cast<std::size_t>(L) * E, -1);
    for (int l = 0; l < L; ++l) {
      auto& mem = members[static_cast<std::size_t>(l)];
      int on_g = 0;
      for (int e = 0; e < E; ++e) {
        const int x = x_[static_cast<std::size_t>(l) * E + e];
        if (x != g && x != h) continue;
        pos[static_cast<std::size_t>(l) * E + e] = static_cast<int>(mem.size());
        if (x == g) {
          now[static_cast<std::size_t>(l)] |= 1u << mem.size();
          ++on_g;
        }
        mem.push_back(e);
      }
      if (binomial(static_cast<int>(mem.size()), on_g) > kMaxSplitStates) return false;
      for (std::uint32_t mask = 0; mask < (1u << mem.size()); ++mask) {
        if (__builtin_popcount(mask) == on_g) states[static_cast<std::size_t>(l)].push_back(mask);
      }
    }
    // lin[l][a]: cost of member a's edges to experts off g and h, if on g ([0]) or h ([1]).
    std::vector<std::vector<std::array<double, 2>>> lin(static_cast<std::size_t>(L));
    for (int l = 0; l < L; ++l) {
      auto& mem = members[static_cast<std::size_t>(l)];
      lin[static_cast<std::size_t>(l)].assign(mem.size(), {0.0, 0.0});
      for (std::size_t a = 0; a < mem.size(); ++a) {
        const int e = mem[a];
        auto add = [&](int other_layer, int other, double w) {
          if (pos[static_cast<std::size_t>(other_layer) * E + other] >= 0) return;
          const int x = x_[static_cast<std::size_t>(other_layer) * E + other];
          lin[static_cast<std::size_t>(l)][a][0] += w * m_.hop(x, g);
          lin[static_cast<std::size_t>(l)][a][1] += w * m_.hop(x, h);
        };
        if (l > 0) {
          const PairEdges& p = m_.pairs[static_cast<std::size_t>(l) - 1];
          for (int k = p.in_begin[static_cast<std::size_t>(e)];
               k < p.in_begin[static_cast<std::size_t>(e) + 1]; ++k)
            add(l - 1, p.in[static_cast<std::size_t>(k)].other,
                p.in[static_cast<std::size_t>(k)].w);
        }
        if (l + 1 < L) {
          const PairEdges& p = m_.pairs[static_cast<std::size_t>(l)];
          for (int k = p.out_begin[static_cast<std::size_t>(e)];
               k < p.out_begin[static_cast<std::size_t>(e) + 1]; ++k)
            add(l + 1, p.out[static_cast<std::size_t>(k)].other,
                p.out[static_cast<std::size_t>(k)].w);
        }
      }
    }
    auto layer_cost = [&](int l, std::uint32_t mask) {
      double c = 0;
      const auto& li = lin[static_cast<std::size_t>(l)];
      for (std::size_t a = 0; a < li.size(); ++a) c += li[a][(mask >> a) & 1u ? 0 : 1];
      return c;
    };
    // Best total over layers 0..l for each state of layer l; from[l][t] the argmin state.
    std::vector<double> best, next;
    std::vector<std::vector<int>> from(static_cast<std::size_t>(L));
    for (std::uint32_t mask : states[0]) best.push_back(layer_cost(0, mask));
    double current = layer_cost(0, now[0]);
    for (int l = 0; l + 1 < L; ++l) {
      const auto& a_mem = members[static_cast<std::size_t>(l)];
      const auto& b_mem = members[static_cast<std::size_t>(l) + 1];
      // w[a][b] between members of consecutive layers.
      std::vector<double> w(a_mem.size() * b_mem.size(), 0.0);
      const PairEdges& p = m_.pairs[static_cast<std::size_t>(l)];
      for (std::size_t a = 0; a < a_mem.size(); ++a) {
        for (int k = p.out_begin[static_cast<std::size_t>(a_mem[a])];
             k < p.out_begin[static_cast<std::size_t>(a_mem[a]) + 1]; ++k) {
          const int b =
              pos[static_cast<std::size_t>(l + 1) * E + p.out[static_cast<std::size_t>(k)].other];
          if (b >= 0)
            w[a * b_mem.size() + static_cast<std::size_t>(b)] +=
                p.out[static_cast<std::size_t>(k)].w;
        }
      }
      current += dgh * cross_flow(w, a_mem.size(), b_mem.size(), now[static_cast<std::size_t>(l)],
                                  now[static_cast<std::size_t>(l) + 1]) +
                 layer_cost(l + 1, now[static_cast<std::size_t>(l) + 1]);
      const auto& sa = states[static_cast<std::size_t>(l)];
      const auto& sb = states[static_cast<std::size_t>(l) + 1];
      // For each state u of layer l: to_g[b] (to_h[b]) = flow from u's g-side (h-side) to
      // member b; a split (u, t) then pays d(g, h) * (sum over t's h-side of to_g + sum over
      // t's g-side of to_h).
      const std::size_t nb = b_mem.size();
      // Members on the g side of each state t of layer l + 1.
      std::vector<std::vector<int>> g_side(sb.size());
      for (std::size_t t = 0; t < sb.size(); ++t) {
        for (std::size_t b = 0; b < nb; ++b) {
          if ((sb[t] >> b) & 1u) g_side[t].push_back(static_cast<int>(b));
        }
      }
      std::vector<double> to_g(nb), diff(nb);
      next.assign(sb.size(), std::numeric_limits<double>::infinity());
      from[static_cast<std::size_t>(l) + 1].assign(sb.size(), 0);
      for (std::size_t u = 0; u < sa.size(); ++u) {
        // Cut of (u, t) = sum over b of to_g[b] + sum over t's g side of (to_h[b] - to_g[b]).
        std::fill(to_g.begin(), to_g.end(), 0.0);
        std::fill(diff.begin(), diff.end(), 0.0);
        for (std::size_t a = 0; a < a_mem.size(); ++a) {
          const bool on_g = (sa[u] >> a) & 1u;
          for (std::size_t b = 0; b < nb; ++b) {
            const double f = w[a * nb + b];
            if (on_g) {
              to_g[b] += f;
              diff[b] -= f;
            } else {
              diff[b] += f;
            }
          }
        }
        double base = 0;
        for (double f : to_g) base += f;
        for (std::size_t t = 0; t < sb.size(); ++t) {
          double c = base;
          for (int b : g_side[t]) c += diff[static_cast<std::size_t>(b)];
          c = best[u] + dgh * c;
          if (c < next[t]) {
            next[t] = c;
            from[static_cast<std::size_t>(l) + 1][t] = static_cast<int>(u);
          }
        }
      }
      for (std::size_t t = 0; t < sb.size(); ++t) next[t] += layer_cost(l + 1, sb[t]);
      best.swap(next);
    }
    const auto it = std::min_element(best.begin(), best.end());
    if (*it >= current - 1e-9 * std::max(1.0, current)) return false;
    int t = static_cast<int>(it - best.begin());
    for (int l = L - 1; l >= 0; --l) {
      const std::uint32_t mask = states[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
      if (mask != now[static_cast<std::size_t>(l)]) changed[static_cast<std::size_t>(l)] = 1;
      const auto& mem = members[static_cast<std::size_t>(l)];
      for (std::size_t a = 0; a < mem.size(); ++a)
        x_[static_cast<std::size_t>(l) * E + mem[a]] = (mask >> a) & 1u ? g : h;
      if (l > 0) t = from[static_cast<std::size_t>(l)][static_cast<std::size_t>(t)];
    }
    for (int l = 0; l + 1 < L; ++l) pair_[static_cast<std::size_t>(l)] = pair_cost(m_, x_, l);
    return true;
  }

  // Block steps over a worklist of layers, then re-alignment of the pairs next to a changed
  // layer, until neither gains. `dirty` flags the layers to start from; a pair whose layers
  // did not change since it was last aligned cannot gain from re-alignment.
  void descend(std::vector<char> dirty, const Clock::time_point deadline) {
    std::vector<char> pair_dirty(static_cast<std::size_t>(std::max(0, m_.L - 1)), 0);
    for (int l = 0; l < m_.L; ++l) {
      if (!dirty[static_cast<std::size_t>(l)]) continue;
      if (l > 0) pair_dirty[static_cast<std::size_t>(l) - 1] = 1;
      if (l + 1 < m_.L) pair_dirty[static_cast<std::size_t>(l)] = 1;
    }
    while (true) {
      bool any = true;
      while (any) {
        any = false;
        for (int l = 0; l < m_.L; ++l) {
          if (!dirty[static_cast<std::size_t>(l)]) continue;
          dirty[static_cast<std::size_t>(l)] = 0;
          if (Clock::now() > deadline) return;
          if (block_step(l)) {
            any = true;
            if (l > 0)
              dirty[static_cast<std::size_t>(l) - 1] = pair_dirty[static_cast<std::size_t>(l) - 1] =
                  1;
            if (l + 1 < m_.L)
              dirty[static_cast<std::size_t>(l) + 1] = pair_dirty[static_cast<std::size_t>(l)] = 1;
          }
        }
        if (Clock::now() > deadline) return;
      }
      bool realigned = false;
      for (int l = 0; l + 1 < m_.L; ++l) {
        if (!pair_dirty[static_cast<std::size_t>(l)]) continue;
        if (Clock::now() > deadline) return;
        pair_dirty[static_cast<std::size_t>(l)] = 0;
        if (realign(l)) {
          realigned = true;
          dirty[static_cast<std::size_t>(l)] = dirty[static_cast<std::size_t>(l) + 1] = 1;
        }
      }
      if (!realigned) return;
    }
  }

  // Two-GPU re-splits of the given GPU pairs, then one descent from every changed layer;
  // with `pairs` empty, every pair, repeated until no re-split gains.
  void polish(const std::vector<std::pair<int, int>>& pairs, const Clock::time_point deadline) {
    std::vector<std::pair<int, int>> all = pairs;
    const bool exhaustive = all.empty();
    if (exhaustive) {
      for (int g = 0; g < m_.G; ++g) {
        for (int h = g + 1; h < m_.G; ++h) all.emplace_back(g, h);
      }
    }
    bool gained = true;
    while (gained && Clock::now() <= deadline) {
      gained = false;
      std::vector<char> changed(static_cast<std::size_t>(m_.L), 0);
      for (auto [g, h] : all) {
        if (Clock::now() > deadline) break;
        gained = resplit(g, h, changed) || gained;
      }
      if (!gained) return;
      std::vector<char> dirty(static_cast<std::size_t>(m_.L), 0);
      for (int l = 0; l < m_.L; ++l) {
        if (!changed[static_cast<std::size_t>(l)]) continue;
        dirty[static_cast<std::size_t>(l)] = 1;
        if (l > 0) dirty[static_cast<std::size_t>(l) - 1] = 1;
        if (l + 1 < m_.L) dirty[static_cast<std::size_t>(l) + 1] = 1;
      }
      descend(dirty, deadline);
      if (!exhaustive) return;
    }
  }

 private:
  const Model& m_;
  Labels x_;
  std::vector<double> pair_;  // [L - 1] current pair costs
  std::vector<double> mass_;  // [E, G] scratch
  std::vector<double> cost_;  // [E, G (+1)] scratch
  std::vector<int> best_gpu_;
  std::vector<int> capacity_;
};

using Random = SplitMix64;

// A balanced layer: min_per_gpu experts on every GPU, the rest on random GPUs, shuffled.
void random_layer(const Model& m, Labels& x, int l, Random& rng) {
  std::vector<int> row;
  for (int g = 0; g < m.G; ++g) row.insert(row.end(), static_cast<std::size_t>(m.min_per_gpu), g);
  while (static_cast<int>(row.size()) < m.E) row.push_back(rng.below(m.G));
  for (int i = m.E - 1; i > 0; --i)
    std::swap(row[static_cast<std::size_t>(i)], row[static_cast<std::size_t>(rng.below(i + 1))]);
  std::copy(row.begin(), row.end(), x.begin() + static_cast<std::ptrdiff_t>(l) * m.E);
}

Labels random_labels(const Model& m, Random& rng) {
  Labels x(static_cast<std::size_t>(m.L) * m.E);
  for (int l = 0; l < m.L; ++l) random_layer(m, x, l, rng);
  return x;
}

// A random relabelling of GPUs that preserves the topology: nodes permuted, and GPUs permuted
// within each node.
std::vector<int> random_automorphism(const Model& m, Random& rng) {
  const int N = m.G / m.P;
  std::vector<int> nodes(static_cast<std::size_t>(N));
  std::iota(nodes.begin(), nodes.end(), 0);
  for (int i = N - 1; i > 0; --i)
    std::swap(nodes[static_cast<std::size_t>(i)],
              nodes[static_cast<std::size_t>(rng.below(i + 1))]);
  std::vector<int> map(static_cast<std::size_t>(m.G));
  std::vector<int> local(static_cast<std::size_t>(m.P));
  for (int n = 0; n < N; ++n) {
    std::iota(local.begin(), local.end(), 0);
    for (int i = m.P - 1; i > 0; --i)
      std::swap(local[static_cast<std::size_t>(i)],
                local[static_cast<std::size_t>(rng.below(i + 1))]);
    for (int p = 0; p < m.P; ++p)
      map[static_cast<std::size_t>(n * m.P + p)] =
          nodes[static_cast<std::size_t>(n)] * m.P + local[static_cast<std::size_t>(p)];
  }
  return map;
}

// GPU pairs for two-GPU re-splits: every pair when GPUs are few and splits cheap (at most 3
// experts per GPU), else a random sample; none when the splits are too many to enumerate.
std::vector<std::pair<int, int>> resplit_pairs(const Model& m, Random& rng) {
  constexpr int kSampled = 4;
  std::vector<std::pair<int, int>> pairs;
  const int per_gpu = m.E / m.G;
  if (binomial(2 * per_gpu, per_gpu) > kMaxSplitStates) return {{0, 0}};  // (0, 0): no-op
  if (m.G <= 16 && per_gpu <= 3) return pairs;                            // empty: every pair
  while (static_cast<int>(pairs.size()) < kSampled) {
    const int g = rng.below(m.G);
    const int h = rng.below(m.G - 1);
    pairs.emplace_back(g, h < g ? h : h + 1);
  }
  return pairs;
}

struct StartResult {
  double cost = std::numeric_limits<double>::infinity();
  Labels labels;
  long iterations = 0;
};

// Runs `starts` independent starts over `threads` workers; start s gets its own generator.
// Starts not begun by the deadline are skipped (start 0 always runs), so the answer is the best
// of the starts run so far when the limit strikes.
template <class Run>
StartResult best_of_starts(int starts, int threads, std::uint64_t seed, Clock::time_point deadline,
                           std::atomic<bool>& timed_out, const Run& run) {
  std::vector<StartResult> results(static_cast<std::size_t>(starts));
  std::atomic<int> next{0};
  auto worker = [&] {
    for (int s = next++; s < starts; s = next++) {
      if (s > 0 && Clock::now() > deadline) {
        timed_out = true;
        continue;
      }
      Random rng(seed * 0x9e3779b97f4a7c15ULL +
                 static_cast<std::uint64_t>(s) * 0xd1b54a32d192ed03ULL + 1);
      results[static_cast<std::size_t>(s)] = run(s, rng);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  StartResult best;
  for (auto& r : results) {
    if (r.cost < best.cost) best = std::move(r);
  }
  return best;
}

int thread_count(const SolveOptions& o, int starts) {
  int t = o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, std::min(t, starts));
}

Clock::time_point deadline_of(const SolveOptions& o) {
  // Beyond a billion seconds (31 years) the limit is no limit; the cast would overflow.
  return o.time_limit > 0 && o.time_limit < 1e9
             ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(o.time_limit))
             : Clock::time_point::max();
}

SolveResult finish(const Model& m, const StartResult& best, Method method, std::string detail) {
  SolveResult r(Placement(m.L, m.E, m.G, best.labels));
  r.method = method;
  r.objective = best.cost / m.tokens;
  r.detail = std::move(detail);
  return r;
}

}  // namespace

SolveResult solve_bcd(const Instance& in, const SolveOptions& options) {
  const Model m(in);
  const int starts = std::max(1, options.starts);
  const auto deadline = deadline_of(options);
  std::atomic<bool> timed_out{false};
  StartResult best = best_of_starts(starts, thread_count(options, starts), options.seed, deadline,
                                    timed_out, [&](int, Random& rng) {
                                      Search s(m);
                                      s.load(random_labels(m, rng));
                                      StartResult r;
                                      bool improved = true;
                                      while (improved) {
                                        improved = false;
                                        for (int l = 0; l < m.L; ++l)
                                          improved = s.block_step(l) || improved;
                                        ++r.iterations;
                                        if (Clock::now() > deadline) {
                                          timed_out = true;
                                          break;
                                        }
                                      }
                                      r.cost = s.total();
                                      r.labels = s.labels();
                                      return r;
                                    });
  char buf[128];
  std::snprintf(buf, sizeof buf, "block-coordinate descent, best of %d random starts%s", starts,
                timed_out ? " (stopped at the time limit)" : "");
  SolveResult r = finish(m, best, Method::kBcd, buf);
  if (timed_out) r.stop = StopReason::kTimeLimit;
  return r;
}

SolveResult solve_fast(const Instance& in, const SolveOptions& options) {
  const Model m(in);
  const int starts = std::max(1, options.starts);
  const auto deadline = deadline_of(options);
  // Perturbations without improvement before a start ends: more where rounds are cheap. A
  // block step costs about E^2 * G (the capacitated assignment) and a descent touches a
  // share of the L layers.
  const double step_work = static_cast<double>(m.E) * m.E * m.G;
  const int patience = std::clamp(static_cast<int>(5e7 / (step_work * m.L)), 10, 200);
  const int max_rounds = 10 * patience;
  std::atomic<bool> timed_out{false};
  StartResult best = best_of_starts(
      starts, thread_count(options, starts), options.seed, deadline, timed_out,
      [&](int start, Random& rng) {
        Search s(m);
        Labels x(static_cast<std::size_t>(m.L) * m.E);
        if (start == 0 && options.initial != nullptr) {
          x = options.initial->gpu_of();
          s.load(x);
        } else {
          // Greedy chain: a random layer `pivot`, then each layer outwards follows its placed
          // neighbour (one-sided block step).
          x = random_labels(m, rng);
          s.load(x);
          const int pivot = start == 0 ? 0 : rng.below(m.L);
          for (int l = pivot + 1; l < m.L && Clock::now() <= deadline; ++l)
            s.block_step(l, true, false);
          for (int l = pivot - 1; l >= 0 && Clock::now() <= deadline; --l)
            s.block_step(l, false, true);
        }
        s.descend(std::vector<char>(static_cast<std::size_t>(m.L), 1), deadline);
        s.polish(resplit_pairs(m, rng), deadline);
        if (Clock::now() > deadline) timed_out = true;
        StartResult r;
        r.cost = s.total();
        r.labels = s.labels();
        // The walk continues from `current`, which may move sideways (equal cost) to cross
        // plateaus; `r` keeps the best seen.
        Labels current = r.labels;
        double current_cost = r.cost;
        int since_best = 0;
        for (int round = 0; round < max_rounds && since_best < patience; ++round) {
          if (Clock::now() > deadline) {
            timed_out = true;
            break;
          }
          // Kick, alternating between two kinds: heavy random swaps in a window of up to 3
          // layers, or a random automorphism of the layers after a random pair (the descent
          // first adapts the layers around that pair to it before any re-alignment).
          Labels y = current;
          std::vector<char> dirty(static_cast<std::size_t>(m.L), 0);
          if (round % 2 == 0 || m.L == 1) {
            const int width = 1 + rng.below(std::min(3, m.L));
            const int first = rng.below(m.L - width + 1);
            for (int l = first; l < first + width; ++l) {
              const int swaps = 1 + rng.below(std::clamp(m.E / 2, 1, 16));
              int* row = y.data() + static_cast<std::size_t>(l) * m.E;
              for (int k = 0; k < swaps; ++k) {
                const int a = rng.below(m.E);
                const int b = rng.below(m.E);
                std::swap(row[a], row[b]);
              }
              dirty[static_cast<std::size_t>(l)] = 1;
              if (l > 0) dirty[static_cast<std::size_t>(l) - 1] = 1;
              if (l + 1 < m.L) dirty[static_cast<std::size_t>(l) + 1] = 1;
            }
          } else {
            const int l = rng.below(m.L - 1);
            const std::vector<int> relabel = random_automorphism(m, rng);
            for (std::size_t k = static_cast<std::size_t>(l + 1) * m.E; k < y.size(); ++k) {
              y[k] = relabel[static_cast<std::size_t>(y[k])];
            }
            dirty[static_cast<std::size_t>(l)] = dirty[static_cast<std::size_t>(l) + 1] = 1;
          }
          s.load(y);
          s.descend(dirty, deadline);
          if (round % 3 == 2) s.polish(resplit_pairs(m, rng), deadline);
          ++r.iterations;
          const double cost = s.total();
          const double eps = 1e-9 * std::max(1.0, r.cost);
          if (cost <= current_cost + eps) {
            current = s.labels();
            current_cost = cost;
          }
          if (cost < r.cost - eps) {
            r.cost = cost;
            r.labels = s.labels();
            since_best = 0;
          } else {
            ++since_best;
          }
        }
        return r;
      });
  char buf[200];
  std::snprintf(buf, sizeof buf, "local search: %d starts, best after %ld perturbation rounds%s",
                starts, best.iterations, timed_out ? " (stopped at the time limit)" : "");
  SolveResult r = finish(m, best, Method::kFast, buf);
  if (timed_out) r.stop = StopReason::kTimeLimit;
  return r;
}

}  // namespace exflow::solvers
