// Placement solvers for the context-coherent objective (DESIGN.md sections 3 and 4).
//
// The objective is a weighted cut of the layered affinity graph: for the transition counts
// w_l(i, j) of an AffinityGraph and a placement gpu(l, e),
//   objective = sum_l sum_ij w_l(i, j) * d(gpu(l, i), gpu(l + 1, j)) / tokens,
// which equals the evaluator's `cost` for a top-1 trace (for top-k traces the pair counts
// make it a surrogate; the evaluator remains the judge). Every layer puts exactly E/G of its
// experts on each GPU (hard balance), or at least `min_experts_per_gpu` (relaxed, like the
// original tool's hard_limit).
//
// Methods:
//   exact    proven optimum by dynamic programming over layer groupings with exact alignment
//            (src/solve/exact.cpp); refuses instances whose grouping space is too large.
//   ilp      the aggregated-graph integer program solved by COIN-OR CBC (src/solve/ilp.cpp).
//   fast     multi-start local search: block-coordinate descent, exact re-alignment of layer
//            suffixes, and perturbation (src/solve/local_search.cpp).
//   bcd      plain block-coordinate descent, best of `starts` random starts (the baseline
//            `fast` is measured against).
//   vanilla  the contiguous placement.
//   auto     exact where it applies, else fast.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "exflow/placement.hpp"

namespace exflow {

class AffinityGraph;
class Topology;
class Trace;

enum class Method { kAuto, kExact, kIlp, kFast, kBcd, kVanilla };

const char* to_string(Method method);
// Throws UsageError listing the valid names.
Method parse_method(const std::string& name);

struct SolveOptions {
  Method method = Method::kAuto;
  double time_limit = 0;               // seconds for the whole solve; 0 = the method's default
  std::uint64_t seed = 1;              // fast, bcd: all randomness derives from it
  int threads = 0;                     // 0 = hardware concurrency
  int starts = 8;                      // fast, bcd: independent starts
  int min_experts_per_gpu = -1;        // -1: exactly E/G per GPU per layer; else a lower limit
  const Placement* initial = nullptr;  // fast, ilp: a placement to start from
  bool bipart = false;  // recursive bisection of the GPU set (the original tool's "bipart")
  std::function<void(const std::string&)> log;  // progress lines for humans, may be empty
};

struct SolveResult {
  explicit SolveResult(Placement p) : placement(std::move(p)) {}

  Placement placement;
  Method method = Method::kVanilla;   // the method that produced it (auto resolved)
  bool optimal = false;               // proven optimal for the objective above
  double objective = 0;               // per token, on the graph the solver saw
  std::optional<double> lower_bound;  // per token; a valid bound on the objective
  double seconds = 0;
  std::string detail;              // e.g. "CBC: stopped at the time limit"
  std::vector<std::string> steps;  // bipart / incremental: one line per step
};

// Solves on the affinity graph. Throws UsageError for inconsistent options (E not divisible
// by G for hard balance, a minimum that cannot be met, exact on an instance it cannot prove).
SolveResult solve(const AffinityGraph& graph, const Topology& topology,
                  const SolveOptions& options);

// The original tool's incremental strategy: solve on the first `step` tokens, then on
// 2 * step, ... each time starting from the previous answer, until the placement is steady
// (the previous placement is already as good on the longer prefix) or the trace is used up.
// `tokens_used` receives the prefix length of the answer.
SolveResult solve_incremental(const Trace& trace, const Topology& topology,
                              const SolveOptions& options, std::int64_t step,
                              std::int64_t* tokens_used, int threads = 0);

// The objective above for any placement (per token).
double graph_objective(const AffinityGraph& graph, const Placement& placement,
                       const Topology& topology);

// A lower bound on the objective of every placement that satisfies the balance
// (min_experts_per_gpu as in SolveOptions), cheap to compute.
double objective_lower_bound(const AffinityGraph& graph, const Topology& topology,
                             int min_experts_per_gpu = -1);

}  // namespace exflow
