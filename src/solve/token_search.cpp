// Token-level local search for the exact context-coherent cost.
//
// What it optimises: the evaluator's cost (include/exflow/evaluate.hpp) on a sample of tokens,
// i.e. for top-k traces the combines into each token's home and the dispatches from it, with
// tokens using the nearest copy of a replicated expert; subject to a per-layer limit on the
// token-expert assignments any GPU serves. The pairwise affinity graph the other solvers see
// counts k*k pairs per token and cannot tell that two experts on one GPU cost one transfer, not
// two; this search sees every token.
//
// Why the deltas are exact: a token's cost splits into per-layer terms c_m (dispatch from
// h_{m-1} into layer m plus combine into h_m), and c_m depends only on h_{m-1} and layer m's
// copies. A move changes the copies of one layer l for the tokens routed to the experts it
// touches; for each such token the walk recomputes c_l, c_{l+1}, ... until its home path meets
// the stored one again (h'_{m-1} = h_{m-1} for m > l), after which nothing differs. Without
// replicas this stops at l + 1 (homes beyond l do not depend on where the token came from).
//
// Steps:
//   1. Repair: on each layer over its load limit, apply the swap (busiest GPU vs the least
//      loaded) that most reduces the excess, cheapest first; if swaps stall, rebalance the layer
//      by load alone (largest-first, or vanilla if that is better).
//   2. Fill replica slots: for each layer and GPU, the expert most requested by tokens arriving
//      on that GPU without a local copy, taking the exact delta of the best few candidates.
//   3. Sweeps: for each layer and expert, try swapping it with each expert of the two GPUs its
//      tokens pull it towards most (where they come from, their co-selected experts, where
//      they go next); re-aim each replica slot at the most requested experts. Accept exact
//      improvements that keep every load limit. Stop when a sweep gains under 1e-4 relative,
//      after max_sweeps, or at the time limit.
//   4. Kicks (iterated local search): two random swaps on a random layer, step 3 on it and its
//      neighbours, kept only if the cost fell; until `kick_patience` kicks in a row fail.
#include "solve/token_search.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/splitmix64.hpp"
#include "exflow/error.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "solve/load_balance.hpp"

namespace exflow::solvers {

TokenSample TokenSample::from_trace(const Trace& trace, std::int64_t max_tokens) {
  TokenSample s;
  const std::int64_t T = trace.tokens();
  s.tokens = std::min(T, std::max<std::int64_t>(1, max_tokens));
  s.layers = trace.layers();
  s.k = trace.k();
  s.experts = trace.experts();
  s.ids.resize(static_cast<std::size_t>(s.tokens) * s.layers * s.k);
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

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kNoLimit = std::numeric_limits<std::int64_t>::max();

class Search {
 public:
  Search(const TokenSample& s, const Topology& topology, const Placement& start,
         const TokenSearchOptions& options)
      : s_(s),
        topo_(topology),
        options_(options),
        L_(s.layers),
        E_(s.experts),
        G_(topology.gpus()),
        k_(s.k),
        T_(s.tokens),
        started_(Clock::now()) {
    walk_budget_ =
        options.max_token_walks > 0 ? options.max_token_walks : std::int64_t{100'000'000};
    node_of_.resize(static_cast<std::size_t>(G_));
    for (int g = 0; g < G_; ++g) node_of_[static_cast<std::size_t>(g)] = topology.node_of(g);
    primary_ = start.gpu_of();
    extra_.assign(static_cast<std::size_t>(L_) * E_, {});
    slots_.assign(static_cast<std::size_t>(L_) * G_, {});
    for (const Replica& r : start.replicas()) add_copy(r.layer, r.expert, r.gpu);
    members_.assign(static_cast<std::size_t>(L_) * G_, {});
    for (int l = 0; l < L_; ++l) {
      for (int e = 0; e < E_; ++e) members(l, primary(l, e)).push_back(e);
    }
    cap_ = options.max_load.empty()
               ? std::vector<std::int64_t>(static_cast<std::size_t>(L_), kNoLimit)
               : options.max_load;
    build_occurrences();
    home_.assign(static_cast<std::size_t>(L_) * T_, 0);
    cost_.assign(static_cast<std::size_t>(L_) * T_, 0.0);
    choice_.assign(static_cast<std::size_t>(L_) * T_ * k_, 0);
    dload_.assign(static_cast<std::size_t>(L_) * G_, 0);
    listed_.assign(static_cast<std::size_t>(L_) * G_, 0);
    buf_.resize(static_cast<std::size_t>(k_));
    distinct_.resize(static_cast<std::size_t>(k_));
    mult_.resize(static_cast<std::size_t>(k_));
    rebuild();
  }

  TokenSearchResult run() {
    TokenSearchResult result(placement());
    result.start_cost = total_ / static_cast<double>(T_);
    check_limits_reachable();
    repair(result, true);
    // The annealing counts GPUs, not hops, so it runs on one node only.
    if (options_.improve && options_.anneal_swaps != 0 && G_ > 1 && topo_.nodes() == 1 &&
        !has_replicas()) {
      anneal_layers();
    }
    if (options_.redundant > 0) {
      fill_replicas();
      repair(result, false);
    }
    log("token search: start " + fmt(result.start_cost) + ", after load repair and replicas " +
        fmt(total_ / static_cast<double>(T_)));
    // The work budget is for the improvement steps: repair and replica filling are not cut.
    walks_before_ = walks_;
    const int sweeps = options_.improve ? options_.max_sweeps : 0;
    for (int sweep = 0; sweep < sweeps && !out_of_time(); ++sweep) {
      const double before = total_;
      for (int l = 0; l < L_ && !out_of_time(); ++l) {
        improve_layer(l);
        if (options_.redundant > 0) improve_replicas(l);
      }
      ++result.sweeps;
      log("token search sweep " + std::to_string(sweep + 1) + ": cost " +
          fmt(total_ / static_cast<double>(T_)) + ", " + std::to_string(moves_) + " moves");
      if (before - total_ < 1e-4 * std::max(1.0, before)) break;
    }
    if (options_.improve) kicks(result);
    result.stopped_by_time = out_of_time();
    result.token_walks = walks_;
    result.moves = moves_;
    result.placement = placement();
    result.cost = total_ / static_cast<double>(T_);
    result.layers_over_limit = layers_over_limit();

    return result;
  }

 private:
  // ---- structure --------------------------------------------------------------------------
  int& primary(int l, int e) { return primary_[static_cast<std::size_t>(l) * E_ + e]; }
  std::vector<int>& extra(int l, int e) { return extra_[static_cast<std::size_t>(l) * E_ + e]; }
  std::vector<int>& members(int l, int g) { return members_[static_cast<std::size_t>(l) * G_ + g]; }
  std::vector<int>& slots(int l, int g) { return slots_[static_cast<std::size_t>(l) * G_ + g]; }
  std::int64_t& load(int l, int g) { return load_[static_cast<std::size_t>(l) * G_ + g]; }

  void add_copy(int l, int e, int g) {
    extra(l, e).push_back(g);
    slots(l, g).push_back(e);
  }
  bool has_copy(int l, int e, int g) {
    if (primary(l, e) == g) return true;
    const auto& x = extra(l, e);
    return std::find(x.begin(), x.end(), g) != x.end();
  }

  Placement placement() const {
    Placement p(L_, E_, G_, primary_);
    for (int l = 0; l < L_; ++l) {
      for (int g = 0; g < G_; ++g) {
        for (int e : slots_[static_cast<std::size_t>(l) * G_ + g]) p.add_replica(l, e, g);
      }
    }
    return p;
  }

  int hop(int a, int b) const {
    return (a != b) +
           (node_of_[static_cast<std::size_t>(a)] != node_of_[static_cast<std::size_t>(b)]);
  }
  double hop_cost(int a, int b) const {
    const int h = hop(a, b);
    return h == 0 ? 0.0 : (h == 1 ? topo_.intra_cost() : topo_.inter_cost());
  }

  // The copy of (l, e) a token on GPU `at` uses: its own, else the cheapest, ties lowest id.
  int nearest(int l, int e, int at) {
    int best = primary(l, e);
    const auto& x = extra(l, e);
    if (x.empty() || best == at) return best;
    double best_cost = hop_cost(at, best);
    for (int g : x) {
      if (g == at) return g;
      double c = hop_cost(at, g);
      if (c < best_cost || (c == best_cost && g < best)) {
        best = g;
        best_cost = c;
      }
    }
    return best;
  }
  int first_copy(int l, int e) {
    int best = primary(l, e);
    for (int g : extra(l, e)) best = std::min(best, g);
    return best;
  }

  // ---- per token ------------------------------------------------------------------------------
  // Layer m of token t for a token on GPU `at` (its previous home, or for m = 0 where it
  // starts): fills buf_ with the copies used and returns the layer's cost; `home` receives h_m.
  double layer_cost(int m, std::int64_t t, int at, int& home) {
    const std::int32_t* ids = s_.ids.data() + (static_cast<std::size_t>(m) * T_ + t) * k_;
    int n = 0;
    for (int c = 0; c < k_; ++c) {
      int g = nearest(m, ids[c], at);
      buf_[static_cast<std::size_t>(c)] = g;
      int j = 0;
      while (j < n && distinct_[static_cast<std::size_t>(j)] != g) ++j;
      if (j == n) {
        distinct_[static_cast<std::size_t>(n)] = g;
        mult_[static_cast<std::size_t>(n)] = 0;
        ++n;
      }
      ++mult_[static_cast<std::size_t>(j)];
    }
    int best = 0;
    for (int j = 0; j < n; ++j) best = std::max(best, mult_[static_cast<std::size_t>(j)]);
    int h = distinct_[0];
    if (mult_[0] != best) {
      h = G_;
      for (int j = 1; j < n; ++j) {
        if (mult_[static_cast<std::size_t>(j)] == best)
          h = std::min(h, distinct_[static_cast<std::size_t>(j)]);
      }
    }
    double cost = 0;
    for (int j = 0; j < n; ++j) {
      const int g = distinct_[static_cast<std::size_t>(j)];
      if (m > 0 && g != at) cost += hop_cost(at, g);
      if (g != h) cost += hop_cost(g, h);
    }
    home = h;
    return cost;
  }

  int start_gpu(std::int64_t t) { return first_copy(0, s_.id(0, t, 0)); }

  // Re-walks token t from layer l under the current structure. Accumulates the load changes in
  // dload_ and returns the cost change; with write, stores the new state.
  double walk(std::int64_t t, int l, bool write) {
    const std::size_t T = static_cast<std::size_t>(T_);
    int at_new = l > 0 ? home_[static_cast<std::size_t>(l - 1) * T + t] : start_gpu(t);
    int at_old = at_new;
    double delta = 0;
    for (int m = l; m < L_; ++m) {
      if (m > l && at_new == at_old) break;
      const std::size_t i = static_cast<std::size_t>(m) * T + t;
      int h = 0;
      const double c = layer_cost(m, t, at_new, h);
      delta += c - cost_[i];
      int* stored = choice_.data() + i * k_;
      for (int col = 0; col < k_; ++col) {
        const int g = buf_[static_cast<std::size_t>(col)];
        if (g == stored[col]) continue;
        touch(m, stored[col], -1);
        touch(m, g, +1);
        if (write) stored[col] = g;
      }
      at_old = home_[i];
      at_new = h;
      if (write) {
        home_[i] = h;
        cost_[i] = c;
      }
    }
    return delta;
  }

  void touch(int m, int g, int d) {
    const std::size_t i = static_cast<std::size_t>(m) * G_ + g;
    if (!listed_[i]) {
      listed_[i] = 1;
      touched_.push_back(static_cast<int>(i));
    }
    dload_[i] += d;
  }
  void clear_dload() {
    for (int i : touched_) {
      dload_[static_cast<std::size_t>(i)] = 0;
      listed_[static_cast<std::size_t>(i)] = 0;
    }
    touched_.clear();
  }
  // Whether the pending load changes keep every limit (a GPU already over its limit may not
  // grow).
  bool within_limits() const {
    for (int i : touched_) {
      const std::int64_t d = dload_[static_cast<std::size_t>(i)];
      if (d > 0 &&
          load_[static_cast<std::size_t>(i)] + d > cap_[static_cast<std::size_t>(i / G_)]) {
        return false;
      }
    }
    return true;
  }
  // How much the pending load changes add to the load above the limits.
  std::int64_t added_excess() const {
    std::int64_t x = 0;
    for (int i : touched_) {
      const std::int64_t cap = cap_[static_cast<std::size_t>(i / G_)];
      const std::int64_t before = load_[static_cast<std::size_t>(i)];
      const std::int64_t after = before + dload_[static_cast<std::size_t>(i)];
      x += std::max<std::int64_t>(0, after - cap) - std::max<std::int64_t>(0, before - cap);
    }
    return x;
  }
  void apply_dload() {
    for (int i : touched_)
      load_[static_cast<std::size_t>(i)] += dload_[static_cast<std::size_t>(i)];
    clear_dload();
  }

  void rebuild() {
    load_.assign(static_cast<std::size_t>(L_) * G_, 0);
    total_ = 0;
    const std::size_t T = static_cast<std::size_t>(T_);
    for (std::int64_t t = 0; t < T_; ++t) {
      int at = start_gpu(t);
      for (int m = 0; m < L_; ++m) {
        const std::size_t i = static_cast<std::size_t>(m) * T + t;
        int h = 0;
        cost_[i] = layer_cost(m, t, at, h);
        home_[i] = h;
        total_ += cost_[i];
        for (int c = 0; c < k_; ++c) {
          choice_[i * k_ + c] = buf_[static_cast<std::size_t>(c)];
          ++load(m, buf_[static_cast<std::size_t>(c)]);
        }
        at = h;
      }
    }
  }

  // Tokens routed to expert e at layer l (each once), ascending.
  void build_occurrences() {
    const std::size_t n = static_cast<std::size_t>(L_) * E_;
    occ_start_.assign(n + 1, 0);
    expert_load_.assign(n, 0);
    for (int l = 0; l < L_; ++l) {
      for (std::int64_t t = 0; t < T_; ++t) {
        for (int c = 0; c < k_; ++c) {
          const int e = s_.id(l, t, c);
          ++expert_load_[static_cast<std::size_t>(l) * E_ + e];
          bool repeat = false;
          for (int d = 0; d < c; ++d) repeat |= s_.id(l, t, d) == e;
          if (!repeat) ++occ_start_[static_cast<std::size_t>(l) * E_ + e + 1];
        }
      }
    }
    for (std::size_t i = 0; i < n; ++i) occ_start_[i + 1] += occ_start_[i];
    occ_token_.resize(occ_start_[n]);
    std::vector<std::size_t> fill(occ_start_.begin(), occ_start_.end() - 1);
    for (int l = 0; l < L_; ++l) {
      for (std::int64_t t = 0; t < T_; ++t) {
        for (int c = 0; c < k_; ++c) {
          const int e = s_.id(l, t, c);
          bool repeat = false;
          for (int d = 0; d < c; ++d) repeat |= s_.id(l, t, d) == e;
          if (!repeat)
            occ_token_[fill[static_cast<std::size_t>(l) * E_ + e]++] = static_cast<std::int32_t>(t);
        }
      }
    }
  }

  // Tokens routed to a or b (b < 0: only a) at layer l, ascending, into affected_.
  void collect(int l, int a, int b) {
    affected_.clear();
    const std::size_t ia = static_cast<std::size_t>(l) * E_ + a;
    const std::int32_t* pa = occ_token_.data() + occ_start_[ia];
    const std::int32_t* ea = occ_token_.data() + occ_start_[ia + 1];
    if (b < 0) {
      affected_.assign(pa, ea);
      return;
    }
    const std::size_t ib = static_cast<std::size_t>(l) * E_ + b;
    const std::int32_t* pb = occ_token_.data() + occ_start_[ib];
    const std::int32_t* eb = occ_token_.data() + occ_start_[ib + 1];
    std::set_union(pa, ea, pb, eb, std::back_inserter(affected_));
  }

  // Cost change of the structure as it now is for the affected tokens; fills dload_.
  double evaluate(int l) {
    clear_dload();
    walks_ += static_cast<std::int64_t>(affected_.size());
    double delta = 0;
    for (std::int32_t t : affected_) delta += walk(t, l, false);
    return delta;
  }
  void commit(int l) {
    clear_dload();
    walks_ += static_cast<std::int64_t>(affected_.size());
    double delta = 0;
    for (std::int32_t t : affected_) delta += walk(t, l, true);
    apply_dload();
    total_ += delta;
    ++moves_;
  }

  // ---- moves --------------------------------------------------------------------------------
  void swap_primaries(int l, int a, int b) {
    int& ga = primary(l, a);
    int& gb = primary(l, b);
    auto& ma = members(l, ga);
    auto& mb = members(l, gb);
    *std::find(ma.begin(), ma.end(), a) = b;
    *std::find(mb.begin(), mb.end(), b) = a;
    std::swap(ga, gb);
  }
  bool can_swap(int l, int a, int b) {
    const int ga = primary(l, a);
    const int gb = primary(l, b);
    return ga != gb && !has_copy(l, a, gb) && !has_copy(l, b, ga);
  }
  // Exact delta of swapping a and b at layer l (structure left unchanged); dload_ holds the
  // load changes.
  double try_swap(int l, int a, int b) {
    swap_primaries(l, a, b);
    collect(l, a, b);
    const double delta = evaluate(l);
    swap_primaries(l, a, b);
    return delta;
  }
  void do_swap(int l, int a, int b) {
    swap_primaries(l, a, b);
    collect(l, a, b);
    commit(l);
    if (journaling_) journal_.push_back({l, a, b});
  }

  // Step 4, iterated local search: shake one layer with two random swaps, re-optimise it and
  // its neighbours, keep the result if the cost fell, else undo every swap in reverse order
  // (the state is a function of the placement, so undoing restores it exactly).
  void kicks(TokenSearchResult& result) {
    SplitMix64 rng(options_.seed);
    const int patience = options_.kick_patience >= 0 ? options_.kick_patience : 2 * L_;
    int since_better = 0;
    while (since_better < patience && !out_of_time() && G_ > 1) {
      const int l = rng.below(L_);
      const double before = total_;
      journal_.clear();
      journaling_ = true;
      for (int n = 0; n < 2; ++n) {
        const int a = rng.below(E_);
        const int g = rng.below(G_);
        const auto& on_g = members(l, g);
        if (on_g.empty()) continue;
        const int b = on_g[static_cast<std::size_t>(rng.below(static_cast<int>(on_g.size())))];
        if (!can_swap(l, a, b)) continue;
        try_swap(l, a, b);
        const bool ok = within_limits();
        clear_dload();
        if (ok) do_swap(l, a, b);
      }
      for (int m = std::max(0, l - 1); m <= std::min(L_ - 1, l + 1); ++m) improve_layer(m);
      journaling_ = false;
      ++result.kicks;
      if (total_ < before - 1e-9 * std::max(1.0, before)) {
        since_better = 0;
        ++result.kicks_kept;
        continue;
      }
      ++since_better;
      for (auto it = journal_.rbegin(); it != journal_.rend(); ++it) do_swap(it->l, it->a, it->b);
    }
  }

  void set_slot(int l, int g, std::size_t i, int e) {
    auto& sl = slots(l, g);
    auto& old = extra(l, sl[i]);
    old.erase(std::find(old.begin(), old.end(), g));
    sl[i] = e;
    extra(l, e).push_back(g);
  }

  bool has_replicas() const {
    for (const auto& s : slots_) {
      if (!s.empty()) return true;
    }
    return false;
  }

  // 100 E (E/G) swaps per layer, fewer where that would touch over 2e9 tokens in all.
  std::int64_t default_anneal_swaps() const {
    const double per_swap = 2.0 * static_cast<double>(T_) * k_ / E_;
    const double cap = 2e9 / L_ / std::max(1.0, per_swap);
    const double full = 100.0 * E_ * std::max(1, E_ / G_);
    return std::max<std::int64_t>(1000, static_cast<std::int64_t>(std::min(full, cap)));
  }

  // ---- step 1b: simulated annealing of each layer's grouping ------------------------------
  // For layer l with the homes of layer l-1 fixed, minimises sum over tokens of
  // 2 |H_t| - [h_{l-1}(t) in H_t] (the layer's cost without the home's own tie-breaks) over
  // swaps, from per-token GPU counts, so that a swap costs O(1) per token it touches. Keeps the
  // best grouping seen; layers in order, so each sees its predecessor's new homes.
  void anneal_layers() {
    const std::vector<int> before = primary_;
    const double before_total = total_;
    SplitMix64 rng(options_.seed ^ 0x5eedULL);
    const std::int64_t swaps =
        options_.anneal_swaps > 0 ? options_.anneal_swaps : default_anneal_swaps();
    std::vector<std::int32_t> cnt(static_cast<std::size_t>(T_) * G_);
    std::vector<std::int32_t> stamp(static_cast<std::size_t>(T_), -1);
    const std::size_t T = static_cast<std::size_t>(T_);
    for (int l = 0; l < L_ && !out_of_time(); ++l) {
      std::fill(cnt.begin(), cnt.end(), 0);
      for (std::int64_t t = 0; t < T_; ++t) {
        for (int c = 0; c < k_; ++c)
          ++cnt[static_cast<std::size_t>(t) * G_ + primary(l, s_.id(l, t, c))];
      }
      const int* prev = l > 0 ? home_.data() + static_cast<std::size_t>(l - 1) * T : nullptr;
      std::vector<std::int64_t> gpu_load(static_cast<std::size_t>(G_), 0);
      const std::int64_t* eload = expert_load_.data() + static_cast<std::size_t>(l) * E_;
      for (int e = 0; e < E_; ++e) gpu_load[static_cast<std::size_t>(primary(l, e))] += eload[e];
      const std::int64_t cap = cap_[static_cast<std::size_t>(l)];
      std::int32_t stamp_id = 0;
      // Cost change of moving one copy of an expert from ga to gb for token t (the token's
      // counts before the move).
      auto token_delta = [&](std::int64_t t, int ga, int gb) {
        const std::int32_t* ct = cnt.data() + static_cast<std::size_t>(t) * G_;
        int d = 0;
        if (ct[ga] == 1) d -= 2 - (prev != nullptr && prev[t] == ga ? 1 : 0) * 1 + 0;
        if (ct[gb] == 0) d += 2 - (prev != nullptr && prev[t] == gb ? 1 : 0);
        return d;
      };
      auto swap_delta = [&](int a, int b, int ga, int gb) {
        ++stamp_id;
        const std::size_t ia = static_cast<std::size_t>(l) * E_ + a;
        const std::size_t ib = static_cast<std::size_t>(l) * E_ + b;
        for (std::size_t j = occ_start_[ib]; j < occ_start_[ib + 1]; ++j)
          stamp[static_cast<std::size_t>(occ_token_[j])] = stamp_id;
        int d = 0;
        for (std::size_t j = occ_start_[ia]; j < occ_start_[ia + 1]; ++j) {
          const std::int32_t t = occ_token_[j];
          if (stamp[static_cast<std::size_t>(t)] == stamp_id)
            stamp[static_cast<std::size_t>(t)] = -2;
          else
            d += token_delta(t, ga, gb);
        }
        for (std::size_t j = occ_start_[ib]; j < occ_start_[ib + 1]; ++j) {
          const std::int32_t t = occ_token_[j];
          if (stamp[static_cast<std::size_t>(t)] == stamp_id) d += token_delta(t, gb, ga);
        }
        return d;
      };
      auto apply = [&](int a, int b, int ga, int gb) {
        const std::size_t ia = static_cast<std::size_t>(l) * E_ + a;
        const std::size_t ib = static_cast<std::size_t>(l) * E_ + b;
        for (std::size_t j = occ_start_[ia]; j < occ_start_[ia + 1]; ++j) {
          std::int32_t* ct = cnt.data() + static_cast<std::size_t>(occ_token_[j]) * G_;
          --ct[ga];
          ++ct[gb];
        }
        for (std::size_t j = occ_start_[ib]; j < occ_start_[ib + 1]; ++j) {
          std::int32_t* ct = cnt.data() + static_cast<std::size_t>(occ_token_[j]) * G_;
          --ct[gb];
          ++ct[ga];
        }
        gpu_load[static_cast<std::size_t>(ga)] += eload[b] - eload[a];
        gpu_load[static_cast<std::size_t>(gb)] += eload[a] - eload[b];
        swap_primaries(l, a, b);
      };
      // Temperature: proportional to the tokens per expert (the scale of a swap's delta), from
      // 0.2 of it down to 0.001 geometrically (tuned on the ESFT traces).
      const double per_expert = static_cast<double>(T_) * k_ / E_;
      const double t0 = 0.2 * per_expert;
      const double t1 = 0.001 * per_expert;
      std::int64_t current = 0, best = 0;
      std::vector<int> best_primary(primary_.begin() + static_cast<std::ptrdiff_t>(l) * E_,
                                    primary_.begin() + static_cast<std::ptrdiff_t>(l + 1) * E_);
      for (std::int64_t it = 0; it < swaps; ++it) {
        const double temp =
            t0 * std::pow(t1 / t0, static_cast<double>(it) / static_cast<double>(swaps));
        const int a = rng.below(E_);
        const int b = rng.below(E_);
        const int ga = primary(l, a);
        const int gb = primary(l, b);
        if (ga == gb) continue;
        if (cap != kNoLimit) {
          const std::int64_t d = eload[b] - eload[a];
          if (gpu_load[static_cast<std::size_t>(ga)] + d > cap ||
              gpu_load[static_cast<std::size_t>(gb)] - d > cap)
            continue;
        }
        const int d = swap_delta(a, b, ga, gb);
        if (d > 0) {
          const double u = static_cast<double>(rng.next() >> 11) * 0x1.0p-53;
          if (u >= std::exp(-d / temp)) continue;
        }
        apply(a, b, ga, gb);
        current += d;
        if (current < best) {
          best = current;
          std::copy(primary_.begin() + static_cast<std::ptrdiff_t>(l) * E_,
                    primary_.begin() + static_cast<std::ptrdiff_t>(l + 1) * E_,
                    best_primary.begin());
        }
      }
      for (int g = 0; g < G_; ++g) members(l, g).clear();
      for (int e = 0; e < E_; ++e) {
        primary(l, e) = best_primary[static_cast<std::size_t>(e)];
        members(l, primary(l, e)).push_back(e);
      }
      // This layer's homes, for the next layer's annealing.
      for (std::int64_t t = 0; t < T_; ++t) {
        int h = 0;
        layer_cost(l, t, l > 0 ? prev[t] : start_gpu(t), h);
        home_[static_cast<std::size_t>(l) * T + t] = h;
      }
    }
    rebuild();
    log("token search: annealed layer groupings, cost " + fmt(total_ / static_cast<double>(T_)));
    if (total_ >= before_total) {
      // The annealing's objective counts GPUs, not hops: on several nodes it can lose.
      primary_ = before;
      for (int l = 0; l < L_; ++l) {
        for (int g = 0; g < G_; ++g) members(l, g).clear();
        for (int e = 0; e < E_; ++e) members(l, primary(l, e)).push_back(e);
      }
      rebuild();
      log("token search: kept the groupings from before the annealing");
    }
  }

  // ---- step 1: load repair ------------------------------------------------------------------
  double mean_load() const { return static_cast<double>(T_) * k_ / G_; }

  void check_limits_reachable() {
    if (options_.max_load.empty()) return;
    double worst_ratio = 0;
    int worst_layer = -1;
    for (int l = 0; l < L_; ++l) {
      const std::int64_t best = best_balanced_max(l);
      const double ratio = static_cast<double>(best) / mean_load();
      if (best > cap_[static_cast<std::size_t>(l)] && (worst_layer < 0 || ratio > worst_ratio)) {
        worst_ratio = ratio;
        worst_layer = l;
      }
    }
    if (worst_layer >= 0) {
      double smallest = 0;
      for (int l = 0; l < L_; ++l) {
        smallest = std::max(smallest, static_cast<double>(best_balanced_max(l)) / mean_load());
      }
      // Rounded up to the decimals shown, so that the ratio as printed is accepted.
      smallest = std::ceil(smallest * 1e4) / 1e4;
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "the load limit cannot be met: on layer %d the busiest GPU serves at least "
                    "%.4g x the mean in every placement found; the smallest ratio found feasible "
                    "for all layers is %.4f",
                    worst_layer, worst_ratio, smallest);
      throw UsageError(buf);
    }
  }

  // The better of the vanilla layout and the load balancer's, by busiest-GPU load; the
  // assignment goes to `out` if given.
  std::int64_t best_balanced_max(int l, std::vector<int>* out = nullptr) {
    const std::int64_t* load = expert_load_.data() + static_cast<std::size_t>(l) * E_;
    const int per_gpu = E_ / G_;
    std::vector<int> vanilla(static_cast<std::size_t>(E_));
    for (int e = 0; e < E_; ++e)
      vanilla[static_cast<std::size_t>(e)] = std::min(e / std::max(1, per_gpu), G_ - 1);
    std::vector<int> balanced = E_ % G_ == 0 ? balance_layer(load, E_, G_, per_gpu) : vanilla;
    const std::int64_t mv = max_gpu_load(load, vanilla.data(), E_, G_);
    const std::int64_t mb = max_gpu_load(load, balanced.data(), E_, G_);
    if (out != nullptr) *out = mb <= mv ? balanced : vanilla;
    return std::min(mv, mb);
  }

  std::int64_t excess(int l) {
    std::int64_t x = 0;
    for (int g = 0; g < G_; ++g) {
      std::int64_t v = load(l, g) + dload_[static_cast<std::size_t>(l) * G_ + g];
      x += std::max<std::int64_t>(0, v - cap_[static_cast<std::size_t>(l)]);
    }
    return x;
  }

  // allow_reset: a layer the swaps cannot repair is rebalanced by load alone (only before
  // replicas exist: the balanced layout knows nothing of them).
  void repair(TokenSearchResult& result, bool allow_reset) {
    for (int l = 0; l < L_; ++l) {
      const std::int64_t cap = cap_[static_cast<std::size_t>(l)];
      if (cap == kNoLimit) continue;
      if (!allow_reset) repair_replica_slots(l);
      const int steps = allow_reset ? 4 * E_ : 2 * std::max(1, E_ / G_);
      for (int step = 0; step < steps; ++step) {
        clear_dload();
        const std::int64_t now = excess(l);
        if (now == 0) break;
        int hot = 0;
        for (int g = 1; g < G_; ++g) {
          if (load(l, g) > load(l, hot)) hot = g;
        }
        std::vector<int> cold(static_cast<std::size_t>(G_));
        std::iota(cold.begin(), cold.end(), 0);
        std::stable_sort(cold.begin(), cold.end(),
                         [&](int x, int y) { return load(l, x) < load(l, y); });
        cold.resize(std::min<std::size_t>(cold.size(), 4));
        int best_a = -1, best_b = -1;
        std::int64_t best_excess = now;
        double best_delta = 0;
        for (int a : std::vector<int>(members(l, hot))) {
          for (int g : cold) {
            if (g == hot) continue;
            for (int b : std::vector<int>(members(l, g))) {
              if (!can_swap(l, a, b)) continue;
              const double delta = try_swap(l, a, b);
              const std::int64_t x = excess(l);
              if (x < best_excess || (x == best_excess && best_a >= 0 && delta < best_delta)) {
                if (x < now) {
                  best_excess = x;
                  best_delta = delta;
                  best_a = a;
                  best_b = b;
                }
              }
            }
          }
        }
        clear_dload();
        if (best_a < 0) break;
        do_swap(l, best_a, best_b);
      }
      clear_dload();
      if (excess(l) > 0 && allow_reset) {
        std::vector<int> layout;
        best_balanced_max(l, &layout);
        for (int g = 0; g < G_; ++g) members(l, g).clear();
        for (int e = 0; e < E_; ++e) {
          primary(l, e) = layout[static_cast<std::size_t>(e)];
          members(l, primary(l, e)).push_back(e);
        }
        rebuild();
        ++result.layers_reset;
      }
    }
  }

  // Re-aims replica slots of layer l at the experts that most reduce its load excess.
  void repair_replica_slots(int l) {
    std::vector<std::int64_t> demand;
    for (int round = 0; round < 4; ++round) {
      clear_dload();
      if (excess(l) == 0) return;
      replica_demand(l, demand);
      bool improved = false;
      for (int g = 0; g < G_; ++g) {
        for (std::size_t i = 0; i < slots(l, g).size(); ++i) {
          clear_dload();
          const std::int64_t now = excess(l);
          if (now == 0) return;
          // Fewest excess first, then the cheapest.
          const SlotChoice best = best_slot_expert(
              l, g, i, candidates(l, g, demand, 32), [&](const SlotChoice& c, const SlotChoice& b) {
                return c.excess < (b.expert < 0 ? now : b.excess) ||
                       (b.expert >= 0 && c.excess == b.excess && c.delta < b.delta);
              });
          if (best.expert < 0) continue;
          aim_slot(l, g, i, best.expert);
          improved = true;
        }
      }
      if (!improved) return;
    }
  }

  int layers_over_limit() {
    clear_dload();
    int n = 0;
    for (int l = 0; l < L_; ++l) n += excess(l) > 0;
    return n;
  }

  // ---- step 2 and 3: replicas ---------------------------------------------------------------
  // demand[g * E + e]: tokens arriving at layer l on GPU g that use expert e from another GPU.
  void replica_demand(int l, std::vector<std::int64_t>& demand) {
    demand.assign(static_cast<std::size_t>(G_) * E_, 0);
    const std::size_t T = static_cast<std::size_t>(T_);
    for (std::int64_t t = 0; t < T_; ++t) {
      const int at = l > 0 ? home_[static_cast<std::size_t>(l - 1) * T + t] : start_gpu(t);
      const int* ch = choice_.data() + (static_cast<std::size_t>(l) * T + t) * k_;
      for (int c = 0; c < k_; ++c) {
        if (ch[c] != at) ++demand[static_cast<std::size_t>(at) * E_ + s_.id(l, t, c)];
      }
    }
  }
  // Experts without a copy on g, most requested first (at most n).
  std::vector<int> candidates(int l, int g, const std::vector<std::int64_t>& demand, int n) {
    std::vector<int> order;
    for (int e = 0; e < E_; ++e) {
      if (!has_copy(l, e, g)) order.push_back(e);
    }
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return demand[static_cast<std::size_t>(g) * E_ + a] >
             demand[static_cast<std::size_t>(g) * E_ + b];
    });
    if (static_cast<int>(order.size()) > n) order.resize(static_cast<std::size_t>(n));
    return order;
  }

  void fill_replicas() {
    std::vector<std::int64_t> demand;
    for (int l = 0; l < L_; ++l) {
      for (int r = 0; r < options_.redundant; ++r) {
        replica_demand(l, demand);
        for (int g = 0; g < G_; ++g) {
          // The best of the six most requested experts that keeps the limits; failing that,
          // of the 32 most requested; failing that, the one that exceeds them least.
          int best = -1;
          double best_delta = 0;
          std::int64_t best_over = 0;
          for (int n : {6, 32}) {
            for (int e : candidates(l, g, demand, n)) {
              add_copy(l, e, g);
              collect(l, e, -1);
              const double delta = evaluate(l);
              const std::int64_t over = added_excess();
              if (best < 0 || over < best_over || (over == best_over && delta < best_delta)) {
                best = e;
                best_delta = delta;
                best_over = over;
              }
              remove_last_copy(l, e, g);
            }
            if (best >= 0 && best_over == 0) break;
          }
          clear_dload();
          if (best < 0) continue;
          add_copy(l, best, g);
          collect(l, best, -1);
          commit(l);
        }
      }
    }
  }
  void remove_last_copy(int l, int e, int g) {
    extra(l, e).pop_back();
    slots(l, g).pop_back();
  }

  void improve_replicas(int l) {
    std::vector<std::int64_t> demand;
    replica_demand(l, demand);
    for (int g = 0; g < G_ && !out_of_time(); ++g) {
      for (std::size_t i = 0; i < slots(l, g).size(); ++i) {
        // The cheapest improvement within the limits.
        const SlotChoice best = best_slot_expert(
            l, g, i, candidates(l, g, demand, 4), [](const SlotChoice& c, const SlotChoice& b) {
              return c.within_limits && c.delta < (b.expert < 0 ? -1e-9 : b.delta);
            });
        if (best.expert >= 0) aim_slot(l, g, i, best.expert);
      }
    }
  }

  struct SlotChoice {
    int expert = -1;
    double delta = 0;
    std::int64_t excess = 0;  // the layer's load excess after the change
    bool within_limits = true;
  };
  // Scores re-aiming replica slot i of GPU g at layer l at each candidate expert (the slot is
  // restored after each); returns the candidate `better(candidate, best so far)` prefers, or
  // expert -1.
  template <class Better>
  SlotChoice best_slot_expert(int l, int g, std::size_t i, const std::vector<int>& experts,
                              Better better) {
    const int old = slots(l, g)[i];
    SlotChoice best;
    for (int e : experts) {
      set_slot(l, g, i, e);
      collect(l, std::min(old, e), std::max(old, e));
      SlotChoice c;
      c.expert = e;
      c.delta = evaluate(l);
      c.excess = excess(l);
      c.within_limits = within_limits();
      if (better(c, best)) best = c;
      set_slot(l, g, i, old);
    }
    clear_dload();
    return best;
  }
  void aim_slot(int l, int g, std::size_t i, int e) {
    const int old = slots(l, g)[i];
    set_slot(l, g, i, e);
    collect(l, std::min(old, e), std::max(old, e));
    commit(l);
  }

  // ---- step 3: swaps ------------------------------------------------------------------------
  void improve_layer(int l) {
    // Estimated gain of moving expert a to GPU g, from one pass over the layer's tokens
    // (without replicas a token's layer cost is about 2 |H_l| - 1 - [h_{l-1} in H_l]):
    //   2 * (tokens of a alone on its GPU - tokens of a that do not touch g yet)
    //   + (tokens of a arriving from g - tokens of a arriving from a's GPU).
    // The pass adds 2 per token of a touching g and 1 per token of a arriving from g; the
    // constant terms are folded in per a afterwards.
    std::vector<std::int64_t> move(static_cast<std::size_t>(E_) * G_, 0);
    std::vector<std::int64_t> alone(static_cast<std::size_t>(E_), 0);
    std::vector<std::int64_t> count(static_cast<std::size_t>(E_), 0);
    const std::size_t T = static_cast<std::size_t>(T_);
    for (std::int64_t t = 0; t < T_; ++t) {
      const std::size_t i = static_cast<std::size_t>(l) * T + t;
      const int* ch = choice_.data() + i * k_;
      int n = 0;
      for (int c = 0; c < k_; ++c) {
        int j = 0;
        while (j < n && distinct_[static_cast<std::size_t>(j)] != ch[c]) ++j;
        if (j == n) {
          distinct_[static_cast<std::size_t>(n)] = ch[c];
          mult_[static_cast<std::size_t>(n)] = 0;
          ++n;
        }
        ++mult_[static_cast<std::size_t>(j)];
      }
      for (int c = 0; c < k_; ++c) {
        const int a = s_.id(l, t, c);
        std::int64_t* m = move.data() + static_cast<std::size_t>(a) * G_;
        ++count[static_cast<std::size_t>(a)];
        for (int j = 0; j < n; ++j) {
          m[distinct_[static_cast<std::size_t>(j)]] += 2;
          if (distinct_[static_cast<std::size_t>(j)] == ch[c] &&
              mult_[static_cast<std::size_t>(j)] == 1) {
            ++alone[static_cast<std::size_t>(a)];
          }
        }
        if (l > 0) ++m[home_[i - T]];
      }
    }
    for (int a = 0; a < E_; ++a) {
      std::int64_t* m = move.data() + static_cast<std::size_t>(a) * G_;
      const int ga = primary(l, a);
      // m[ga] is 2 * count + arrivals from ga; the GPU it is on scores 0.
      const std::int64_t arrive_here = m[ga] - 2 * count[static_cast<std::size_t>(a)];
      const std::int64_t shift =
          2 * (alone[static_cast<std::size_t>(a)] - count[static_cast<std::size_t>(a)]) -
          arrive_here;
      for (int g = 0; g < G_; ++g) m[g] += shift;
      m[ga] = 0;
    }
    struct Candidate {
      std::int64_t estimate;
      int a, b;
    };
    std::vector<Candidate> candidates;
    for (int a = 0; a < E_; ++a) {
      const std::int64_t* ma = move.data() + static_cast<std::size_t>(a) * G_;
      const int ga = primary(l, a);
      for (int g = 0; g < G_; ++g) {
        if (g == ga) continue;
        for (int b : members(l, g)) {
          if (b < a && primary(l, b) != ga) {
            const std::int64_t est = ma[g] + move[static_cast<std::size_t>(b) * G_ + ga];
            if (est > 0) candidates.push_back({est, a, b});
          }
        }
      }
    }
    std::stable_sort(
        candidates.begin(), candidates.end(),
        [](const Candidate& x, const Candidate& y) { return x.estimate > y.estimate; });
    // Exact evaluation in order of estimate; an expert moved once this sweep is left alone, so
    // the estimates of the rest stay close.
    std::vector<char> moved(static_cast<std::size_t>(E_), 0);
    std::size_t tried = 0;
    const std::size_t budget = static_cast<std::size_t>(4) * E_;
    for (const Candidate& c : candidates) {
      if (tried >= budget || out_of_time()) break;
      if (moved[static_cast<std::size_t>(c.a)] || moved[static_cast<std::size_t>(c.b)] ||
          !can_swap(l, c.a, c.b)) {
        continue;
      }
      ++tried;
      const double delta = try_swap(l, c.a, c.b);
      const bool ok = delta < -1e-9 && within_limits();
      clear_dload();
      if (!ok) continue;
      do_swap(l, c.a, c.b);
      moved[static_cast<std::size_t>(c.a)] = moved[static_cast<std::size_t>(c.b)] = 1;
    }
  }

  // ---- misc ---------------------------------------------------------------------------------
  // The time limit, or the work budget: token walks by evaluations and commits, which makes
  // the stopping point, and so the result, the same on every machine.
  bool out_of_time() const {
    if (walks_ - walks_before_ > walk_budget_) return true;
    return options_.time_limit > 0 &&
           std::chrono::duration<double>(Clock::now() - started_).count() > options_.time_limit;
  }
  void log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }
  static std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", v);
    return buf;
  }

  const TokenSample& s_;
  const Topology& topo_;
  const TokenSearchOptions& options_;
  const int L_, E_, G_, k_;
  const std::int64_t T_;
  const Clock::time_point started_;
  std::vector<int> node_of_;

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
  std::int64_t walks_before_ = 0;  // walks_ when the improvement steps began
  std::int64_t walk_budget_ = 0;

  std::vector<std::int64_t> dload_;  // [L, G] pending load changes
  std::vector<char> listed_;         // [L, G] whether touched_ lists the entry
  std::vector<int> touched_;         // entries of dload_ that may be non-zero, each once
  std::vector<std::int32_t> affected_;
  struct Swap {
    int l, a, b;
  };
  std::vector<Swap> journal_;
  bool journaling_ = false;
  std::vector<int> buf_, distinct_, mult_;
};

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
  Search search(sample, topology, start, options);
  return search.run();
}

}  // namespace exflow::solvers
