// The original tool's strategies over any method: recursive partitioning of the GPU set
// ("bipart") and incremental profiling.
//
// Partitioning. With hop costs that only depend on the level at which two GPUs separate, a
// token between experts in different parts of the top split pays that level's cost whatever
// happens below, so each split only has to minimise the tokens it cuts: a k-GPU problem on the
// experts of the group (hard balance: 1/k of them each), then the same on each part with only
// the tokens inside it. Nodes are split first (cut cost inter_cost), then GPUs within a node
// (intra_cost). A group of n nodes (or n GPUs of a node) splits into k parts, k the smallest
// prime factor of n: for powers of two, plain bisection. Every part of every level holds a whole
// number of experts per layer, since E/G is one and each part's GPU count divides G.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <optional>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/methods.hpp"

namespace exflow {
namespace {

// The smallest prime factor of n >= 2.
int smallest_prime_factor(int n) {
  for (int f = 2; f * f <= n; ++f) {
    if (n % f == 0) return f;
  }
  return n;
}

// The graph restricted to, per layer, the experts in `part[l]` (renumbered in order).
AffinityGraph restrict_graph(const AffinityGraph& g, const std::vector<std::vector<int>>& part) {
  const int L = g.layers();
  const int n = static_cast<int>(part[0].size());
  std::vector<std::int64_t> t(static_cast<std::size_t>(std::max(0, L - 1)) * n * n);
  std::vector<std::int64_t> loads(static_cast<std::size_t>(L) * n);
  for (int l = 0; l < L; ++l) {
    for (int a = 0; a < n; ++a) {
      loads[static_cast<std::size_t>(l) * n + a] =
          g.load(l, part[static_cast<std::size_t>(l)][static_cast<std::size_t>(a)]);
      if (l + 1 == L) continue;
      for (int b = 0; b < n; ++b) {
        t[(static_cast<std::size_t>(l) * n + a) * n + b] =
            g.transition(l, part[static_cast<std::size_t>(l)][static_cast<std::size_t>(a)],
                         part[static_cast<std::size_t>(l) + 1][static_cast<std::size_t>(b)]);
      }
    }
  }
  return AffinityGraph(L, n, g.tokens(), std::move(t), std::move(loads));
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The least time limit a step of a strategy gets once the whole limit is spent: its method
// still returns its first answer.
constexpr double kLeastStepSeconds = 1e-3;

// Places the experts part[l] of every layer on GPUs first_gpu .. first_gpu + nodes * P - 1.
// Under a time limit each split may use what the splits before it left (the methods usually end
// on their own budget first), so that the whole partitioning keeps the limit.
void partition(const AffinityGraph& g, const std::vector<std::vector<int>>& part, int nodes, int P,
               int first_gpu, const Topology& topo, const SolveOptions& options,
               Clock::time_point started, Placement& out, std::vector<std::string>& steps) {
  const int L = g.layers();
  if (nodes * P == 1) {
    for (int l = 0; l < L; ++l) {
      for (int e : part[static_cast<std::size_t>(l)]) out.set(l, e, first_gpu);
    }
    return;
  }
  const bool split_nodes = nodes > 1;
  const int parts = smallest_prime_factor(split_nodes ? nodes : P);
  const double cut = split_nodes ? topo.inter_cost() : topo.intra_cost();
  AffinityGraph sub = restrict_graph(g, part);
  SolveOptions o = options;
  o.bipart = false;
  o.initial = nullptr;
  o.min_experts_per_gpu = -1;
  if (options.time_limit > 0) {
    o.time_limit = std::max(kLeastStepSeconds, options.time_limit - seconds_since(started));
  }
  SolveResult r = solve(sub, Topology(1, parts, cut, cut), o);
  const std::string into = parts == 2 ? "" : " in " + std::to_string(parts);
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "split GPUs %d-%d (%s)%s: %s, %zu experts per layer, cut %.6g per token", first_gpu,
                first_gpu + nodes * P - 1, split_nodes ? "nodes" : "GPUs of a node", into.c_str(),
                to_string(r.method), part[0].size(), r.objective);
  steps.emplace_back(buf);
  const int child_nodes = split_nodes ? nodes / parts : 1;
  const int child_p = split_nodes ? P : P / parts;
  for (int k = 0; k < parts; ++k) {
    std::vector<std::vector<int>> child(static_cast<std::size_t>(L));
    for (int l = 0; l < L; ++l) {
      const auto& members = part[static_cast<std::size_t>(l)];
      for (std::size_t a = 0; a < members.size(); ++a) {
        if (r.placement.gpu(l, static_cast<int>(a)) == k)
          child[static_cast<std::size_t>(l)].push_back(members[a]);
      }
    }
    partition(g, child, child_nodes, child_p, first_gpu + k * child_nodes * child_p, topo, options,
              started, out, steps);
  }
}

}  // namespace

namespace solvers {

SolveResult solve_bipart(const AffinityGraph& graph, const Topology& topology,
                         const SolveOptions& options) {
  if (options.min_experts_per_gpu >= 0) {
    throw UsageError("bipart splits experts evenly; it does not take min_experts_per_gpu",
                     {"bipart", "min_experts_per_gpu"});
  }
  topology.experts_per_gpu(graph.experts());
  std::vector<std::vector<int>> all(static_cast<std::size_t>(graph.layers()),
                                    std::vector<int>(static_cast<std::size_t>(graph.experts())));
  for (auto& layer : all) std::iota(layer.begin(), layer.end(), 0);
  SolveResult result(Placement(graph.layers(), graph.experts(), topology.gpus()));
  partition(graph, all, topology.nodes(), topology.gpus_per_node(), 0, topology, options,
            Clock::now(), result.placement, result.steps);
  result.detail = "recursive partitioning, " + std::to_string(result.steps.size()) + " splits";
  return result;
}

}  // namespace solvers

SolveResult solve_incremental(const Trace& trace, const Topology& topology,
                              const SolveOptions& options, std::int64_t step,
                              std::int64_t* tokens_used, int threads) {
  if (step < 1) throw UsageError("incremental needs a positive token count", {"incremental"});
  // The time limit is for all steps together: each gets what is left, and the steps stop when
  // it is spent, with the last step's answer.
  const auto started = Clock::now();
  AffinityGraph::check_counts_size(trace);
  std::optional<Placement> previous;
  std::vector<std::string> steps;
  std::int64_t tokens = std::min(step, trace.tokens());
  // The graph of each prefix: the previous prefix's graph plus that of the tokens added.
  AffinityGraph graph = AffinityGraph::from_trace(trace.prefix(tokens), threads);
  while (true) {
    SolveOptions o = options;
    o.initial = previous ? &*previous : nullptr;
    if (options.time_limit > 0) {
      o.time_limit = std::max(kLeastStepSeconds, options.time_limit - seconds_since(started));
    }
    SolveResult r = solve(graph, topology, o);
    bool steady = false;
    if (previous) {
      const double before = graph_objective(graph, *previous, topology);
      steady = r.placement == *previous || before <= r.objective * (1 + 1e-9);
      if (steady && !(r.placement == *previous)) {
        r.placement = *previous;  // as good on this prefix: keep the earlier answer
        r.objective = before;
      }
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, "%lld tokens: %s objective %.6g%s",
                  static_cast<long long>(tokens), to_string(r.method), r.objective,
                  steady ? " (steady)" : "");
    steps.emplace_back(buf);
    if (options.log) options.log(buf);
    const bool out_of_time = options.time_limit > 0 && seconds_since(started) >= options.time_limit;
    if (steady || tokens == trace.tokens() || out_of_time) {
      if (!steady && tokens < trace.tokens()) {
        r.stop = StopReason::kTimeLimit;
        steps.emplace_back("time limit: stopped at " + std::to_string(tokens) + " tokens");
      }
      r.steps = std::move(steps);
      if (tokens_used != nullptr) *tokens_used = tokens;
      return r;
    }
    previous = r.placement;
    const std::int64_t counted = tokens;
    tokens = std::min(trace.tokens(), tokens + step);
    graph.add(AffinityGraph::from_trace(trace.slice(counted, tokens), threads));
  }
}

}  // namespace exflow
