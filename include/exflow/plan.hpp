// The library's front door: one call from a routing trace (or inter-layer counts, or expert
// loads) and a topology to a placement, its metrics next to vanilla's, a lower bound where one
// holds, and why the search stopped. The CLI (`exflow solve`) and the Python module
// (`exflow.solve`) only format what plan() returns.
//
//   exflow::PlanOptions options;
//   options.redundant = 1;
//   exflow::PlanResult r = exflow::plan(trace, exflow::Topology(1, 8), options);
//   r.status, r.placement, r.metrics->placement.cost, r.metrics->vanilla.cost
//
// The pipeline for a trace: the graph solver (`method`, or the incremental or bisection
// strategy) on the trace's affinity graph, then the token-level search (top-k homes, the load
// limit, replicas; refine() in solve.hpp), then both placements scored by the evaluator under
// both schemes. PlanOptions' fields are listed, with their defaults and checks, in one table
// (plan_option_specs) that the CLI's flags, the Python keywords and docs/cli.md are made from.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"

namespace exflow {

class AffinityGraph;
class Progress;
class Topology;
class Trace;
struct ExpertLoads;

struct PlanOptions {
  Method method = Method::kAuto;
  LoadLimit max_load_ratio{LoadLimit::Kind::kAuto, 0};
  int redundant = 0;               // replica slots per GPU per layer
  int redundant_total = 0;         // replica slots per layer in all (E + R divides over the GPUs)
  double time_limit = 0;           // seconds for the graph solver; 0: the method's default
  double token_time_limit = 0;     // seconds for the token search; 0: until it converges
  std::int64_t sample_tokens = 0;  // tokens the token search holds; 0: as many as fit 16M ids
  std::uint64_t seed = 1;          // all randomness derives from it
  int starts = 0;                  // starts of fast and bcd; 0: default_starts(k)
  int min_experts_per_gpu = -1;    // -1: exactly E/G per GPU per layer
  std::int64_t incremental = 0;    // > 0: solve on growing prefixes of this many tokens
  bool bipart = false;             // recursive partitioning of the GPU set
  int expert_groups = 0;           // method eplb: expert groups (0: none, the global policy)
  std::int64_t seq_len = 1;        // baseline owners: sequences of this many tokens
  // The scheme the token search optimises and the metrics' top-level keys show.
  Scheme scheme = Scheme::kContextCoherent;
  ReplicaChoice replica_choice = ReplicaChoice::kNearest;  // standard schemes only: even
  // Rebalancing (trace input): the placement the engine runs now. The search starts there (no
  // graph solver) and moves at most max_moves expert slots (-1: any number); every copy it does
  // not move stays on its GPU. Not in the options table (a placement, not a value).
  std::optional<Placement> previous;
  std::int64_t max_moves = -1;

  int threads = 0;    // 0: all cores
  bool score = true;  // trace input: fill PlanResult::metrics (two evaluator passes)
  std::function<void(const std::string&)> log;  // progress lines for humans, may be empty
  Progress* progress = nullptr;
};

// Why the answer is what it is, most pressing first.
enum class PlanStatus {
  kOptimal,          // proven optimal for the objective (top-1 cost, no replicas)
  kConverged,        // every search ran to its end
  kTimeLimit,        // a time limit stopped a search; the best found is returned
  kWorkBudget,       // the token search's deterministic work budget stopped it
  kLoadLimitNotMet,  // the load limit is exceeded on some layers (layers_over_load_limit)
};
const char* to_string(PlanStatus status);  // "optimal", "converged", "time limit", ...

// A placement and vanilla, each under both schemes (the metrics `exflow eval` prints).
// The placement and vanilla under one scheme.
struct SchemeMetrics {
  Scheme scheme = Scheme::kContextCoherent;
  Metrics placement;
  Metrics vanilla;
};

struct Comparison {
  Metrics placement;           // context-coherent
  Metrics placement_baseline;  // two all-to-alls from the sequence owner
  Metrics vanilla;
  Metrics vanilla_baseline;
  // Every scheme (context-coherent, baseline, deepep, deepep-ll), so that a reader sees what the
  // placement buys in each engine; `primary` is the one the JSON's top-level keys show.
  std::vector<SchemeMetrics> schemes;
  Scheme primary = Scheme::kContextCoherent;
};

// One expert slot that rebalancing changes: on `gpu` at `layer`, expert `removed` gives way to
// `added`.
struct SlotMove {
  int layer = 0;
  int gpu = 0;
  int removed = 0;
  int added = 0;
};

// The slots in which `next` differs from `previous` (same shape and slots per GPU), by layer,
// GPU, then expert: per GPU, the experts only `previous` holds paired in ascending order with
// those only `next` holds.
std::vector<SlotMove> slot_moves(const Placement& previous, const Placement& next);

struct PlanResult {
  PlanResult(Placement p, Placement v) : placement(std::move(p)), vanilla(std::move(v)) {}

  Placement placement;
  Placement vanilla;  // vanilla_placement_any for the same shape
  PlanStatus status = PlanStatus::kConverged;
  Method method = Method::kVanilla;  // trace and counts input: what produced it (auto resolved)
  bool optimal = false;
  // What the solver optimised, per token: the graph objective, or after the token search the
  // exact cost on the tokens it held. For loads input: the worst layer's load ratio.
  double objective = 0;
  // A bound on the placement's cost (trace input) or graph objective (counts input), only where
  // one holds: context-coherent and no replicas (top-k: coherent_cost_lower_bound).
  std::optional<double> lower_bound;
  std::optional<double> gap;                         // (cost - bound) / cost
  std::optional<Comparison> metrics;                 // trace input
  double vanilla_objective = 0;                      // counts input: vanilla's graph objective
  std::vector<double> load_ratio_per_layer;          // loads input: [L], max / mean
  std::vector<double> vanilla_load_ratio_per_layer;  // loads input: [L]
  std::string detail;                                // what each stage did, for humans
  std::vector<std::string> steps;                    // incremental and bisection: one line per step
  int layers_over_load_limit = 0;
  // Rebalancing from PlanOptions::previous: the slots that change (SlotMove), and the search's
  // exact cost on its tokens against the slots moved, after each of its steps (the start first).
  std::vector<SlotMove> moves;
  std::vector<std::pair<std::int64_t, double>> moves_trajectory;
  std::int64_t tokens_used = 0;  // tokens profiled (< the trace's with `incremental`)
  double seconds = 0;            // the whole call
  double solve_seconds = 0;      // the solvers alone
};

// Cost against moves allowed, from one rebalancing: for each budget (a share of the previous
// placement's expert slots, every copy of every layer), the cheapest step of r.moves_trajectory
// within it, the full budget (100%) being r's own answer when r had no budget. Costs are the
// search's exact cost per token on the tokens it held.
struct MovesCurvePoint {
  double percent = 0;
  std::int64_t max_moves = 0;
  std::int64_t moved = 0;
  double cost = 0;
};
// The budgets `solve --moves-curve` and the report show: 0, 1, 2, 5, 10, 20 and 100%.
const std::vector<double>& default_moves_percents();
std::vector<MovesCurvePoint> moves_curve(
    const PlanResult& r, const Placement& previous,
    const std::vector<double>& percents = default_moves_percents());

// From a trace. Throws UsageError (naming PlanOptions fields) for options that contradict each
// other or the input, InputError for a malformed trace.
PlanResult plan(const Trace& trace, const Topology& topology, const PlanOptions& options = {});
// The same with the trace's affinity graph, AffinityGraph::from_trace(trace), already built.
PlanResult plan(const Trace& trace, const AffinityGraph& graph, const Topology& topology,
                const PlanOptions& options = {});
// From inter-layer counts (no tokens: no metrics, no token search, no load limit or replicas).
PlanResult plan(const AffinityGraph& graph, const Topology& topology,
                const PlanOptions& options = {});
// From per-layer expert loads: each layer balanced by load alone, `redundant` replicas given to
// the hottest experts (EPLB's model: a replicated expert's load splits evenly over its copies).
// Throws InputError as check_load_totals does, naming "expert loads".
PlanResult plan(const ExpertLoads& loads, const Topology& topology,
                const PlanOptions& options = {});
// Throws InputError naming `source` and the layer if the loads do not match their shape, one is
// negative, or a layer's loads sum past int64 (the balancers add them up per GPU).
void check_load_totals(const ExpertLoads& loads, const std::string& source);

// `placement` and vanilla under both schemes, in one pass each (options.scheme is ignored).
Comparison compare_with_vanilla(const Trace& trace, const Placement& placement,
                                const Topology& topology, const EvalOptions& options = {});

// ---------------------------------------------------------------------------------------------
// The options table. Each PlanOptions field a user sets has one row: its name (the field, the
// Python keyword; the CLI flag is "--" + name with '-' for '_'), type, help, the default as
// shown in docs, and a setter that parses and checks a text value.

// kWordOrNumber: a word of the row's or a number (max_load_ratio: auto, none or a ratio).
enum class OptionType { kInt, kFloat, kBool, kText, kWordOrNumber };

struct PlanOptionSpec {
  std::string name;
  OptionType type = OptionType::kInt;
  std::string help;
  std::string shown_default;  // empty: value(PlanOptions{})
  // Parses `text` into the field; throws UsageError naming the option and the value.
  std::function<void(PlanOptions&, std::string_view text)> set;
  // The field as text, in the form `set` accepts.
  std::function<std::string(const PlanOptions&)> value;
};

const std::vector<PlanOptionSpec>& plan_option_specs();
// The row named `name`; throws UsageError listing the valid names.
const PlanOptionSpec& plan_option_spec(std::string_view name);
// "--max-load-ratio" for "max_load_ratio".
std::string option_flag(std::string_view name);

// The most worker threads a request may name (PlanOptions::threads, the CLI's --threads).
inline constexpr int kMaxThreads = 4096;

// Checks PlanOptions set in code as the table checks text: every field that differs from its
// default must be a value its row's `set` accepts (no nan or negative time limit, no redundant
// slots beyond the row's range, ...), and threads in [0, kMaxThreads]. Throws UsageError naming
// the field. plan() calls it first.
void check_plan_options(const PlanOptions& options);

// Starts of fast and bcd when PlanOptions::starts is 0: kDefaultStarts, or kDefaultStartsLarge
// for top-k traces and large graphs (include/exflow/solve.hpp).
int default_starts(int k, int layers, int experts, int gpus);

}  // namespace exflow
