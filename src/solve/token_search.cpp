// Token-level local search for the exact context-coherent cost: the driver. The state it works
// on (routes, loads, exact deltas) is src/solve/token_state.hpp; each step is a module of
// src/solve/token_moves.hpp.
//
// What it optimises: the evaluator's cost (include/exflow/evaluate.hpp) on a sample of tokens,
// i.e. for top-k traces the combines into each token's home and the dispatches from it, with
// tokens using the nearest copy of a replicated expert; subject to a per-layer limit on the
// token-expert assignments any GPU serves. The pairwise affinity graph the other solvers see
// counts k*k pairs per token and cannot tell that two experts on one GPU cost one transfer, not
// two; this search sees every token.
//
// Steps:
//   1. Repair: on each layer over its load limit, apply the swap (busiest GPU vs the least
//      loaded) that most reduces the excess, cheapest first; if swaps stall, rebalance the layer
//      by load alone (largest-first, or vanilla if that is better).
//      Then, on one node without replicas, anneal each layer's grouping for a proxy of its cost
//      (GPUs per token) and keep the result if the exact cost fell; and, for the
//      context-coherent scheme without replicas, relabel the layers' GPUs to align each
//      layer's tokens with their previous homes (kept if the exact cost fell).
//   2. Fill replica slots: for each layer and GPU, the expert most requested by tokens arriving
//      on that GPU without a local copy, taking the exact delta of the best few candidates.
//   3. Sweeps: for each layer and expert, try swapping it with each expert of the two GPUs its
//      tokens pull it towards most (where they come from, their co-selected experts, where
//      they go next); re-aim each replica slot at the most requested experts. Accept exact
//      improvements that keep every load limit. The first sweeps evaluate only the best few
//      swaps of each layer; a sweep that gains under 1e-4 relative widens the next ones, and
//      the widest one stops them; so do max_sweeps and the time limit.
//   4. Kicks (iterated local search): two random swaps on a random layer, step 3 on it and its
//      neighbours, kept only if the cost fell; until `kick_patience` kicks in a row fail.
#include "solve/token_search.hpp"

#include <algorithm>
#include <string>

#include "core/routing.hpp"
#include "exflow/error.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/token_moves.hpp"
#include "solve/token_state.hpp"

namespace exflow::solvers {

TokenSample TokenSample::from_trace(const Trace& trace, std::int64_t max_tokens) {
  TokenSample s;
  const std::int64_t T = trace.tokens();
  s.tokens = std::min(T, std::max<std::int64_t>(1, max_tokens));
  s.layers = trace.layers();
  s.k = trace.k();
  s.experts = trace.experts();
  s.ids.resize(static_cast<std::size_t>(s.tokens) * s.layers * s.k);
  s.position.resize(static_cast<std::size_t>(s.tokens));
  std::vector<std::int32_t> buffer;
  std::int64_t next = 0;  // sample index
  const std::int64_t block = 4096;
  for (std::int64_t begin = 0; begin < T && next < s.tokens; begin += block) {
    const std::int64_t end = std::min(T, begin + block);
    // Sample i is token floor(i * T / n).
    if ((next * T) / s.tokens >= end) continue;
    TraceBlock b = trace.decode(begin, end, buffer);
    for (; next < s.tokens; ++next) {
      const std::int64_t t = (next * T) / s.tokens;
      if (t >= end) break;
      s.position[static_cast<std::size_t>(next)] = t;
      for (int l = 0; l < s.layers; ++l) {
        for (int c = 0; c < s.k; ++c) {
          s.ids[(static_cast<std::size_t>(l) * s.tokens + next) * s.k + c] =
              b.column(l, c)[t - begin];
        }
      }
    }
  }
  return s;
}

std::int64_t default_token_walks(const TokenSample& sample) {
  const double assignments = static_cast<double>(sample.tokens) * sample.layers * sample.k;
  return static_cast<std::int64_t>(
      std::clamp(kWalksPerAssignment * assignments, kLeastDefaultWalks, kMostDefaultWalks));
}

namespace {

// How much wider each widening makes the sweeps.
constexpr int kWiden = 4;

// Rebalancing from the placement the engine runs (options.from_previous): the moves of steps 1
// and 3 only, recorded; the sweeps first accept only gains above a threshold that halves each
// pass (from the traffic of a typical expert's tokens down to one transfer), so that the early
// steps are the ones that buy the most, then run as usual. The answer is the cheapest recorded
// step within the move budget, rebuilt from the change log.
TokenSearchResult rebalance(const TokenSample& sample, const Topology& topology,
                            const Placement& previous, const TokenSearchOptions& options) {
  token_moves::SearchControl control(options);
  TokenState state(
      sample, topology, previous, options.scheme, options.sequence_length,
      options.max_load.empty()
          ? std::vector<std::int64_t>(static_cast<std::size_t>(sample.layers), kNoLoadLimit)
          : options.max_load);
  const double tokens = static_cast<double>(sample.tokens);
  TokenSearchResult result(previous);
  result.start_cost = state.total() / tokens;
  state.track_moves();
  // A limit the budget cannot reach is reported (layers_over_limit), not refused.
  token_moves::repair(state, control, result, false);
  control.start_work_budget(state);
  const bool slots = state.has_replicas();
  const double unit = state.hops().cost_of_hop(routing::kIntra);
  for (double gain = 2.0 * unit * tokens * sample.k / std::max(1, sample.experts);
       gain >= unit && !control.out_of_time(state); gain /= 2) {
    for (int l = 0; l < state.layers() && !control.out_of_time(state); ++l) {
      token_moves::improve_layer(state, control, l, gain);
      if (slots) token_moves::improve_replicas(state, control, l, gain / 2);
    }
  }
  for (int sweep = 0; sweep < options.max_sweeps && !control.out_of_time(state); ++sweep) {
    const double before = state.total();
    for (int l = 0; l < state.layers() && !control.out_of_time(state); ++l) {
      token_moves::improve_layer(state, control, l);
      if (slots) token_moves::improve_replicas(state, control, l);
    }
    ++result.sweeps;
    if (before - state.total() < 1e-4 * std::max(1.0, before)) break;
  }
  result.trajectory.emplace_back(0, result.start_cost);
  std::ptrdiff_t chosen = -1;
  double best = result.start_cost * tokens;
  const std::vector<TokenState::Step>& steps = state.trajectory();
  for (std::size_t i = 0; i < steps.size(); ++i) {
    result.trajectory.emplace_back(steps[i].moved, steps[i].cost / tokens);
    const bool fits = options.max_moves < 0 || steps[i].moved <= options.max_moves;
    if (fits && steps[i].cost < best - 1e-9 * std::max(1.0, best)) {
      best = steps[i].cost;
      chosen = static_cast<std::ptrdiff_t>(i);
    }
  }
  result.stopped_by_time = control.out_of_time(state);
  result.stopped_by_work_budget = control.over_work_budget(state);
  result.token_walks = state.walks();
  result.moves = state.moves();
  result.placement = state.replay(previous, chosen);
  result.cost = best / tokens;
  result.moved_slots = chosen < 0 ? 0 : steps[static_cast<std::size_t>(chosen)].moved;
  // The load limits as the chosen step keeps them.
  TokenState chosen_state(
      sample, topology, result.placement, options.scheme, options.sequence_length,
      options.max_load.empty()
          ? std::vector<std::int64_t>(static_cast<std::size_t>(sample.layers), kNoLoadLimit)
          : options.max_load);
  result.layers_over_limit = token_moves::layers_over_limit(chosen_state);
  control.log("rebalance: " + std::to_string(steps.size()) + " steps, " +
              std::to_string(result.moved_slots) + " slots moved, cost " +
              token_moves::format_cost(result.start_cost) + " -> " +
              token_moves::format_cost(result.cost));
  return result;
}

TokenSearchResult run(const TokenSample& sample, const Topology& topology, const Placement& start,
                      const TokenSearchOptions& options) {
  token_moves::SearchControl control(options);
  TokenState state(
      sample, topology, start, options.scheme, options.sequence_length,
      options.max_load.empty()
          ? std::vector<std::int64_t>(static_cast<std::size_t>(sample.layers), kNoLoadLimit)
          : options.max_load);
  const double tokens = static_cast<double>(sample.tokens);
  TokenSearchResult result(state.placement());
  result.start_cost = state.total() / tokens;
  token_moves::check_limits_reachable(state, control);
  token_moves::repair(state, control, result, true);
  // The context-coherent annealing counts GPUs, not hops, so it runs on one node only; the
  // owner-routed schemes' is exact on any topology.
  if (options.improve && options.anneal_swaps != 0 && state.gpus() > 1 &&
      !control.past_time_limit() && (topology.nodes() == 1 || state.from_owner()) &&
      !state.has_replicas()) {
    token_moves::anneal_layers(state, control);
  }
  if (options.improve) token_moves::realign_layers(state, control);
  if (options.redundant_total > 0) {
    token_moves::fill_replicas(state, control,
                               (state.experts() + options.redundant_total) / state.gpus());
    token_moves::repair(state, control, result, false);
  }
  control.log("token search: start " + token_moves::format_cost(result.start_cost) +
              ", after load repair and replicas " +
              token_moves::format_cost(state.total() / tokens));
  // The work budget is for the improvement steps: repair and replica filling are not cut.
  control.start_work_budget(state);
  // Narrow sweeps first: each evaluates only the best-estimated few swaps of a layer, so that
  // the estimates are refreshed after a few moves, which is where most of the gain lies; when a
  // sweep gains little, the next ones look kWiden times wider, up to full_tries.
  const int sweeps = options.improve ? options.max_sweeps : 0;
  const int widest = token_moves::full_tries(state.experts());
  int tries = std::min(token_moves::kNarrowTries, widest);
  for (int sweep = 0; sweep < sweeps && !control.out_of_time(state); ++sweep) {
    const double before = state.total();
    for (int l = 0; l < state.layers() && !control.out_of_time(state); ++l) {
      token_moves::improve_layer(state, control, l, 0, tries);
      if (options.redundant_total > 0) token_moves::improve_replicas(state, control, l);
    }
    ++result.sweeps;
    control.log("token search sweep " + std::to_string(sweep + 1) + " (" + std::to_string(tries) +
                " swaps a layer): cost " + token_moves::format_cost(state.total() / tokens) + ", " +
                std::to_string(state.moves()) + " moves");
    if (before - state.total() < 1e-4 * std::max(1.0, before)) {
      if (tries >= widest) break;
      tries = std::min(widest, tries * kWiden);
    }
  }
  if (options.improve) token_moves::kicks(state, control, result);
  result.stopped_by_time = control.out_of_time(state);
  result.stopped_by_work_budget = control.over_work_budget(state);
  result.token_walks = state.walks();
  result.moves = state.moves();
  result.placement = state.placement();
  result.cost = state.total() / tokens;
  result.layers_over_limit = token_moves::layers_over_limit(state);
  return result;
}

}  // namespace

TokenSearchResult token_search(const TokenSample& sample, const Topology& topology,
                               const Placement& start, const TokenSearchOptions& options) {
  if (start.layers() != sample.layers || start.experts() != sample.experts ||
      start.gpus() != topology.gpus()) {
    throw UsageError("token search: the start placement does not match the trace or topology");
  }
  if (!options.max_load.empty() && static_cast<int>(options.max_load.size()) != sample.layers) {
    throw UsageError("token search: one load limit per layer is needed");
  }
  TokenSearchOptions o = options;
  if (o.max_token_walks <= 0) o.max_token_walks = default_token_walks(sample);
  return o.from_previous ? rebalance(sample, topology, start, o) : run(sample, topology, start, o);
}

}  // namespace exflow::solvers
