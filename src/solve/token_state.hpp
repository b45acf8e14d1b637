// The token search's state (src/solve/token_state.cpp): a placement as the moves see it, every
// sampled token's route under it, the GPU loads that follows from, and the primitives that
// change the placement and re-score exactly the tokens a change touches. The moves themselves
// live in src/solve/token_{repair,replicas,sweeps,anneal,kicks}.cpp (src/solve/token_moves.hpp);
// src/solve/token_search.cpp runs them.
//
// Why the deltas are exact: a token's cost splits into per-layer terms c_m (dispatch from
// h_{m-1} into layer m plus combine into h_m), and c_m depends only on h_{m-1} and layer m's
// copies. A move changes the copies of one layer l for the tokens routed to the experts it
// touches; for each such token the walk recomputes c_l, c_{l+1}, ... until its home path meets
// the stored one again (h'_{m-1} = h_{m-1} for m > l), after which nothing differs. Without
// replicas this stops at l + 1 (homes beyond l do not depend on where the token came from).
// The standard schemes (standard, DeepEP normal and low-latency) route every layer from the
// token's owner: the state keeps the owner as every layer's "home", so c_m depends on layer m's
// copies alone and the walk always stops at l + 1.
//
// Every routing rule (copy choice, layer-0 start, H_l, the home, the layer's transfers) is the
// routing rulebook's (src/core/routing.hpp).
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "core/routing.hpp"
#include "exflow/placement.hpp"
#include "solve/token_search.hpp"

namespace exflow {
class Topology;
}  // namespace exflow

namespace exflow::solvers {

// A layer's load limit when it has none.
inline constexpr std::int64_t kNoLoadLimit = std::numeric_limits<std::int64_t>::max();

class TokenState {
 public:
  // cap: [L] each layer's load limit (the most token-expert assignments a GPU may serve), or
  // kNoLoadLimit. Routes every token of the sample under `start`.
  // The standard schemes' owners: GPU (position / sequence_length) mod G.
  TokenState(const TokenSample& sample, const Topology& topology, const Placement& start,
             Scheme scheme, std::int64_t sequence_length, std::vector<std::int64_t> cap);

  // ---- sizes and inputs -----------------------------------------------------------------------
  int layers() const { return L_; }
  int experts() const { return E_; }
  int gpus() const { return G_; }
  int k() const { return k_; }
  std::int64_t tokens() const { return T_; }
  const TokenSample& sample() const { return s_; }
  const routing::HopTable& hops() const { return hops_; }
  Scheme scheme() const { return scheme_; }
  // Whether tokens route from their owners (every scheme but the context-coherent one).
  bool from_owner() const { return scheme_ != Scheme::kContextCoherent; }

  // ---- placement ------------------------------------------------------------------------------
  // The copy each expert keeps in swaps.
  int primary(int l, int e) const { return primary_[index_le(l, e)]; }
  std::span<const int> primaries(int l) const {  // [E]
    return std::span<const int>(primary_).subspan(index_le(l, 0), static_cast<std::size_t>(E_));
  }
  // GPUs of the replicas of expert e at layer l, in the order they were added.
  std::span<const int> replicas(int l, int e) const { return extra_[index_le(l, e)]; }
  // Experts whose primary is on GPU g at layer l.
  const std::vector<int>& members(int l, int g) const { return members_[index_lg(l, g)]; }
  // Experts with a replica on GPU g at layer l: its replica slots.
  const std::vector<int>& slots(int l, int g) const { return slots_[index_lg(l, g)]; }
  bool has_copy(int l, int e, int g) const;
  bool has_replicas() const;
  Placement placement() const;

  // ---- tokens ---------------------------------------------------------------------------------
  // h_l of token t.
  int home(int l, std::int64_t t) const { return home_[index_lt(l, t)]; }
  std::span<const int> homes(int l) const {  // [T]
    return std::span<const int>(home_).subspan(index_lt(l, 0), static_cast<std::size_t>(T_));
  }
  // [k] the GPU of the copy each column of token t uses at layer l.
  std::span<const int> choices(int l, std::int64_t t) const {
    return std::span<const int>(choice_).subspan(index_lt(l, t) * static_cast<std::size_t>(k_),
                                                 static_cast<std::size_t>(k_));
  }
  // Where token t starts (layer 0's copy of its column-0 expert).
  int start_gpu(std::int64_t t) const;
  // Where token t is when it picks its copies at layer l: its owner (standard schemes), h_{l-1},
  // or at layer 0 its start.
  int entry(int l, std::int64_t t) const {
    return from_owner() ? owner_[static_cast<std::size_t>(t)]
                        : (l > 0 ? home(l - 1, t) : start_gpu(t));
  }
  // [T] entry(l, t) for every token, or nullptr at layer 0 of the context-coherent scheme.
  const int* entries(int l) const {
    return from_owner() ? owner_.data() : (l > 0 ? homes(l - 1).data() : nullptr);
  }
  // Layer m of token t for a token on GPU `at` (entry(m, t)): fills copies_used [k] with the
  // copies it uses and `gpus` with H_m, sets `home` to h_m (the owner in the standard schemes)
  // and returns the layer's cost under the scheme.
  double layer_cost(int m, std::int64_t t, int at, routing::TokenGpus& gpus,
                    std::vector<int>& copies_used, int& home) const;
  // The cost of all tokens of the sample.
  double total() const { return total_; }

  // Tokens routed to expert e at layer l (each once), ascending.
  std::span<const std::int32_t> tokens_of(int l, int e) const {
    const std::size_t i = index_le(l, e);
    return std::span<const std::int32_t>(occ_token_)
        .subspan(occ_start_[i], occ_start_[i + 1] - occ_start_[i]);
  }
  // [E] token-expert assignments of each expert at layer l.
  std::span<const std::int64_t> expert_loads(int l) const {
    return std::span<const std::int64_t>(expert_load_)
        .subspan(index_le(l, 0), static_cast<std::size_t>(E_));
  }

  // ---- loads ----------------------------------------------------------------------------------
  // Token-expert assignments GPU g serves at layer l.
  std::int64_t load(int l, int g) const { return load_[index_lg(l, g)]; }
  std::int64_t cap(int l) const { return cap_[static_cast<std::size_t>(l)]; }
  // Whether the pending load changes keep every limit (a GPU already over its limit may not
  // grow).
  bool within_limits() const;
  // How much the pending load changes add to the load above the limits.
  std::int64_t added_excess() const;
  // Layer l's load above its limit, pending changes included.
  std::int64_t excess(int l) const;
  void clear_dload();

  // ---- exact evaluation -----------------------------------------------------------------------
  // Tokens routed to a or b (b < 0: only a) at layer l become the affected tokens.
  void collect(int l, int a, int b);
  // Cost change of the placement as it now is for the affected tokens, whose routes from layer
  // l on were computed under the placement before; the load changes become pending.
  double evaluate(int l);
  // Stores the affected tokens' new routes and loads: one move.
  void commit(int l);
  // Routes every token afresh.
  void rebuild();
  // Sets only layer l's homes from layer l-1's under the current placement; costs, choices and
  // loads stay stale until rebuild() (for a pass that rebuilds afterwards).
  void rehome_layer(int l);
  std::int64_t moves() const { return moves_; }
  // Tokens walked by evaluations and commits.
  std::int64_t walks() const { return walks_; }

  // ---- swaps ----------------------------------------------------------------------------------
  // Exchanges the primaries of a and b at layer l; routes stay as they were.
  void swap_primaries(int l, int a, int b);
  bool can_swap(int l, int a, int b) const;
  // Exact delta of swapping a and b at layer l (the placement is left unchanged); the load
  // changes are pending.
  double try_swap(int l, int a, int b);
  void do_swap(int l, int a, int b);
  // Records every do_swap from here until undo_journal() or stop_journal().
  void start_journal();
  void stop_journal() { journaling_ = false; }
  // Undoes the recorded swaps in reverse order (the state is a function of the placement, so
  // undoing restores it exactly).
  void undo_journal();
  // Gives layer l the primaries gpu_of [E]; routes stay as they were until rebuild().
  void assign_layer(int l, std::span<const int> gpu_of);

  // ---- moves against a previous placement
  // -------------------------------------------------------- From here on, every commit and rebuild
  // appends a trajectory step: the placement's changes since the last step, and then the cost and
  // the slots moved against the state's placement now (the previous placement). A slot moved is a
  // copy on a GPU that did not hold that expert before: what an engine must load.
  void track_moves();
  struct Change {
    int layer;
    int gpu;     // the expert's new GPU (primary) or the slot's GPU (replica)
    int expert;  // the expert whose primary moved, or the slot's new expert
    int slot;    // -1: a primary; else the replica slot's index on `gpu`
  };
  struct Step {
    std::size_t changes_end;  // changes [0, changes_end) lead here
    double cost;              // total() here
    std::int64_t moved;       // slots moved here
  };
  const std::vector<Step>& trajectory() const { return steps_; }
  std::int64_t moved() const { return moved_total_; }
  // The placement after step i (-1: the previous one): `previous` with the logged changes applied.
  Placement replay(const Placement& previous, std::ptrdiff_t step) const;

  // ---- replica slots --------------------------------------------------------------------------
  // Re-aims replica slot i of GPU g at layer l at expert e; routes stay as they were.
  void set_slot(int l, int g, std::size_t i, int e);
  void add_copy(int l, int e, int g);
  // Undoes add_copy(l, e, g) as the last change to those lists.
  void remove_last_copy(int l, int e, int g);

 private:
  std::size_t index_le(int l, int e) const {
    return static_cast<std::size_t>(l) * static_cast<std::size_t>(E_) + static_cast<std::size_t>(e);
  }
  std::size_t index_lg(int l, int g) const {
    return static_cast<std::size_t>(l) * static_cast<std::size_t>(G_) + static_cast<std::size_t>(g);
  }
  std::size_t index_lt(int l, std::int64_t t) const {
    return static_cast<std::size_t>(l) * static_cast<std::size_t>(T_) + static_cast<std::size_t>(t);
  }

  void build_occurrences();
  // Logs layer l's changes against the mirror and recounts its moved slots.
  void log_layer(int l);
  void log_step();
  double walk(std::int64_t t, int l, bool write);
  void touch(int m, int g, int d);
  void apply_dload();

  const TokenSample& s_;
  const routing::HopTable hops_;
  const Scheme scheme_;
  std::vector<int> owner_;  // [T] the standard schemes' owner of each token
  const int L_, E_, G_, k_;
  const std::int64_t T_;

  std::vector<int> primary_;               // [L, E] the copy each expert keeps in swaps
  std::vector<std::vector<int>> extra_;    // [L, E] GPUs of its replicas
  std::vector<std::vector<int>> members_;  // [L, G] experts whose primary is on the GPU
  std::vector<std::vector<int>> slots_;    // [L, G] experts with a replica on the GPU
  std::vector<std::int64_t> cap_;          // [L]
  std::vector<std::int64_t> expert_load_;  // [L, E]
  std::vector<std::size_t> occ_start_;     // [L * E + 1]
  std::vector<std::int32_t> occ_token_;

  std::vector<int> home_;           // [L, T]
  std::vector<double> cost_;        // [L, T]
  std::vector<int> choice_;         // [L, T, k] GPU of the copy each column uses
  std::vector<std::int64_t> load_;  // [L, G]
  double total_ = 0;
  std::int64_t moves_ = 0;
  std::int64_t walks_ = 0;

  std::vector<std::int64_t> dload_;  // [L, G] pending load changes
  std::vector<char> listed_;         // [L, G] whether touched_ lists the entry
  std::vector<int> touched_;         // entries of dload_ that may be non-zero, each once
  std::vector<std::int32_t> affected_;
  struct Swap {
    int l, a, b;
  };
  std::vector<Swap> journal_;
  bool journaling_ = false;

  // Move tracking (track_moves): the previous placement's GPUs of each (layer, expert) [L, E],
  // the placement as last logged, moved slots per layer, the change log and its steps.
  bool tracking_ = false;
  std::vector<std::vector<int>> origin_;
  std::vector<int> mirror_primary_;
  std::vector<std::vector<int>> mirror_slots_;
  std::vector<std::int64_t> moved_;
  std::int64_t moved_total_ = 0;
  std::vector<Change> changes_;
  std::vector<Step> steps_;

  // Scratch of the walks: H_m and the copies used [k] of the token being walked.
  routing::TokenGpus gpus_;
  std::vector<int> copies_used_;
};

}  // namespace exflow::solvers
