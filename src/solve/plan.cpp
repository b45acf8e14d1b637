// The planning pipeline behind exflow::plan (include/exflow/plan.hpp): one sequence of steps for
// every front end.
//
// Trace input: solve on the affinity graph (the whole trace, or growing prefixes with
// `incremental`), refine on the tokens (top-k, load limit, replicas), score the result and
// vanilla under both schemes. The graph solvers' lower bound is on the pairwise objective,
// which is the evaluator's cost only for top-1 traces without replicas; a placement solved on a
// prefix is bounded by the bound of the whole trace's graph. Top-k coherent plans without
// replicas take the trace's own bound (coherent_cost_lower_bound).
#include "exflow/plan.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>

#include "exflow/affinity.hpp"
#include "exflow/eplb.hpp"
#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

SolveOptions solve_options_of(const PlanOptions& o, int k, int layers, int experts, int gpus) {
  SolveOptions s;
  s.method = o.method;
  s.time_limit = o.time_limit;
  s.seed = o.seed;
  s.threads = o.threads;
  s.starts = o.starts > 0 ? o.starts : default_starts(k, layers, experts, gpus);
  s.min_experts_per_gpu = o.min_experts_per_gpu;
  s.bipart = o.bipart;
  s.log = o.log;
  s.max_load = o.max_load_ratio;
  s.redundant = o.redundant;
  s.redundant_total = o.redundant_total;
  s.sample_tokens = o.sample_tokens;
  s.refine_time_limit = o.token_time_limit;
  s.scheme = o.scheme;
  s.sequence_length = o.seq_len;
  s.from_previous = o.previous.has_value();
  s.max_moves = o.max_moves;
  return s;
}

PlanStatus status_of(const SolveResult& r, bool optimal) {
  if (r.layers_over_load_limit > 0) return PlanStatus::kLoadLimitNotMet;
  if (r.stop == StopReason::kTimeLimit) return PlanStatus::kTimeLimit;
  if (r.stop == StopReason::kWorkBudget) return PlanStatus::kWorkBudget;
  return optimal ? PlanStatus::kOptimal : PlanStatus::kConverged;
}

void take_solver_result(PlanResult& out, SolveResult& r) {
  out.placement = std::move(r.placement);
  out.method = r.method;
  out.objective = r.objective;
  out.detail = std::move(r.detail);
  out.steps = std::move(r.steps);
  out.layers_over_load_limit = r.layers_over_load_limit;
  out.solve_seconds = r.seconds;
}

std::optional<double> gap_of(double value, std::optional<double> bound) {
  if (!bound) return std::nullopt;
  return value > 0 ? (value - *bound) / value : 0.0;
}

// Per-layer busiest GPU over the mean for expert loads, a replicated expert's load split evenly
// over its copies: [L].
std::vector<double> load_ratios(const ExpertLoads& loads, const Placement& p, int gpus) {
  std::vector<double> out;
  for (int l = 0; l < loads.layers; ++l) {
    std::vector<double> gpu(static_cast<std::size_t>(gpus), 0.0);
    double total = 0;
    for (int e = 0; e < loads.experts; ++e) {
      const std::vector<int> copies = p.copies(l, e);
      const double share = static_cast<double>(loads.count(l, e)) / copies.size();
      for (int g : copies) gpu[static_cast<std::size_t>(g)] += share;
      total += static_cast<double>(loads.count(l, e));
    }
    out.push_back(total > 0 ? *std::max_element(gpu.begin(), gpu.end()) / (total / gpus) : 1.0);
  }
  return out;
}

// The graph with idle experts E..experts-1 (no tokens) added to every layer, so that the graph
// solvers, which place the same number of experts on every GPU, can solve E experts on G GPUs
// when only E + R divides by G: the GPUs that get idle experts keep those slots for replicas.
AffinityGraph with_idle_experts(const AffinityGraph& graph, int experts) {
  const int L = graph.layers(), E = graph.experts();
  const auto n = static_cast<std::size_t>(experts);
  std::vector<std::int64_t> transitions(static_cast<std::size_t>(std::max(0, L - 1)) * n * n, 0);
  std::vector<std::int64_t> loads(static_cast<std::size_t>(L) * n, 0);
  for (int l = 0; l < L; ++l) {
    for (int i = 0; i < E; ++i) {
      loads[static_cast<std::size_t>(l) * n + static_cast<std::size_t>(i)] = graph.load(l, i);
      if (l + 1 == L) continue;
      for (int j = 0; j < E; ++j) {
        transitions[(static_cast<std::size_t>(l) * n + static_cast<std::size_t>(i)) * n +
                    static_cast<std::size_t>(j)] = graph.transition(l, i, j);
      }
    }
  }
  return AffinityGraph(L, experts, graph.tokens(), std::move(transitions), std::move(loads));
}

// The graph solve for E experts that do not divide over the GPUs (redundant slots make E + R
// divide): solved with idle experts up to the next multiple of G, which are then dropped.
SolveResult solve_uneven(const AffinityGraph& graph, const Topology& topology,
                         const SolveOptions& options, const PlanOptions& plan_options) {
  if (plan_options.incremental > 0 || plan_options.bipart ||
      plan_options.min_experts_per_gpu >= 0) {
    throw UsageError("incremental, bipart and min_experts_per_gpu need the experts (" +
                         std::to_string(graph.experts()) + ") to divide over the " +
                         std::to_string(topology.gpus()) + " GPUs",
                     {"incremental", "bipart", "min_experts_per_gpu"});
  }
  const int G = topology.gpus(), E = graph.experts(), L = graph.layers();
  const int padded = (E + G - 1) / G * G;
  SolveResult r = solve(with_idle_experts(graph, padded), topology, options);
  std::vector<int> gpu_of;
  gpu_of.reserve(static_cast<std::size_t>(L) * E);
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < E; ++e) gpu_of.push_back(r.placement.gpu(l, e));
  }
  SolveResult out(Placement(L, E, G, std::move(gpu_of)));
  out.method = r.method;
  out.objective = graph_objective(graph, out.placement, topology);
  out.seconds = r.seconds;
  out.stop = r.stop;
  out.detail = r.detail.empty() ? "" : r.detail + "; ";
  out.detail += "solved with " + std::to_string(padded - E) + " idle experts for the free slots";
  return out;
}

// Throws the usage error for E experts on G GPUs without redundant slots when G does not divide
// E, naming the redundant_total that would make the slots divide.
void require_divisible(int experts, int redundant_total, const Topology& topology) {
  const int G = topology.gpus();
  if (redundant_total > 0 || experts % G == 0 || G % experts == 0) return;
  throw UsageError(std::to_string(experts) + " experts per layer cannot be split evenly over " +
                       std::to_string(topology.nodes()) + " node(s) x " +
                       std::to_string(topology.gpus_per_node()) + " GPUs = " + std::to_string(G) +
                       " GPUs: the expert count must be divisible by the GPU count, or the "
                       "slots with redundant_total (e.g. " +
                       std::to_string(G - experts % G) + ")",
                   {"redundant_total"});
}

// Method eplb takes the expert loads as they are: the options of the graph and token searches
// do not apply, and expert_groups applies to it alone.
void check_eplb_options(const PlanOptions& o, int experts) {
  if (o.method != Method::kEplb) {
    if (o.expert_groups > 0) {
      throw UsageError("expert_groups applies to method eplb only", {"expert_groups", "method"});
    }
    return;
  }
  if (o.max_load_ratio.kind != LoadLimit::Kind::kAuto || o.bipart || o.incremental > 0 ||
      o.min_experts_per_gpu >= 0) {
    throw UsageError(
        "method eplb places by expert loads alone: max_load_ratio, bipart, incremental and "
        "min_experts_per_gpu do not apply",
        {"method", "max_load_ratio", "bipart", "incremental", "min_experts_per_gpu"});
  }
  if (o.expert_groups > 0 && experts % o.expert_groups != 0) {
    throw UsageError("expert_groups (" + std::to_string(o.expert_groups) +
                         ") must divide the experts per layer (" + std::to_string(experts) + ")",
                     {"expert_groups"});
  }
}

// The scheme needs tokens to optimise (trace input); copy choice even applies to the standard
// schemes.
void check_scheme_options(const PlanOptions& o, bool trace_input) {
  const bool chosen =
      o.scheme != Scheme::kContextCoherent || o.replica_choice != ReplicaChoice::kNearest;
  if (!trace_input && chosen) {
    throw UsageError(
        "scheme and replica_choice need a trace: counts and loads carry no tokens to route",
        {"scheme", "replica_choice"});
  }
  if (o.replica_choice == ReplicaChoice::kEven && o.scheme == Scheme::kContextCoherent) {
    throw UsageError(
        "replica_choice even spreads tokens over copies from their owner: it applies to the "
        "standard schemes (standard, deepep, deepep-ll), not coherent",
        {"replica_choice", "scheme"});
  }
}

// Rebalancing: `previous` must fit the trace and topology with the same slots on every GPU and
// distinct copies per GPU; returns its redundant slots per layer (checked against the options').
int check_previous(const Placement& previous, const Trace& trace, const Topology& topology,
                   const PlanOptions& o) {
  const int L = trace.layers(), E = trace.experts(), G = topology.gpus();
  if (previous.layers() != L || previous.experts() != E || previous.gpus() != G) {
    throw InputError("previous placement has " + std::to_string(previous.layers()) + " layers x " +
                     std::to_string(previous.experts()) + " experts on " +
                     std::to_string(previous.gpus()) + " GPUs, the trace and topology " +
                     std::to_string(L) + " x " + std::to_string(E) + " on " + std::to_string(G));
  }
  std::vector<int> per_layer(static_cast<std::size_t>(L), 0);
  for (const Replica& r : previous.replicas()) {
    ++per_layer[static_cast<std::size_t>(r.layer)];
    int copies_here = 0;
    for (int g : previous.copies(r.layer, r.expert)) copies_here += g == r.gpu;
    if (copies_here > 1) {
      throw InputError("previous placement holds two copies of expert " + std::to_string(r.expert) +
                       " on GPU " + std::to_string(r.gpu) + " at layer " + std::to_string(r.layer) +
                       "; rebalancing needs distinct experts per GPU");
    }
  }
  const int R = per_layer.front();
  for (int l = 0; l < L; ++l) {
    if (per_layer[static_cast<std::size_t>(l)] != R) {
      throw InputError("previous placement has " + std::to_string(R) +
                       " redundant slots at layer 0 but " +
                       std::to_string(per_layer[static_cast<std::size_t>(l)]) + " at layer " +
                       std::to_string(l));
    }
  }
  if ((o.redundant > 0 || o.redundant_total > 0) &&
      redundant_slots(o.redundant, o.redundant_total, E, G) != R) {
    throw UsageError("the previous placement has " + std::to_string(R) +
                         " redundant slots per layer, the options ask for " +
                         std::to_string(redundant_slots(o.redundant, o.redundant_total, E, G)),
                     {"redundant", "redundant_total"});
  }
  validate(previous, topology, Balance::kExact, "previous placement");
  return R;
}

// EPLB's placement for `loads` [L, E] with `redundant_total` redundant slots per layer; the
// EPLB step's time goes to `seconds`, what it did to `detail`.
Placement eplb_placement(const std::vector<std::int64_t>& loads, int layers, int experts,
                         const Topology& topology, int redundant_total, const PlanOptions& o,
                         double* seconds, std::string* detail) {
  const auto start = Clock::now();
  const int groups = o.expert_groups > 0 ? o.expert_groups : 1;
  const EplbMaps maps = rebalance_experts(loads, layers, experts, experts + redundant_total, groups,
                                          topology.nodes(), topology.gpus());
  Placement p = placement_from_eplb_maps(maps, topology.gpus(), "EPLB maps");
  *seconds = seconds_since(start);
  *detail = eplb_is_hierarchical(groups, topology.nodes())
                ? "EPLB hierarchical policy (" + std::to_string(groups) + " expert groups on " +
                      std::to_string(topology.nodes()) + " nodes)"
                : std::string("EPLB global policy");
  *detail += ", " + std::to_string(redundant_total) + " redundant slots per layer";
  return p;
}

// Tokens routed to each expert of each layer, every column of a top-k trace counted: [L, E].
std::vector<std::int64_t> trace_loads(const Trace& trace, int threads, Progress* progress) {
  const int E = trace.experts();
  const std::size_t n = static_cast<std::size_t>(trace.layers()) * static_cast<std::size_t>(E);
  std::vector<std::vector<std::int64_t>> per_worker(
      static_cast<std::size_t>(trace.workers(threads)), std::vector<std::int64_t>(n, 0));
  trace.for_each_block(
      threads,
      [&](int worker, const TraceBlock& b) {
        std::vector<std::int64_t>& acc = per_worker[static_cast<std::size_t>(worker)];
        for (int l = 0; l < b.layers; ++l) {
          std::int64_t* row = acc.data() + static_cast<std::size_t>(l) * E;
          for (int c = 0; c < b.k; ++c) {
            const std::int32_t* ids = b.column(l, c);
            for (std::int64_t t = 0; t < b.tokens; ++t) ++row[ids[t]];
          }
        }
      },
      progress, "counting expert loads");
  std::vector<std::int64_t> out(n, 0);
  for (const auto& acc : per_worker) {
    for (std::size_t i = 0; i < n; ++i) out[i] += acc[i];
  }
  return out;
}

// Both placements under every scheme, one evaluator pass per scheme; options.scheme is the
// primary one.
Comparison compare(const Trace& trace, const Placement& placement, const Placement& vanilla,
                   const Topology& topology, const EvalOptions& options) {
  if (options.replica_choice == ReplicaChoice::kEven &&
      options.scheme == Scheme::kContextCoherent) {
    throw UsageError(
        "replica choice even spreads tokens over copies from their owner: it applies to the "
        "standard schemes (standard, deepep, deepep-ll), not coherent",
        {"replica_choice", "scheme"});
  }
  Comparison c;
  c.primary = options.scheme;
  EvalOptions eo = options;
  for (Scheme scheme :
       {Scheme::kContextCoherent, Scheme::kBaseline, Scheme::kDeepEP, Scheme::kDeepEPLowLatency}) {
    eo.scheme = scheme;
    // Copy choice even is for the standard schemes; the coherent one always uses the nearest.
    eo.replica_choice =
        scheme == Scheme::kContextCoherent ? ReplicaChoice::kNearest : options.replica_choice;
    std::vector<Metrics> both = evaluate_all(trace, {&placement, &vanilla}, topology, eo);
    c.schemes.push_back({scheme, std::move(both[0]), std::move(both[1])});
  }
  c.placement = c.schemes[0].placement;
  c.vanilla = c.schemes[0].vanilla;
  c.placement_baseline = c.schemes[1].placement;
  c.vanilla_baseline = c.schemes[1].vanilla;
  return c;
}

EvalOptions eval_options_of(const PlanOptions& options) {
  EvalOptions eo;
  eo.threads = options.threads;
  eo.sequence_length = options.seq_len;
  eo.progress = options.progress;
  eo.scheme = options.scheme;
  eo.replica_choice = options.replica_choice;
  return eo;
}

// Method eplb on a trace: EPLB's placement for the trace's expert loads, scored like any other.
// The objective is what EPLB balances: the worst layer's GPU load ratio.
PlanResult plan_trace_eplb(const Trace& trace, const Topology& topology, const PlanOptions& options,
                           int redundant_total, Clock::time_point start) {
  const int L = trace.layers(), E = trace.experts();
  ExpertLoads loads{L, E, trace_loads(trace, options.threads, options.progress)};
  PlanResult out(Placement(L, E, topology.gpus()),
                 stock_placement(L, E, redundant_total, topology));
  out.placement = eplb_placement(loads.counts, L, E, topology, redundant_total, options,
                                 &out.solve_seconds, &out.detail);
  out.method = Method::kEplb;
  out.status = PlanStatus::kConverged;
  out.load_ratio_per_layer = load_ratios(loads, out.placement, topology.gpus());
  out.vanilla_load_ratio_per_layer = load_ratios(loads, out.vanilla, topology.gpus());
  out.objective =
      *std::max_element(out.load_ratio_per_layer.begin(), out.load_ratio_per_layer.end());
  out.tokens_used = trace.tokens();
  if (options.score) {
    out.metrics = compare(trace, out.placement, out.vanilla, topology, eval_options_of(options));
  }
  out.seconds = seconds_since(start);
  return out;
}

PlanResult plan_trace(const Trace& trace, const AffinityGraph* graph, const Topology& topology,
                      const PlanOptions& options) {
  const auto start = Clock::now();
  SolveOptions solve_options =
      solve_options_of(options, trace.k(), trace.layers(), trace.experts(), topology.gpus());
  if (options.method == Method::kVanilla && !options.bipart &&
      options.max_load_ratio.kind == LoadLimit::Kind::kRatio) {
    throw UsageError("method vanilla keeps the contiguous placement: max_load_ratio " +
                         to_string(options.max_load_ratio) + " cannot apply",
                     {"method", "max_load_ratio"});
  }
  check_eplb_options(options, trace.experts());
  check_scheme_options(options, true);
  if (options.max_moves >= 0 && !options.previous) {
    throw UsageError("max_moves counts the slots moved from a previous placement: give one",
                     {"max_moves"});
  }
  if (options.previous && (options.method != Method::kAuto || options.incremental > 0 ||
                           options.bipart || options.min_experts_per_gpu >= 0)) {
    throw UsageError(
        "rebalancing starts from the previous placement: method, incremental, bipart and "
        "min_experts_per_gpu do not apply",
        {"method", "incremental", "bipart", "min_experts_per_gpu"});
  }
  const int redundant_total = options.previous
                                  ? check_previous(*options.previous, trace, topology, options)
                                  : redundant_slots(options.redundant, options.redundant_total,
                                                    trace.experts(), topology.gpus());
  require_divisible(trace.experts(), redundant_total, topology);
  if (options.method == Method::kEplb) {
    return plan_trace_eplb(trace, topology, options, redundant_total, start);
  }
  const bool uneven = trace.experts() % topology.gpus() != 0 && redundant_total > 0;
  std::int64_t tokens_used = trace.tokens();
  std::optional<AffinityGraph> own_graph;
  auto whole_graph = [&]() -> const AffinityGraph& {
    if (graph != nullptr) return *graph;
    if (!own_graph) own_graph = AffinityGraph::from_trace(trace, options.threads, options.progress);
    return *own_graph;
  };
  if (options.previous) {
    solve_options.redundant = 0;
    solve_options.redundant_total = redundant_total;
  }
  const auto start_at_previous = [&] {
    SolveResult s(*options.previous);
    s.method = Method::kAuto;
    return s;
  };
  SolveResult r = options.previous ? start_at_previous()
                  : uneven         ? solve_uneven(whole_graph(), topology, solve_options, options)
                  : options.incremental > 0
                      ? solve_incremental(trace, topology, solve_options, options.incremental,
                                          &tokens_used, options.threads)
                      : solve(whole_graph(), topology, solve_options);
  const bool graph_bound =
      trace.k() == 1 && redundant_total == 0 && options.scheme == Scheme::kContextCoherent;
  r = refine(trace, topology, solve_options, std::move(r));
  if (tokens_used < trace.tokens() && graph_bound) {
    r.optimal = false;
    r.lower_bound = objective_lower_bound(whole_graph(), topology, options.min_experts_per_gpu);
  }

  PlanResult out(Placement(trace.layers(), trace.experts(), topology.gpus()),
                 stock_placement(trace.layers(), trace.experts(), redundant_total, topology));
  const bool optimal = r.optimal && graph_bound;
  const std::optional<double> solver_bound = r.lower_bound;
  out.status = status_of(r, optimal);
  out.moves_trajectory = std::move(r.moves_trajectory);
  take_solver_result(out, r);
  if (options.previous) {
    // A budget that covers every slot allows any placement: the unconstrained solve competes.
    const std::int64_t slots =
        static_cast<std::int64_t>(trace.layers()) * (trace.experts() + redundant_total);
    if (options.max_moves < 0 || options.max_moves >= slots) {
      PlanOptions fresh = options;
      fresh.previous.reset();
      fresh.max_moves = -1;
      fresh.score = false;
      PlanResult unconstrained = plan_trace(trace, graph, topology, fresh);
      if (unconstrained.objective < out.objective - 1e-9 * std::max(1.0, out.objective)) {
        out.placement = std::move(unconstrained.placement);
        out.objective = unconstrained.objective;
        out.status = unconstrained.status;
        out.layers_over_load_limit = unconstrained.layers_over_load_limit;
        out.detail +=
            "; the unconstrained solve was cheaper and replaces it: " + unconstrained.detail;
      }
    }
    out.moves = slot_moves(*options.previous, out.placement);
  }
  out.optimal = optimal;
  out.tokens_used = tokens_used;
  if (options.score) {
    out.metrics = compare(trace, out.placement, out.vanilla, topology, eval_options_of(options));
    const double cost = out.metrics->placement.cost;
    if (graph_bound && solver_bound) {
      out.lower_bound = std::min(*solver_bound, cost);
    } else if (redundant_total == 0 && options.scheme == Scheme::kContextCoherent) {
      out.lower_bound = std::min(
          coherent_cost_lower_bound(trace, topology, options.min_experts_per_gpu, options.threads),
          cost);
    }
    out.gap = gap_of(cost, out.lower_bound);
  }
  out.seconds = seconds_since(start);
  return out;
}

}  // namespace

const char* to_string(PlanStatus status) {
  switch (status) {
    case PlanStatus::kOptimal:
      return "optimal";
    case PlanStatus::kConverged:
      return "converged";
    case PlanStatus::kTimeLimit:
      return "time limit";
    case PlanStatus::kWorkBudget:
      return "work budget";
    case PlanStatus::kLoadLimitNotMet:
      return "load limit not met";
  }
  return "?";
}

std::vector<SlotMove> slot_moves(const Placement& previous, const Placement& next) {
  if (previous.layers() != next.layers() || previous.experts() != next.experts() ||
      previous.gpus() != next.gpus()) {
    throw UsageError("slot_moves: the placements differ in shape");
  }
  const int L = next.layers(), E = next.experts(), G = next.gpus();
  // held[g * E + e]: copies of e on g, previous minus next, per layer.
  std::vector<int> held(static_cast<std::size_t>(G) * E);
  std::vector<SlotMove> moves;
  for (int l = 0; l < L; ++l) {
    std::fill(held.begin(), held.end(), 0);
    for (int e = 0; e < E; ++e) {
      for (int g : previous.copies(l, e)) ++held[static_cast<std::size_t>(g) * E + e];
      for (int g : next.copies(l, e)) --held[static_cast<std::size_t>(g) * E + e];
    }
    for (int g = 0; g < G; ++g) {
      std::vector<int> removed, added;
      for (int e = 0; e < E; ++e) {
        const int d = held[static_cast<std::size_t>(g) * E + e];
        for (int i = 0; i < d; ++i) removed.push_back(e);
        for (int i = 0; i < -d; ++i) added.push_back(e);
      }
      if (removed.size() != added.size()) {
        throw UsageError("slot_moves: GPU " + std::to_string(g) + " at layer " + std::to_string(l) +
                         " holds a different number of slots");
      }
      for (std::size_t i = 0; i < removed.size(); ++i)
        moves.push_back({l, g, removed[i], added[i]});
    }
  }
  return moves;
}

const std::vector<double>& default_moves_percents() {
  static const std::vector<double> percents = {0, 1, 2, 5, 10, 20, 100};
  return percents;
}

std::vector<MovesCurvePoint> moves_curve(const PlanResult& r, const Placement& previous,
                                         const std::vector<double>& percents) {
  if (r.moves_trajectory.empty()) {
    throw UsageError("moves_curve needs a rebalancing result (PlanOptions::previous)");
  }
  const std::int64_t slots = static_cast<std::int64_t>(previous.layers()) * previous.experts() +
                             static_cast<std::int64_t>(previous.replicas().size());
  std::vector<MovesCurvePoint> curve;
  for (double percent : percents) {
    MovesCurvePoint p;
    p.percent = percent;
    p.max_moves = static_cast<std::int64_t>(static_cast<double>(slots) * percent / 100.0 + 1e-9);
    p.cost = r.moves_trajectory.front().second;
    for (const auto& [moved, cost] : r.moves_trajectory) {
      if (moved <= p.max_moves && cost < p.cost) {
        p.cost = cost;
        p.moved = moved;
      }
    }
    if (p.max_moves >= slots && r.objective < p.cost) {
      p.cost = r.objective;
      p.moved = static_cast<std::int64_t>(r.moves.size());
    }
    curve.push_back(p);
  }
  return curve;
}

int default_starts(int k, int layers, int experts, int gpus) {
  const double work = static_cast<double>(experts) * experts * gpus * layers;
  return k > 1 || work > kLargeGraphWork ? kDefaultStartsLarge : kDefaultStarts;
}

Comparison compare_with_vanilla(const Trace& trace, const Placement& placement,
                                const Topology& topology, const EvalOptions& options) {
  // Where the experts do not divide over the GPUs, the stock layout has the placement's
  // redundant slots.
  return compare(trace, placement, stock_placement_for(placement, topology), topology, options);
}

PlanResult plan(const Trace& trace, const Topology& topology, const PlanOptions& options) {
  check_plan_options(options);
  return plan_trace(trace, nullptr, topology, options);
}

PlanResult plan(const Trace& trace, const AffinityGraph& graph, const Topology& topology,
                const PlanOptions& options) {
  check_plan_options(options);
  if (graph.layers() != trace.layers() || graph.experts() != trace.experts() ||
      graph.tokens() != trace.tokens()) {
    throw UsageError("plan: the affinity graph is not the trace's");
  }
  return plan_trace(trace, &graph, topology, options);
}

PlanResult plan(const AffinityGraph& graph, const Topology& topology, const PlanOptions& options) {
  const auto start = Clock::now();
  check_plan_options(options);
  if (options.redundant > 0 || options.redundant_total > 0 ||
      options.max_load_ratio.kind != LoadLimit::Kind::kAuto || options.incremental > 0) {
    throw UsageError(
        "redundant, redundant_total, max_load_ratio and incremental need a trace, not affinity "
        "counts",
        {"redundant", "redundant_total", "max_load_ratio", "incremental"});
  }
  if (options.method == Method::kEplb) {
    throw UsageError("method eplb needs a trace or expert loads, not affinity counts", {"method"});
  }
  check_eplb_options(options, graph.experts());
  check_scheme_options(options, false);
  SolveOptions solve_options =
      solve_options_of(options, 1, graph.layers(), graph.experts(), topology.gpus());
  solve_options.max_load = LoadLimit{};
  SolveResult r = solve(graph, topology, solve_options);
  PlanResult out(Placement(graph.layers(), graph.experts(), topology.gpus()),
                 vanilla_placement_any(graph.layers(), graph.experts(), topology));
  out.status = status_of(r, r.optimal);
  out.optimal = r.optimal;
  out.lower_bound = r.lower_bound;
  take_solver_result(out, r);
  out.vanilla_objective = graph_objective(graph, out.vanilla, topology);
  out.gap = gap_of(out.objective, out.lower_bound);
  out.tokens_used = graph.tokens();
  out.seconds = seconds_since(start);
  return out;
}

void check_load_totals(const ExpertLoads& loads, const std::string& source) {
  if (loads.layers < 1 || loads.experts < 1 ||
      loads.counts.size() != static_cast<std::size_t>(loads.layers) * loads.experts) {
    throw InputError(source + ": " + std::to_string(loads.counts.size()) + " loads for " +
                     std::to_string(loads.layers) + " layers x " + std::to_string(loads.experts) +
                     " experts");
  }
  for (int l = 0; l < loads.layers; ++l) {
    std::int64_t total = 0;
    for (int e = 0; e < loads.experts; ++e) {
      const std::int64_t v = loads.count(l, e);
      if (v < 0) {
        throw InputError(source + ": layer " + std::to_string(l) + " expert " + std::to_string(e) +
                         ": load " + std::to_string(v) + " is negative");
      }
      if (__builtin_add_overflow(total, v, &total)) {
        throw InputError(source + ": layer " + std::to_string(l) +
                         ": the expert loads sum past the int64 range (" +
                         std::to_string(std::numeric_limits<std::int64_t>::max()) + ") at expert " +
                         std::to_string(e) + ", so the GPUs' loads cannot be compared");
      }
    }
  }
}

PlanResult plan(const ExpertLoads& loads, const Topology& topology, const PlanOptions& options) {
  const auto start = Clock::now();
  check_plan_options(options);
  check_load_totals(loads, "expert loads");
  const bool eplb = options.method == Method::kEplb;
  if (options.max_load_ratio.kind != LoadLimit::Kind::kAuto ||
      (options.method != Method::kAuto && !eplb) || options.incremental > 0 || options.bipart ||
      options.min_experts_per_gpu >= 0) {
    throw UsageError(
        "expert loads are balanced by load alone (method auto or eplb): max_load_ratio, other "
        "methods, incremental, bipart and min_experts_per_gpu need a trace",
        {"max_load_ratio", "method", "incremental", "bipart", "min_experts_per_gpu"});
  }
  check_eplb_options(options, loads.experts);
  check_scheme_options(options, false);
  const int redundant_total =
      redundant_slots(options.redundant, options.redundant_total, loads.experts, topology.gpus());
  require_divisible(loads.experts, redundant_total, topology);
  PlanResult out(Placement(loads.layers, loads.experts, topology.gpus()),
                 stock_placement(loads.layers, loads.experts, redundant_total, topology));
  double eplb_seconds = 0;
  if (eplb) {
    out.placement = eplb_placement(loads.counts, loads.layers, loads.experts, topology,
                                   redundant_total, options, &eplb_seconds, &out.detail);
    out.method = Method::kEplb;
  } else {
    out.placement =
        balance_loads(loads.counts, loads.layers, loads.experts, topology, redundant_total);
    out.detail = "balanced by load alone";
  }
  out.load_ratio_per_layer = load_ratios(loads, out.placement, topology.gpus());
  out.vanilla_load_ratio_per_layer = load_ratios(loads, out.vanilla, topology.gpus());
  out.objective =
      *std::max_element(out.load_ratio_per_layer.begin(), out.load_ratio_per_layer.end());
  out.seconds = seconds_since(start);
  out.solve_seconds = eplb ? eplb_seconds : out.seconds;
  return out;
}

}  // namespace exflow
