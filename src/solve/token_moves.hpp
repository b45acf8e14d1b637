// The token search's moves, each module on the shared TokenState (src/solve/token_state.hpp);
// src/solve/token_search.cpp runs them in order.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "solve/token_search.hpp"
#include "solve/token_state.hpp"

namespace exflow::solvers::token_moves {

// What the modules share besides the state: the options, the clock and the work budget, the
// log.
class SearchControl {
 public:
  using Clock = std::chrono::steady_clock;

  explicit SearchControl(const TokenSearchOptions& options)
      : options_(options),
        started_(Clock::now()),
        walk_budget_(options.max_token_walks > 0 ? options.max_token_walks
                                                 : std::int64_t{100'000'000}) {}

  const TokenSearchOptions& options() const { return options_; }
  // The work budget is for the improvement steps: it counts token walks from here on.
  void start_work_budget(const TokenState& state) { walks_before_ = state.walks(); }
  // The time limit, or the work budget: token walks by evaluations and commits, which makes
  // the stopping point, and so the result, the same on every machine.
  bool out_of_time(const TokenState& state) const {
    return over_work_budget(state) || past_time_limit();
  }
  // The time limit alone: the steps the work budget does not cut (load repair, annealing,
  // replica filling) take their shortcuts past it, so that the limit holds.
  bool past_time_limit() const {
    return options_.time_limit > 0 && elapsed() > options_.time_limit;
  }
  bool over_work_budget(const TokenState& state) const {
    return state.walks() - walks_before_ > walk_budget_;
  }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - started_).count(); }
  void log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

 private:
  const TokenSearchOptions& options_;
  const Clock::time_point started_;
  const std::int64_t walk_budget_;
  std::int64_t walks_before_ = 0;  // walks when the improvement steps began
};

// A cost per token as the log shows it.
inline std::string format_cost(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

// ---- step 1, load repair (src/solve/token_repair.cpp) -------------------------------------------
// Throws UsageError if some layer's limit is below what the load balancer reaches.
void check_limits_reachable(const TokenState& state, const SearchControl& control);
// allow_reset: a layer the swaps cannot repair is rebalanced by load alone (only before
// replicas exist: the balanced layout knows nothing of them). Past the time limit no more swaps
// are tried: with allow_reset the layers still over their limit are rebalanced by load alone,
// else they stay over it.
void repair(TokenState& state, const SearchControl& control, TokenSearchResult& result,
            bool allow_reset);
int layers_over_limit(TokenState& state);

// ---- step 1b, simulated annealing of each layer's grouping (src/solve/token_anneal.cpp) ---------
void anneal_layers(TokenState& state, const SearchControl& control);

// ---- step 1c, re-alignment to the homes (src/solve/token_align.cpp) ---------------------------
// Context-coherent scheme without replica slots: relabels every layer's GPUs by the topology
// automorphisms that best align each layer's tokens with their previous homes; keeps the result
// only if the exact cost fell. Returns whether it did.
bool realign_layers(TokenState& state, const SearchControl& control);

// ---- steps 2 and 3, replicas (src/solve/token_replicas.cpp) -------------------------------------
// Fills every GPU's free slots: up to `slots_per_gpu` experts and replicas per GPU and layer.
// Past the time limit each slot takes the most requested expert without comparing candidates.
void fill_replicas(TokenState& state, const SearchControl& control, int slots_per_gpu);
// min_gain: accept only changes that lower the cost by more than this.
void improve_replicas(TokenState& state, const SearchControl& control, int l, double min_gain = 0);
// demand[g * E + e]: tokens arriving at layer l on GPU g that use expert e from another GPU.
void replica_demand(const TokenState& state, int l, std::vector<std::int64_t>& demand);
// Experts without a copy on g, most requested first (at most n).
std::vector<int> slot_candidates(const TokenState& state, int l, int g,
                                 const std::vector<std::int64_t>& demand, int n);

struct SlotChoice {
  int expert = -1;
  double delta = 0;
  std::int64_t excess = 0;  // the layer's load excess after the change
  bool within_limits = true;
};
// Scores re-aiming replica slot i of GPU g at layer l at each candidate expert (the slot is
// restored after each); returns the candidate `better(candidate, best so far)` prefers, or
// expert -1.
SlotChoice best_slot_expert(
    TokenState& state, int l, int g, std::size_t i, const std::vector<int>& experts,
    const std::function<bool(const SlotChoice&, const SlotChoice&)>& better);
// Re-aims replica slot i of GPU g at layer l at expert e: one move.
void aim_slot(TokenState& state, int l, int g, std::size_t i, int e);

// ---- step 3, swaps (src/solve/token_sweeps.cpp) -------------------------------------------------
// The most swaps one call evaluates exactly by default: 4 per expert.
inline int full_tries(int experts) {
  return 4 * experts;
}
// The swaps a narrow call evaluates (the first sweeps, each kick): the best-estimated few, where
// most of the gain lies.
inline constexpr int kNarrowTries = 32;
// min_gain: accept only swaps that lower the cost by more than this; max_tries: evaluate at most
// this many swaps exactly (0: full_tries).
void improve_layer(TokenState& state, const SearchControl& control, int l, double min_gain = 0,
                   int max_tries = 0);

// ---- step 4, kicks (src/solve/token_kicks.cpp) --------------------------------------------------
void kicks(TokenState& state, const SearchControl& control, TokenSearchResult& result);

}  // namespace exflow::solvers::token_moves
