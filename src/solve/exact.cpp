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
#include <map>
#include <numeric>
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

// The estimate counts the work of one layer pair of the dynamic program below and weighs each
// kind by its cost per operation, measured on a 2-core x86 machine and rounded up (a busy
// machine, a bigger one only runs faster):
//   mask table    M^2 K additions (M = C(E, K) distinct GPU masks of K = E/G experts), streamed
//                 row by row: 2 ns each;
//   item values   I^2 item pairs (I = C(E, E/N) node blocks times their GPU splits), each P^2
//                 table reads at 30 ns (random rows) and P P! permutation terms at 2 ns
//                 (P^3 for the assignment when P > 5);
//   relaxation    S^2 state pairs (S groupings), each N N! value reads (N^3 when N > 5): 10 ns
//                 while the I^2 value table fits 64 MiB, 300 ns (memory latency) beyond;
// plus S G ns of enumeration. 16 experts on 2 GPUs of one node (6435 groupings): 20 s per
// layer pair estimated, 6 to 9 s measured; 16 on 2 x 1: 58 s estimated, 35 s measured; 14 on
// 2 GPUs: 0.57 s for one layer pair, 0.76 s measured; Mixtral's 8 experts on 2 x 4 GPUs: 3 ms
// per layer pair estimated, 0.09 s measured for 32 layers.
double exact_seconds_estimate(const Instance& in) {
  const Topology& t = in.topology;
  const double E = in.experts();
  const double N = t.nodes();
  const double P = t.gpus_per_node();
  const double pairs = std::max(1, in.layers() - 1);
  if (t.nodes() == 1 && in.experts() == t.gpus()) return pairs * E * E * E * 1e-9;
  auto choose = [](int n, int k) {
    return std::exp(log_factorial(n) - log_factorial(k) - log_factorial(n - k));
  };
  auto permutation_terms = [](double n) {
    return n <= 5 ? n * std::exp(log_factorial(static_cast<int>(n))) : n * n * n;
  };
  const int per_node = in.experts() / t.nodes();
  const int per_gpu = per_node / t.gpus_per_node();
  const double S = std::exp(log_groupings(in.experts(), t.nodes(), t.gpus_per_node()));
  const double M = choose(in.experts(), per_gpu);
  const double I =
      choose(in.experts(), per_node) * std::exp(log_groupings(per_node, 1, t.gpus_per_node()));
  const double value_bytes = 8 * I * I;
  const double relax_read = value_bytes <= double(std::int64_t{64} << 20) ? 10e-9 : 300e-9;
  const double per_pair = M * M * per_gpu * 2e-9 +
                          I * I * (P * P * 30e-9 + permutation_terms(P) * 2e-9) +
                          S * S * permutation_terms(N) * relax_read;
  return pairs * per_pair + S * N * P * 1e-9;
}

SolveResult solve_exact(const Instance& in, const SolveOptions& options) {
  std::string why = exact_refusal(in);
  if (!why.empty())
    throw UsageError(
        "exact: " + why + "; use method fast (or method ilp for a CBC bound on smaller models)",
        {"method"});
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
  // A state is N node items; an item is one node's block of P GPU masks. The pair cost of
  // two states is c2 * total - max over node bijections of the sum of item-pair values
  // value[i][j] = (c2 - c1) * flow(node i, node j) + c1 * (best GPU matching of i and j),
  // so item-pair values are computed once per layer pair and states only combine them.
  std::map<std::vector<Mask>, int> item_id;
  std::vector<std::vector<Mask>> items;
  std::vector<std::vector<int>> state_items(S);
  for (std::size_t st = 0; st < S; ++st) {
    for (int n = 0; n < N; ++n) {
      std::vector<Mask> block(states[st].begin() + n * P, states[st].begin() + (n + 1) * P);
      auto [it, inserted] = item_id.emplace(block, static_cast<int>(items.size()));
      if (inserted) items.push_back(block);
      state_items[st].push_back(it->second);
    }
  }
  const std::size_t I = items.size();
  // Distinct GPU masks, so that flows are summed once per layer pair.
  std::vector<Mask> masks;
  for (const auto& item : items) masks.insert(masks.end(), item.begin(), item.end());
  std::sort(masks.begin(), masks.end());
  masks.erase(std::unique(masks.begin(), masks.end()), masks.end());
  const std::size_t M = masks.size();
  std::vector<std::vector<int>> item_masks(I);
  for (std::size_t i = 0; i < I; ++i) {
    for (Mask m : items[i]) {
      item_masks[i].push_back(
          static_cast<int>(std::lower_bound(masks.begin(), masks.end(), m) - masks.begin()));
    }
  }
  std::vector<double> table(M * M);
  std::vector<double> row_flow(static_cast<std::size_t>(E) * M);
  std::vector<std::vector<int>> gpu_perms, node_perms;
  {
    std::vector<int> p(static_cast<std::size_t>(P));
    std::iota(p.begin(), p.end(), 0);
    do gpu_perms.push_back(p);
    while (std::next_permutation(p.begin(), p.end()));
    std::vector<int> q(static_cast<std::size_t>(N));
    std::iota(q.begin(), q.end(), 0);
    if (N <= 5) {
      do node_perms.push_back(q);
      while (std::next_permutation(q.begin(), q.end()));
    }
  }
  std::vector<int> flat_gpu_perms;
  for (const auto& p : gpu_perms) flat_gpu_perms.insert(flat_gpu_perms.end(), p.begin(), p.end());
  const double c1 = topo.intra_cost();
  const double c2 = topo.inter_cost();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(S, 0.0), next(S);
  std::vector<std::vector<std::uint32_t>> from(static_cast<std::size_t>(L),
                                               std::vector<std::uint32_t>(S, 0));
  std::vector<double> value(I * I);
  const int threads = std::max(
      1, std::min<int>(options.threads > 0 ? options.threads
                                           : static_cast<int>(std::thread::hardware_concurrency()),
                       static_cast<int>(S)));
  // Runs body(begin, end) on `threads` contiguous parts of [0, n).
  auto run_split = [threads](std::size_t n, const auto& body) {
    std::vector<std::thread> pool;
    for (int w = 1; w < threads; ++w)
      pool.emplace_back(body, n * w / threads, n * (w + 1) / threads);
    body(0, n / threads);
    for (auto& th : pool) th.join();
  };
  for (int l = 0; l + 1 < L; ++l) {
    double total = 0;
    for (int i = 0; i < E; ++i) {
      for (int j = 0; j < E; ++j) total += static_cast<double>(g.transition(l, i, j));
    }
    // table[a][b]: tokens of the pair from mask a to mask b, as sums of row_flow[i][b] (the
    // tokens from expert i to mask b), one contiguous row of M per expert of a.
    for (int i = 0; i < E; ++i) {
      for (std::size_t b = 0; b < M; ++b) {
        double f = 0;
        for (Mask y = masks[b]; y != 0; y &= y - 1)
          f += static_cast<double>(g.transition(l, i, __builtin_ctzll(y)));
        row_flow[static_cast<std::size_t>(i) * M + b] = f;
      }
    }
    auto mask_flows = [&](std::size_t a_begin, std::size_t a_end) {
      for (std::size_t a = a_begin; a < a_end; ++a) {
        double* out = table.data() + a * M;
        std::fill(out, out + M, 0.0);
        for (Mask x = masks[a]; x != 0; x &= x - 1) {
          const double* row = row_flow.data() + static_cast<std::size_t>(__builtin_ctzll(x)) * M;
          for (std::size_t b = 0; b < M; ++b) out[b] += row[b];
        }
      }
    };
    run_split(M, mask_flows);
    auto item_values = [&](std::size_t i_begin, std::size_t i_end) {
      std::vector<double> gpu_flow(static_cast<std::size_t>(P) * P);
      for (std::size_t i = i_begin; i < i_end; ++i) {
        const int* mi = item_masks[i].data();
        for (std::size_t j = 0; j < I; ++j) {
          const int* mj = item_masks[j].data();
          double node_flow = 0;
          for (int p = 0; p < P; ++p) {
            const double* row = table.data() + static_cast<std::size_t>(mi[p]) * M;
            for (int q = 0; q < P; ++q) {
              const double f = row[mj[q]];
              gpu_flow[static_cast<std::size_t>(p * P + q)] = f;
              node_flow += f;
            }
          }
          double kept = 0;
          if (P <= 5) {
            const int* perm = flat_gpu_perms.data();
            for (std::size_t k = 0; k < gpu_perms.size(); ++k, perm += P) {
              double v = 0;
              for (int p = 0; p < P; ++p) v += gpu_flow[static_cast<std::size_t>(p * P + perm[p])];
              kept = std::max(kept, v);
            }
          } else {
            kept = max_weight_assignment(P, P, gpu_flow).cost;
          }
          value[i * I + j] = (c2 - c1) * node_flow + c1 * kept;
        }
      }
    };
    run_split(I, item_values);
    auto relax = [&](std::size_t t_begin, std::size_t t_end) {
      std::vector<double> node_value(static_cast<std::size_t>(N) * N);
      for (std::size_t t = t_begin; t < t_end; ++t) {
        const auto& ti = state_items[t];
        double best_cost = inf;
        std::uint32_t best_from = 0;
        for (std::size_t st = 0; st < S; ++st) {
          if (best[st] >= best_cost) continue;
          const auto& si = state_items[st];
          double saved = -inf;
          if (!node_perms.empty()) {
            for (const auto& perm : node_perms) {
              double v = 0;
              for (int n = 0; n < N; ++n) {
                v += value[static_cast<std::size_t>(si[static_cast<std::size_t>(n)]) * I +
                           static_cast<std::size_t>(
                               ti[static_cast<std::size_t>(perm[static_cast<std::size_t>(n)])])];
              }
              saved = std::max(saved, v);
            }
          } else {
            for (int a = 0; a < N; ++a) {
              for (int b = 0; b < N; ++b) {
                node_value[static_cast<std::size_t>(a) * N + b] =
                    value[static_cast<std::size_t>(si[static_cast<std::size_t>(a)]) * I +
                          static_cast<std::size_t>(ti[static_cast<std::size_t>(b)])];
              }
            }
            saved = max_weight_assignment(N, N, node_value).cost;
          }
          const double cost = best[st] + c2 * total - saved;
          if (cost < best_cost) {
            best_cost = cost;
            best_from = static_cast<std::uint32_t>(st);
          }
        }
        next[t] = best_cost;
        from[static_cast<std::size_t>(l) + 1][t] = best_from;
      }
    };
    run_split(S, relax);
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
