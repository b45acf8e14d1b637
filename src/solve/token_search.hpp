// Local search on the tokens themselves (src/solve/token_search.cpp): improves a placement for
// the evaluator's exact cost under one scheme (context-coherent: top-k homes, combines and
// dispatches; standard, DeepEP normal and low-latency: the transfers from each token's owner;
// nearest replicas) under per-layer GPU load limits, and fills redundant expert slots.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"

namespace exflow {
class Topology;
class Trace;
}  // namespace exflow

namespace exflow::solvers {

// Tokens held in memory for the search: ids [layers, tokens, k], layer-major.
struct TokenSample {
  std::int64_t tokens = 0;
  int layers = 0;
  int k = 0;
  int experts = 0;
  std::vector<std::int32_t> ids;
  // [tokens] each sample token's position in the trace (the standard schemes' owners follow it).
  std::vector<std::int64_t> position;

  // All tokens when there are at most max_tokens, else max_tokens evenly spaced ones.
  static TokenSample from_trace(const Trace& trace, std::int64_t max_tokens);
  std::int32_t id(int layer, std::int64_t t, int col) const {
    return ids[(static_cast<std::size_t>(layer) * tokens + t) * k + col];
  }
};

struct TokenSearchOptions {
  // The scheme whose exact cost the search lowers; the standard schemes route each token from
  // its owner, GPU (position / sequence_length) mod G.
  Scheme scheme = Scheme::kContextCoherent;
  std::int64_t sequence_length = 1;
  // [layers]: the most token-expert assignments a GPU may serve at each layer (on the sample);
  // empty: no limit.
  std::vector<std::int64_t> max_load;
  // Replica slots per layer in all; each GPU's slots are filled up to (E + R)/G copies (the start
  // has none, and at most that many experts per GPU).
  int redundant_total = 0;
  double time_limit = 0;  // seconds; 0: none
  // Work budget in token walks (one token re-scored from one layer on); 0: default_token_walks.
  // Deterministic, unlike the time limit.
  std::int64_t max_token_walks = 0;
  bool improve = true;  // false: only repair the load and fill the replica slots
  int max_sweeps = 30;
  std::uint64_t seed = 1;          // the annealing's and the kicks' random swaps
  std::int64_t anneal_swaps = -1;  // per layer; -1: 100 * E * (E / G); 0: no annealing
  int kick_patience = -1;  // stop after this many kicks in a row without gain; -1: 2 * layers
  std::function<void(const std::string&)> log;
  // Rebalancing: the start is the placement the engine runs now. The search records every step
  // (cost, slots moved against the start), improves greedily from the largest gains down (no
  // annealing, no kicks), and returns the best step that moves at most max_moves slots (-1: the
  // last step).
  bool from_previous = false;
  std::int64_t max_moves = -1;
};

struct TokenSearchResult {
  explicit TokenSearchResult(Placement p) : placement(std::move(p)) {}
  Placement placement;
  double start_cost = 0;  // per token of the sample, the start placement's exact cost
  double cost = 0;        // per token of the sample, the result's
  int sweeps = 0;
  std::int64_t moves = 0;
  int layers_reset = 0;  // layers whose load could not be repaired by swaps and were rebalanced
  int layers_over_limit = 0;            // layers still above their load limit (only possible with
                                        // replicas, whose copies the balancer cannot move)
  int kicks = 0;                        // perturbations tried
  int kicks_kept = 0;                   // ... that lowered the cost
  bool stopped_by_time = false;         // by the time limit or the work budget
  bool stopped_by_work_budget = false;  // ... and it was the work budget
  std::int64_t token_walks = 0;
  // from_previous: (slots moved, cost per token) after each step of the search, the start first;
  // the result is the cheapest step within max_moves.
  std::vector<std::pair<std::int64_t, double>> trajectory;
  std::int64_t moved_slots = 0;
};

// The default work budget of the improvement steps: two token walks per token-expert assignment
// of the sample (tokens x layers x k), at least 16 M and at most 100 M, so that the search on a
// DeepSeek-V3-shaped sample (20 000 tokens, 58 layers, top-8) takes seconds.
inline constexpr double kWalksPerAssignment = 2;
inline constexpr double kLeastDefaultWalks = 16e6;
inline constexpr double kMostDefaultWalks = 1e8;
std::int64_t default_token_walks(const TokenSample& sample);

// The start must be hard-balanced or relaxed as the caller wants kept: moves are swaps and
// replica changes, which keep every GPU's slot count. Throws UsageError if a load limit is
// below what the load balancer reaches on some layer, naming the smallest ratio it found.
TokenSearchResult token_search(const TokenSample& sample, const Topology& topology,
                               const Placement& start, const TokenSearchOptions& options);

}  // namespace exflow::solvers
