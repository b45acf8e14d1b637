// From the affinity-graph optimum to the placement that is best for the trace itself: load
// limits, top-k costs and redundant experts (see refine() in include/exflow/solve.hpp).
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <utility>

#include "core/quoted.hpp"
#include "exflow/error.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/load_balance.hpp"
#include "solve/token_search.hpp"

namespace exflow {

LoadLimit parse_load_limit(const std::string& text) {
  LoadLimit limit;
  if (text == "none") return limit;
  if (text == "auto") {
    limit.kind = LoadLimit::Kind::kAuto;
    return limit;
  }
  double ratio = 0;
  const auto parsed = std::from_chars(text.data(), text.data() + text.size(), ratio);
  if (text.empty() || parsed.ec != std::errc() || parsed.ptr != text.data() + text.size() ||
      !std::isfinite(ratio) || ratio < 1.0) {
    throw UsageError(
        "max_load_ratio must be 'auto', 'none' or a number >= 1 (the busiest "
        "GPU's load over the mean), got " +
            quoted(text),
        {"max_load_ratio"});
  }
  limit.kind = LoadLimit::Kind::kRatio;
  limit.ratio = ratio;
  return limit;
}

std::string to_string(const LoadLimit& limit) {
  switch (limit.kind) {
    case LoadLimit::Kind::kNone:
      return "none";
    case LoadLimit::Kind::kAuto:
      return "auto";
    case LoadLimit::Kind::kRatio: {
      char buf[32];
      const auto r = std::to_chars(buf, buf + sizeof buf, limit.ratio);
      return std::string(buf, r.ptr);
    }
  }
  return "?";
}

std::vector<std::int64_t> load_limits(const LoadLimit& limit, std::int64_t tokens, int k, int gpus,
                                      const std::vector<std::int64_t>& vanilla_max) {
  switch (limit.kind) {
    case LoadLimit::Kind::kNone:
      return {};
    case LoadLimit::Kind::kAuto:
      return vanilla_max;
    case LoadLimit::Kind::kRatio: {
      // No GPU serves more than every assignment: a larger ratio does not bind.
      const double assignments = static_cast<double>(tokens) * k;
      const double mean = assignments / gpus;
      const auto cap =
          static_cast<std::int64_t>(std::min(std::floor(limit.ratio * mean + 1e-9), assignments));
      return std::vector<std::int64_t>(vanilla_max.size(), cap);
    }
  }
  return {};
}

namespace {

std::string cost_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4f", v);
  return text;
}

}  // namespace

SolveResult refine(const Trace& trace, const Topology& topology, const SolveOptions& options,
                   SolveResult result) {
  const int k = trace.k();
  // The vanilla placement stays vanilla: only replicas are added to it.
  const bool vanilla = result.method == Method::kVanilla && !options.bipart;
  const int redundant_total =
      redundant_slots(options.redundant, options.redundant_total, trace.experts(), topology.gpus());
  const bool needed =
      options.from_previous ||
      (vanilla ? redundant_total > 0 || k > 1
               : k > 1 || options.max_load.kind != LoadLimit::Kind::kNone || redundant_total > 0 ||
                     options.scheme != Scheme::kContextCoherent);
  if (!needed) return result;
  const auto start = std::chrono::steady_clock::now();
  const int L = trace.layers();
  const int E = trace.experts();
  const int G = topology.gpus();
  const std::int64_t budget =
      options.sample_tokens > 0 ? options.sample_tokens
                                : std::max<std::int64_t>(1, (std::int64_t{16} << 20) /
                                                                (static_cast<std::int64_t>(L) * k));
  if (options.log) {
    options.log(std::string(to_string(result.method)) + " finished on the affinity graph (" +
                std::to_string(result.seconds) + " s); token search next");
  }
  const solvers::TokenSample sample = solvers::TokenSample::from_trace(trace, budget);
  const bool whole_trace = sample.tokens == trace.tokens();

  std::vector<std::int64_t> vanilla_max(static_cast<std::size_t>(L), 0);
  if (options.max_load.kind == LoadLimit::Kind::kAuto && !vanilla) {
    // The stock layout's GPU of each expert (its first slot): E/G experts per GPU, or with
    // uneven experts the trivial slot map's (E + R)/G.
    const int per_gpu = E % G == 0 ? E / G : (E + redundant_total) / G;
    std::vector<std::int64_t> load(static_cast<std::size_t>(G));
    for (int l = 0; l < L; ++l) {
      std::fill(load.begin(), load.end(), 0);
      for (std::int64_t t = 0; t < sample.tokens; ++t) {
        for (int c = 0; c < k; ++c) ++load[static_cast<std::size_t>(sample.id(l, t, c) / per_gpu)];
      }
      vanilla_max[static_cast<std::size_t>(l)] = *std::max_element(load.begin(), load.end());
    }
  }
  // DeepEP low-latency mode sends one transfer per token-expert off its owner: with owners dealt
  // round-robin and no replicas, where an expert sits changes nothing but noise in the sample.
  const bool nothing_to_gain = options.scheme == Scheme::kDeepEPLowLatency &&
                               redundant_total == 0 && options.sequence_length == 1;
  solvers::TokenSearchOptions search;
  if (!vanilla) search.max_load = load_limits(options.max_load, sample.tokens, k, G, vanilla_max);
  search.improve = !vanilla && !nothing_to_gain;
  search.redundant_total = redundant_total;
  search.time_limit = options.refine_time_limit;
  search.log = options.log;
  search.seed = options.seed;
  search.scheme = options.scheme;
  search.sequence_length = options.sequence_length;
  search.from_previous = options.from_previous;
  search.max_moves = options.max_moves;
  solvers::TokenSearchResult found =
      solvers::token_search(sample, topology, result.placement, search);

  const bool changed = !(found.placement == result.placement);
  result.moves_trajectory = std::move(found.trajectory);
  // The graph solvers' objective is the context-coherent cost of top-1 traces.
  const bool graph_exact =
      k == 1 && redundant_total == 0 && whole_trace && options.scheme == Scheme::kContextCoherent;
  result.placement = std::move(found.placement);
  result.objective = found.cost;
  result.optimal = result.optimal && !changed && graph_exact;
  if (!graph_exact) result.lower_bound.reset();
  if (result.lower_bound && *result.lower_bound > result.objective) {
    result.lower_bound = result.objective;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "token search on %lld tokens: exact cost %.4f -> %.4f, %d sweeps, %d of %d kicks "
                "kept",
                static_cast<long long>(sample.tokens), found.start_cost, found.cost, found.sweeps,
                found.kicks_kept, found.kicks);
  std::string detail = buf;
  if (options.from_previous) {
    detail = "rebalanced from the previous placement on " + std::to_string(sample.tokens) +
             " tokens: exact cost " + cost_text(found.start_cost) + " -> " + cost_text(found.cost) +
             ", " + std::to_string(found.moved_slots) + " slots moved" +
             (options.max_moves >= 0 ? " (at most " + std::to_string(options.max_moves) + ")"
                                     : std::string());
  }
  if (nothing_to_gain) {
    detail +=
        "; deepep-ll: with owners dealt round-robin and no redundant slots a placement cannot "
        "change its transfers (one per token-expert off the owner), so only the load was "
        "repaired (give redundant slots, or seq_len for owners that follow sequences)";
  }
  if (found.layers_reset > 0) {
    detail += ", " + std::to_string(found.layers_reset) + " layers rebalanced by load alone";
  }
  if (found.stopped_by_time) {
    detail += ", stopped by the time limit or the work budget";
    if (result.stop == StopReason::kConverged) {
      result.stop = found.stopped_by_work_budget ? StopReason::kWorkBudget : StopReason::kTimeLimit;
    }
  }
  result.layers_over_load_limit = found.layers_over_limit;
  if (found.layers_over_limit > 0) {
    detail += "; the load limit is exceeded on " + std::to_string(found.layers_over_limit) +
              (found.stopped_by_time && !found.stopped_by_work_budget
                   ? " layers (the time limit cut the load repair short)"
                   : " layers (the replicas' copies could not all be kept within it)");
  }
  result.detail = result.detail.empty() ? detail : result.detail + "; " + detail;
  if (options.min_experts_per_gpu < 0) {
    validate(result.placement, topology, Balance::kExact, "refined placement");
  } else {
    validate(result.placement, topology, Balance::kNone, "refined placement");
  }
  result.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

int redundant_slots(int redundant, int redundant_total, int experts, int gpus) {
  if (redundant < 0 || redundant_total < 0) {
    throw UsageError("redundant and redundant_total must be >= 0",
                     {"redundant", "redundant_total"});
  }
  if (redundant > 0 && redundant_total > 0) {
    throw UsageError("give redundant (per GPU) or redundant_total (in all), not both",
                     {"redundant", "redundant_total"});
  }
  const std::int64_t R =
      redundant_total > 0 ? redundant_total : static_cast<std::int64_t>(redundant) * gpus;
  const char* name = redundant_total > 0 ? "redundant_total" : "redundant";
  const std::string given = redundant_total > 0
                                ? std::to_string(R)
                                : std::to_string(redundant) + " (" + std::to_string(R) + " in all)";
  if (R > 0 && (experts + R) % gpus != 0) {
    throw UsageError(std::string(name) + " " + given + ": " + std::to_string(experts) +
                         " experts + " + std::to_string(R) +
                         " redundant slots do not divide over " + std::to_string(gpus) + " GPUs",
                     {name});
  }
  if (R > static_cast<std::int64_t>(experts) * (gpus - 1)) {
    throw UsageError(std::string(name) + " " + given + " needs more copies than " +
                         std::to_string(experts) + " experts can have on " + std::to_string(gpus) +
                         " GPUs",
                     {name});
  }
  return static_cast<int>(R);
}

Placement balance_loads(const std::vector<std::int64_t>& loads, int layers, int experts,
                        const Topology& topology, int redundant_total) {
  if (loads.size() != static_cast<std::size_t>(layers) * experts) {
    throw UsageError("balance_loads: " + std::to_string(loads.size()) + " loads for " +
                     std::to_string(layers) + " layers x " + std::to_string(experts) + " experts");
  }
  const int G = topology.gpus();
  const int R = redundant_slots(0, redundant_total, experts, G);
  const int per_gpu = R == 0 ? topology.experts_per_gpu(experts) : 0;
  Placement p(layers, experts, G);
  for (int l = 0; l < layers; ++l) {
    const std::int64_t* load = loads.data() + static_cast<std::size_t>(l) * experts;
    if (R == 0) {
      std::vector<int> gpu_of = solvers::balance_layer(load, experts, G, per_gpu);
      // The greedy and its swaps can end a little above the contiguous layout (e.g. loads
      // {3 8 14 11 4 10 12 11 1} on 3 GPUs: 26 vs 25); keep the better, as the token search does.
      std::vector<int> contiguous(static_cast<std::size_t>(experts));
      for (int e = 0; e < experts; ++e) contiguous[static_cast<std::size_t>(e)] = e / per_gpu;
      if (solvers::max_gpu_load(load, contiguous.data(), experts, G) <
          solvers::max_gpu_load(load, gpu_of.data(), experts, G)) {
        gpu_of = std::move(contiguous);
      }
      for (int e = 0; e < experts; ++e) p.set(l, e, gpu_of[static_cast<std::size_t>(e)]);
      continue;
    }
    std::vector<std::vector<int>> hosts = solvers::balance_layer_with_replicas(load, experts, G, R);
    std::vector<bool> seen(static_cast<std::size_t>(experts), false);
    for (int g = 0; g < G; ++g) {
      for (int e : hosts[static_cast<std::size_t>(g)]) {
        if (!seen[static_cast<std::size_t>(e)]) {
          seen[static_cast<std::size_t>(e)] = true;
          p.set(l, e, g);
        }
      }
    }
    for (int g = 0; g < G; ++g) {
      for (int e : hosts[static_cast<std::size_t>(g)]) {
        if (p.gpu(l, e) != g) p.add_replica(l, e, g);
      }
    }
  }
  validate(p, topology, Balance::kExact, "load-balanced placement");
  return p;
}

}  // namespace exflow
