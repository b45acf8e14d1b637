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
//   eplb     DeepSeek's EPLB by expert loads alone (include/exflow/eplb.hpp); exflow::plan runs
//            it, solve() refuses it (it needs the topology's nodes and the expert groups).
//   auto     exact where it applies, else fast.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"

namespace exflow {

class AffinityGraph;
class Topology;
class Trace;

// Independent starts of fast and bcd: kDefaultStarts, or kDefaultStartsLarge for top-k traces
// (whose token search refines the graph solver's answer) and for graphs whose block step work
// E^2 G times the layers L exceeds kLargeGraphWork (DeepSeek-V3 on 64 GPUs: 2.4e8), so that
// such a solve returns in seconds.
inline constexpr int kDefaultStarts = 8;
inline constexpr int kDefaultStartsLarge = 2;
inline constexpr double kLargeGraphWork = 1e8;

enum class Method { kAuto, kExact, kIlp, kFast, kBcd, kVanilla, kEplb };

// A limit on every layer's token load: the token-expert assignments the busiest GPU serves
// over the mean over GPUs.
struct LoadLimit {
  enum class Kind {
    kNone,   // no limit (the original tool's objective)
    kAuto,   // on each layer, no worse than the vanilla placement's ratio on that layer
    kRatio,  // at most `ratio` on every layer
  };
  Kind kind = Kind::kNone;
  double ratio = 0;
};

// "none", "auto" or a number >= 1. Throws UsageError otherwise.
LoadLimit parse_load_limit(const std::string& text);
std::string to_string(const LoadLimit& limit);

const char* to_string(Method method);
// Throws UsageError listing the valid names.
Method parse_method(const std::string& name);

struct SolveOptions {
  Method method = Method::kAuto;
  double time_limit = 0;               // seconds for the whole solve; 0 = the method's default
  std::uint64_t seed = 1;              // fast, bcd: all randomness derives from it
  int threads = 0;                     // 0 = hardware concurrency
  int starts = kDefaultStarts;         // fast, bcd: independent starts
  int min_experts_per_gpu = -1;        // -1: exactly E/G per GPU per layer; else a lower limit
  const Placement* initial = nullptr;  // fast, ilp: a placement to start from
  bool bipart = false;  // recursive partitioning of the GPU set (the original tool's "bipart")
  std::function<void(const std::string&)> log;  // progress lines for humans, may be empty

  // Applied by refine() (the graph solvers do not see them):
  LoadLimit max_load;              // per-layer GPU load limit
  int redundant = 0;               // replica slots per GPU per layer
  int redundant_total = 0;         // or in all per layer; E + R divisible by G (not both)
  std::int64_t sample_tokens = 0;  // tokens the token search holds; 0: as many as fit 16M ids
  double refine_time_limit = 0;    // seconds for the token search; 0: until it converges
  Scheme scheme = Scheme::kContextCoherent;  // whose exact cost the token search lowers
  std::int64_t sequence_length = 1;          // the standard schemes' owners
  // Rebalancing: the start placement is what the engine runs now; move at most max_moves slots
  // (-1: any number).
  bool from_previous = false;
  std::int64_t max_moves = -1;
};

// Why a search ended.
enum class StopReason {
  kConverged,   // ran to its end
  kTimeLimit,   // a time limit stopped it; the best found is kept
  kWorkBudget,  // the token search's deterministic work budget stopped it
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
  int layers_over_load_limit = 0;  // refine(): layers the load limit could not be kept on
  StopReason stop = StopReason::kConverged;
  // refine() with from_previous: (slots moved, exact cost per token) after each search step.
  std::vector<std::pair<std::int64_t, double>> moves_trajectory;
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

// Improves `result` (from solve or solve_incremental) for the evaluator's exact cost on the
// trace: top-k homes, the load limit and redundant experts (src/solve/token_search.cpp).
// Runs when the trace is top-k, a load limit is set or replicas are asked for; otherwise
// returns `result` unchanged. The objective becomes the exact cost on the tokens searched (the
// whole trace unless sample_tokens or the memory budget says otherwise); the lower bound is
// kept only where it still holds (top-1, no replicas), `optimal` only if the placement did not
// change. Throws UsageError if the load limit is below what the load balancer reaches.
SolveResult refine(const Trace& trace, const Topology& topology, const SolveOptions& options,
                   SolveResult result);

// Per-layer limits on the busiest GPU's token-expert assignments ([layers]; empty for kNone)
// for `tokens` tokens of a top-k trace, as refine() applies them. kAuto needs the vanilla
// placement's per-layer maximum, `vanilla_max` [layers].
std::vector<std::int64_t> load_limits(const LoadLimit& limit, std::int64_t tokens, int k, int gpus,
                                      const std::vector<std::int64_t>& vanilla_max);

// Load-only placement from per-layer expert loads `loads` [layers, experts] (no affinity):
// each layer balanced on its own, with `redundant_total` replica slots per layer given to the
// hottest experts as DeepSeek's EPLB does (src/solve/load_balance.cpp). G must divide E +
// redundant_total (each GPU then holds (E + R)/G copies).
Placement balance_loads(const std::vector<std::int64_t>& loads, int layers, int experts,
                        const Topology& topology, int redundant_total);

// The redundant slots per layer in all that `redundant` (per GPU) or `redundant_total` asks for
// on G GPUs of E experts. Throws UsageError (naming PlanOptions' fields) for both at once, a
// negative count, E + R not divisible by G, or more copies than E experts can have on G GPUs.
int redundant_slots(int redundant, int redundant_total, int experts, int gpus);

// The objective above for any placement (per token).
double graph_objective(const AffinityGraph& graph, const Placement& placement,
                       const Topology& topology);

// A lower bound on the objective of every placement that satisfies the balance
// (min_experts_per_gpu as in SolveOptions), cheap to compute.
double objective_lower_bound(const AffinityGraph& graph, const Topology& topology,
                             int min_experts_per_gpu = -1);

// A lower bound on the evaluator's context-coherent cost (per token) of every placement of the
// trace without replicas that satisfies the balance, for top-k traces (k = 1 included): the
// GPUs and nodes a token's experts must spread over and the transfers each costs
// (src/solve/bound_topk.cpp). One pass over the trace (threads 0 = hardware concurrency) per
// 256 MiB of pair counts.
double coherent_cost_lower_bound(const Trace& trace, const Topology& topology,
                                 int min_experts_per_gpu = -1, int threads = 0);

}  // namespace exflow
