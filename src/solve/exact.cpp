// exact: a proven optimum by dynamic programming over layer groupings.
//
// A grouping of a layer splits its experts into N unlabelled node blocks of E/N experts, each
// split into P unlabelled GPU blocks of E/G experts. Relabelling GPUs by a topology
// automorphism in all layers after l changes only the cost of pair (l, l + 1)
// (solve/alignment.hpp), so the cost of a sequence of groupings is the sum over pairs of the
// best alignment of the two groupings, and the optimum over all placements is a shortest path
// through the layers with one state per grouping:
//   best[0][s] = 0,   best[l + 1][t] = min_s best[l][s] + pair_cost_l(s, t).
// Labels are then recovered by chaining the optimal alignments from layer 0. The state count
// is E! / ((E/N)!^N N!) * ((E/N)! / ((E/G)!^P P!))^N; the method refuses when (L - 1) times
// its square is too large. One expert per GPU on one node has a single grouping, and the
// method reduces to an independent assignment per layer pair.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <thread>

#include "exflow/error.hpp"
#include "solve/alignment.hpp"
#include "solve/assignment.hpp"
#include "solve/methods.hpp"

namespace exflow::solvers {
namespace {

constexpr double kMaxPairEvaluations = 4e8;
constexpr double kMaxStates = 2e5;

double log_factorial(int n) {
  return std::lgamma(n + 1.0);
}

// log of the number of groupings per layer.
double log_groupings(int E, int N, int P) {
  const int per_node = E / N;
  const int per_gpu = per_node / P;
  double outer = log_factorial(E) - N * log_factorial(per_node) - log_factorial(N);
  double inner = log_factorial(per_node) - P * log_factorial(per_gpu) - log_factorial(P);
  return outer + N * inner;
}

using Mask = std::uint64_t;

// All ways to split `mask` into unlabelled blocks of `size` bits, each block list in canonical
// order (a block always holds the lowest bit not in an earlier block).
void split(Mask mask, int size, std::vector<Mask>& current, std::vector<std::vector<Mask>>& out) {
  if (mask == 0) {
    out.push_back(current);
    return;
  }
  const Mask low = mask & (~mask + 1);
  std::vector<Mask> rest;
  for (Mask m = mask ^ low; m != 0; m &= m - 1) rest.push_back(m & (~m + 1));
  // Choose size - 1 of the remaining bits to join the lowest one.
  std::vector<int> pick(static_cast<std::size_t>(size - 1));
  std::function<void(int, int, Mask)> choose = [&](int from, int depth, Mask block) {
    if (depth == size - 1) {
      current.push_back(block);
      split(mask ^ block, size, current, out);
      current.pop_back();
      return;
    }
    for (int i = from; i < static_cast<int>(rest.size()); ++i)
      choose(i + 1, depth + 1, block | rest[static_cast<std::size_t>(i)]);
  };
  choose(0, 0, low);
}

// Every grouping as G GPU masks, node-major (node block n holds masks n*P .. n*P + P - 1).
std::vector<std::vector<Mask>> enumerate_groupings(int E, int N, int P) {
  const Mask all = E == 64 ? ~Mask{0} : ((Mask{1} << E) - 1);
  std::vector<std::vector<Mask>> node_splits;
  std::vector<Mask> current;
  split(all, E / N, current, node_splits);
  std::vector<std::vector<Mask>> states;
  for (const auto& nodes : node_splits) {
    // Cartesian product of each node block's GPU splits.
    std::vector<std::vector<std::vector<Mask>>> per_node;
    for (Mask node : nodes) {
      std::vector<std::vector<Mask>> s;
      split(node, E / (N * P), current, s);
      per_node.push_back(std::move(s));
    }
    std::vector<std::size_t> index(per_node.size(), 0);
    while (true) {
      std::vector<Mask> state;
      for (std::size_t n = 0; n < per_node.size(); ++n) {
        const auto& gpus = per_node[n][index[n]];
        state.insert(state.end(), gpus.begin(), gpus.end());
      }
      states.push_back(std::move(state));
      std::size_t n = 0;
      while (n < index.size() && ++index[n] == per_node[n].size()) index[n++] = 0;
      if (n == index.size()) break;
    }
  }
  return states;
}

// Tokens of pair l from the experts of mask a (layer l) to those of mask b (layer l + 1).
double mask_flow(const AffinityGraph& g, int l, Mask a, Mask b) {
  double f = 0;
  for (Mask x = a; x != 0; x &= x - 1) {
    const int i = __builtin_ctzll(x);
    for (Mask y = b; y != 0; y &= y - 1)
      f += static_cast<double>(g.transition(l, i, __builtin_ctzll(y)));
  }
  return f;
}

// One expert per GPU on one node: an independent maximum-weight assignment per layer pair.
SolveResult solve_permutations(const Instance& in) {
  const AffinityGraph& g = in.graph;
  const int L = g.layers();
  const int E = g.experts();
  Placement p(L, E, in.gpus());
  for (int e = 0; e < E; ++e) p.set(0, e, e);
  std::vector<double> weight(static_cast<std::size_t>(E) * E);
  for (int l = 0; l + 1 < L; ++l) {
    // weight[i][j]: tokens kept if expert j of layer l + 1 joins expert i's GPU.
    for (int i = 0; i < E; ++i) {
      for (int j = 0; j < E; ++j)
        weight[static_cast<std::size_t>(i) * E + j] = static_cast<double>(g.transition(l, i, j));
    }
    Assignment a = max_weight_assignment(E, E, weight);
    for (int i = 0; i < E; ++i)
      p.set(l + 1, a.column_of_row[static_cast<std::size_t>(i)], p.gpu(l, i));
  }
  SolveResult r(p);
  r.detail = "one expert per GPU: independent assignment per layer pair";
  return r;
}

}  // namespace

std::string exact_refusal(const Instance& in) {
  const Topology& t = in.topology;
  const int E = in.experts();
  if (!in.hard()) {
    return "exact proves only the hard balance (E/G experts per GPU per layer)";
  }
  if (t.nodes() == 1 && E == t.gpus()) return "";
  if (E > 64) {
    return std::to_string(E) +
           " experts per layer are too many to enumerate groupings (at most 64)";
  }
  const double log_states = log_groupings(E, t.nodes(), t.gpus_per_node());
  const double log_work = std::log(std::max(1, in.layers() - 1)) + 2 * log_states;
  if (log_states > std::log(kMaxStates) || log_work > std::log(kMaxPairEvaluations)) {
    char buf[160];
    std::snprintf(
        buf, sizeof buf,
        "%d experts on %d x %d GPUs have %.3g groupings per layer; exact enumerates at "
        "most %.0f",
        E, t.nodes(), t.gpus_per_node(), std::exp(log_states),
        std::min(kMaxStates, std::sqrt(kMaxPairEvaluations / std::max(1, in.layers() - 1))));
    return buf;
  }
  return "";
}

SolveResult solve_exact(const Instance& in, const SolveOptions& options) {
  std::string why = exact_refusal(in);
  if (!why.empty()) throw UsageError("exact: " + why + "; use --method fast or --method ilp");
  const Topology& topo = in.topology;
  const AffinityGraph& g = in.graph;
  const int L = g.layers();
  const int E = g.experts();
  const int G = topo.gpus();
  const int N = topo.nodes();
  const int P = topo.gpus_per_node();
  SolveResult result(Placement(L, E, G));
  result.method = Method::kExact;
  result.optimal = true;
  if (N == 1 && E == G) {
    result = solve_permutations(in);
    result.method = Method::kExact;
    result.optimal = true;
    return result;
  }

  const auto states = enumerate_groupings(E, N, P);
  const std::size_t S = states.size();
  GroupLayout layout{N, P, topo.intra_cost(), topo.inter_cost()};
  // Distinct GPU masks, so that flows are summed once per layer pair.
  std::vector<Mask> masks;
  for (const auto& s : states) masks.insert(masks.end(), s.begin(), s.end());
  std::sort(masks.begin(), masks.end());
  masks.erase(std::unique(masks.begin(), masks.end()), masks.end());
  std::vector<std::vector<int>> state_mask(S);
  for (std::size_t s = 0; s < S; ++s) {
    for (Mask m : states[s]) {
      state_mask[s].push_back(
          static_cast<int>(std::lower_bound(masks.begin(), masks.end(), m) - masks.begin()));
    }
  }
  const std::size_t M = masks.size();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(S, 0.0), next(S);
  std::vector<std::vector<std::uint32_t>> from(static_cast<std::size_t>(L),
                                               std::vector<std::uint32_t>(S, 0));
  std::vector<double> table(M * M);
  const int threads = std::max(
      1, std::min<int>(options.threads > 0 ? options.threads
                                           : static_cast<int>(std::thread::hardware_concurrency()),
                       static_cast<int>(S)));
  for (int l = 0; l + 1 < L; ++l) {
    double total = 0;
    for (int i = 0; i < E; ++i) {
      for (int j = 0; j < E; ++j) total += static_cast<double>(g.transition(l, i, j));
    }
    for (std::size_t a = 0; a < M; ++a) {
      for (std::size_t b = 0; b < M; ++b) table[a * M + b] = mask_flow(g, l, masks[a], masks[b]);
    }
    auto relax = [&](std::size_t t_begin, std::size_t t_end) {
      std::vector<double> flow(static_cast<std::size_t>(G) * G);
      for (std::size_t t = t_begin; t < t_end; ++t) {
        double best_cost = inf;
        std::uint32_t best_from = 0;
        for (std::size_t s = 0; s < S; ++s) {
          if (best[s] >= best_cost) continue;
          for (int a = 0; a < G; ++a) {
            for (int b = 0; b < G; ++b) {
              flow[static_cast<std::size_t>(a) * G + b] =
                  table[static_cast<std::size_t>(state_mask[s][static_cast<std::size_t>(a)]) * M +
                        static_cast<std::size_t>(state_mask[t][static_cast<std::size_t>(b)])];
            }
          }
          const double cost = best[s] + topo.inter_cost() * total - alignment_value(flow, layout);
          if (cost < best_cost) {
            best_cost = cost;
            best_from = static_cast<std::uint32_t>(s);
          }
        }
        next[t] = best_cost;
        from[static_cast<std::size_t>(l) + 1][t] = best_from;
      }
    };
    std::vector<std::thread> pool;
    for (int w = 1; w < threads; ++w)
      pool.emplace_back(relax, S * w / threads, S * (w + 1) / threads);
    relax(0, S / threads);
    for (auto& th : pool) th.join();
    best.swap(next);
  }
  // Backtrack the optimal state sequence.
  std::vector<std::size_t> path(static_cast<std::size_t>(L));
  path[static_cast<std::size_t>(L) - 1] =
      static_cast<std::size_t>(std::min_element(best.begin(), best.end()) - best.begin());
  for (int l = L - 1; l > 0; --l)
    path[static_cast<std::size_t>(l) - 1] =
        from[static_cast<std::size_t>(l)][path[static_cast<std::size_t>(l)]];
  // Labels: layer 0 canonical, later layers by the optimal alignment to the previous layer.
  Placement& p = result.placement;
  std::vector<int> gpu_of_group(static_cast<std::size_t>(G));
  for (int gi = 0; gi < G; ++gi) gpu_of_group[static_cast<std::size_t>(gi)] = gi;
  for (int l = 0; l < L; ++l) {
    const auto& groups = states[path[static_cast<std::size_t>(l)]];
    if (l > 0) {
      // flow[a][b]: from the GPU a of layer l - 1 to group b of layer l.
      std::vector<double> flow(static_cast<std::size_t>(G) * G, 0.0);
      for (int i = 0; i < E; ++i) {
        for (int b = 0; b < G; ++b) {
          for (Mask y = groups[static_cast<std::size_t>(b)]; y != 0; y &= y - 1) {
            flow[static_cast<std::size_t>(p.gpu(l - 1, i)) * G + b] +=
                static_cast<double>(g.transition(l - 1, i, __builtin_ctzll(y)));
          }
        }
      }
      gpu_of_group = align_groups(flow, layout).gpu_of_group;
    }
    for (int b = 0; b < G; ++b) {
      for (Mask y = groups[static_cast<std::size_t>(b)]; y != 0; y &= y - 1)
        p.set(l, __builtin_ctzll(y), gpu_of_group[static_cast<std::size_t>(b)]);
    }
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "dynamic program over %zu groupings per layer", S);
  result.detail = buf;
  return result;
}

}  // namespace exflow::solvers
