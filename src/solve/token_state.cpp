// The token search's state (src/solve/token_state.hpp).
#include "solve/token_state.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

#include "exflow/topology.hpp"

namespace exflow::solvers {

TokenState::TokenState(const TokenSample& sample, const Topology& topology, const Placement& start,
                       Scheme scheme, std::int64_t sequence_length, std::vector<std::int64_t> cap)
    : s_(sample),
      hops_(topology),
      scheme_(scheme),
      L_(sample.layers),
      E_(sample.experts),
      G_(topology.gpus()),
      k_(sample.k),
      T_(sample.tokens),
      cap_(std::move(cap)),
      gpus_(sample.k),
      copies_used_(static_cast<std::size_t>(sample.k)) {
  owner_.resize(static_cast<std::size_t>(T_));
  for (std::int64_t t = 0; t < T_; ++t) {
    const std::int64_t position =
        s_.position.empty() ? t : s_.position[static_cast<std::size_t>(t)];
    owner_[static_cast<std::size_t>(t)] = routing::owner(position, sequence_length, G_);
  }
  primary_ = start.gpu_of();
  extra_.assign(static_cast<std::size_t>(L_) * E_, {});
  slots_.assign(static_cast<std::size_t>(L_) * G_, {});
  for (const Replica& r : start.replicas()) add_copy(r.layer, r.expert, r.gpu);
  members_.assign(static_cast<std::size_t>(L_) * G_, {});
  for (int l = 0; l < L_; ++l) {
    for (int e = 0; e < E_; ++e) members_[index_lg(l, primary(l, e))].push_back(e);
  }
  build_occurrences();
  home_.assign(static_cast<std::size_t>(L_) * T_, 0);
  cost_.assign(static_cast<std::size_t>(L_) * T_, 0.0);
  choice_.assign(static_cast<std::size_t>(L_) * T_ * k_, 0);
  dload_.assign(static_cast<std::size_t>(L_) * G_, 0);
  listed_.assign(static_cast<std::size_t>(L_) * G_, 0);
  rebuild();
}

// ---- placement ----------------------------------------------------------------------------------

bool TokenState::has_copy(int l, int e, int g) const {
  if (primary(l, e) == g) return true;
  const std::span<const int> x = replicas(l, e);
  return std::find(x.begin(), x.end(), g) != x.end();
}

bool TokenState::has_replicas() const {
  for (const auto& s : slots_) {
    if (!s.empty()) return true;
  }
  return false;
}

Placement TokenState::placement() const {
  Placement p(L_, E_, G_, primary_);
  for (int l = 0; l < L_; ++l) {
    for (int g = 0; g < G_; ++g) {
      for (int e : slots(l, g)) p.add_replica(l, e, g);
    }
  }
  return p;
}

// ---- tokens -------------------------------------------------------------------------------------

int TokenState::start_gpu(std::int64_t t) const {
  const int e = s_.id(0, t, 0);
  return routing::start_gpu(primary(0, e), replicas(0, e));
}

double TokenState::layer_cost(int m, std::int64_t t, int at, routing::TokenGpus& gpus,
                              std::vector<int>& copies_used, int& home) const {
  const std::int32_t* ids = s_.ids.data() + index_lt(m, t) * static_cast<std::size_t>(k_);
  gpus.clear();
  for (int c = 0; c < k_; ++c) {
    const int g = routing::choose_copy(primary(m, ids[c]), replicas(m, ids[c]), at, hops_);
    copies_used[static_cast<std::size_t>(c)] = g;
    gpus.add(g);
  }
  double cost = 0;
  auto add = [&](int, int src, int dst) { cost += hops_.cost(src, dst); };
  switch (scheme_) {
    case Scheme::kContextCoherent:
      home = gpus.home();
      // Layer 0 has no dispatch: the token starts on a copy it uses.
      routing::coherent_transfers(gpus, m > 0 ? at : -1, home, add);
      return cost;
    case Scheme::kBaseline:
      routing::baseline_transfers(gpus, at, add);
      break;
    case Scheme::kDeepEP:
      routing::deepep_transfers(gpus, at, hops_, add);
      break;
    case Scheme::kDeepEPLowLatency:
      routing::deepep_low_latency_transfers(gpus, at, add);
      break;
  }
  home = at;
  return cost;
}

// Tokens routed to expert e at layer l (each once), ascending.
void TokenState::build_occurrences() {
  const std::size_t n = static_cast<std::size_t>(L_) * E_;
  occ_start_.assign(n + 1, 0);
  expert_load_.assign(n, 0);
  for (int l = 0; l < L_; ++l) {
    for (std::int64_t t = 0; t < T_; ++t) {
      for (int c = 0; c < k_; ++c) {
        const int e = s_.id(l, t, c);
        ++expert_load_[index_le(l, e)];
        bool repeat = false;
        for (int d = 0; d < c; ++d) repeat |= s_.id(l, t, d) == e;
        if (!repeat) ++occ_start_[index_le(l, e) + 1];
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
        if (!repeat) occ_token_[fill[index_le(l, e)]++] = static_cast<std::int32_t>(t);
      }
    }
  }
}

// ---- loads --------------------------------------------------------------------------------------

void TokenState::touch(int m, int g, int d) {
  const std::size_t i = index_lg(m, g);
  if (!listed_[i]) {
    listed_[i] = 1;
    touched_.push_back(static_cast<int>(i));
  }
  dload_[i] += d;
}

void TokenState::clear_dload() {
  for (int i : touched_) {
    dload_[static_cast<std::size_t>(i)] = 0;
    listed_[static_cast<std::size_t>(i)] = 0;
  }
  touched_.clear();
}

bool TokenState::within_limits() const {
  for (int i : touched_) {
    const std::int64_t d = dload_[static_cast<std::size_t>(i)];
    if (d > 0 && load_[static_cast<std::size_t>(i)] + d > cap_[static_cast<std::size_t>(i / G_)]) {
      return false;
    }
  }
  return true;
}

std::int64_t TokenState::added_excess() const {
  std::int64_t x = 0;
  for (int i : touched_) {
    const std::int64_t cap = cap_[static_cast<std::size_t>(i / G_)];
    const std::int64_t before = load_[static_cast<std::size_t>(i)];
    const std::int64_t after = before + dload_[static_cast<std::size_t>(i)];
    x += std::max<std::int64_t>(0, after - cap) - std::max<std::int64_t>(0, before - cap);
  }
  return x;
}

std::int64_t TokenState::excess(int l) const {
  std::int64_t x = 0;
  for (int g = 0; g < G_; ++g) {
    const std::int64_t v = load(l, g) + dload_[index_lg(l, g)];
    x += std::max<std::int64_t>(0, v - cap(l));
  }
  return x;
}

void TokenState::apply_dload() {
  for (int i : touched_) load_[static_cast<std::size_t>(i)] += dload_[static_cast<std::size_t>(i)];
  clear_dload();
}

// ---- exact evaluation ---------------------------------------------------------------------------

// Re-walks token t from layer l under the current placement. Accumulates the load changes in
// dload_ and returns the cost change; with write, stores the new route.
double TokenState::walk(std::int64_t t, int l, bool write) {
  int at_new = entry(l, t);
  int at_old = at_new;
  double delta = 0;
  for (int m = l; m < L_; ++m) {
    if (m > l && at_new == at_old) break;
    const std::size_t i = index_lt(m, t);
    int h = 0;
    const double c = layer_cost(m, t, at_new, gpus_, copies_used_, h);
    delta += c - cost_[i];
    int* stored = choice_.data() + i * static_cast<std::size_t>(k_);
    for (int col = 0; col < k_; ++col) {
      const int g = copies_used_[static_cast<std::size_t>(col)];
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

void TokenState::collect(int l, int a, int b) {
  affected_.clear();
  const std::span<const std::int32_t> ta = tokens_of(l, a);
  if (b < 0) {
    affected_.assign(ta.begin(), ta.end());
    return;
  }
  const std::span<const std::int32_t> tb = tokens_of(l, b);
  std::set_union(ta.begin(), ta.end(), tb.begin(), tb.end(), std::back_inserter(affected_));
}

double TokenState::evaluate(int l) {
  clear_dload();
  walks_ += static_cast<std::int64_t>(affected_.size());
  double delta = 0;
  for (std::int32_t t : affected_) delta += walk(t, l, false);
  return delta;
}

void TokenState::commit(int l) {
  clear_dload();
  walks_ += static_cast<std::int64_t>(affected_.size());
  double delta = 0;
  for (std::int32_t t : affected_) delta += walk(t, l, true);
  apply_dload();
  total_ += delta;
  ++moves_;
  if (tracking_) {
    log_layer(l);
    log_step();
  }
}

void TokenState::rebuild() {
  load_.assign(static_cast<std::size_t>(L_) * G_, 0);
  total_ = 0;
  for (std::int64_t t = 0; t < T_; ++t) {
    int at = entry(0, t);
    for (int m = 0; m < L_; ++m) {
      const std::size_t i = index_lt(m, t);
      int h = 0;
      cost_[i] = layer_cost(m, t, at, gpus_, copies_used_, h);
      home_[i] = h;
      total_ += cost_[i];
      for (int c = 0; c < k_; ++c) {
        const int g = copies_used_[static_cast<std::size_t>(c)];
        choice_[i * static_cast<std::size_t>(k_) + static_cast<std::size_t>(c)] = g;
        ++load_[index_lg(m, g)];
      }
      at = h;
    }
  }
  if (tracking_) {
    for (int l = 0; l < L_; ++l) log_layer(l);
    log_step();
  }
}

void TokenState::rehome_layer(int l) {
  for (std::int64_t t = 0; t < T_; ++t) {
    int h = 0;
    layer_cost(l, t, entry(l, t), gpus_, copies_used_, h);
    home_[index_lt(l, t)] = h;
  }
}

// ---- swaps --------------------------------------------------------------------------------------

void TokenState::swap_primaries(int l, int a, int b) {
  int& ga = primary_[index_le(l, a)];
  int& gb = primary_[index_le(l, b)];
  std::vector<int>& ma = members_[index_lg(l, ga)];
  std::vector<int>& mb = members_[index_lg(l, gb)];
  *std::find(ma.begin(), ma.end(), a) = b;
  *std::find(mb.begin(), mb.end(), b) = a;
  std::swap(ga, gb);
}

bool TokenState::can_swap(int l, int a, int b) const {
  const int ga = primary(l, a);
  const int gb = primary(l, b);
  return ga != gb && !has_copy(l, a, gb) && !has_copy(l, b, ga);
}

double TokenState::try_swap(int l, int a, int b) {
  swap_primaries(l, a, b);
  collect(l, a, b);
  const double delta = evaluate(l);
  swap_primaries(l, a, b);
  return delta;
}

void TokenState::do_swap(int l, int a, int b) {
  swap_primaries(l, a, b);
  collect(l, a, b);
  commit(l);
  if (journaling_) journal_.push_back({l, a, b});
}

void TokenState::start_journal() {
  journal_.clear();
  journaling_ = true;
}

void TokenState::undo_journal() {
  journaling_ = false;
  for (auto it = journal_.rbegin(); it != journal_.rend(); ++it) do_swap(it->l, it->a, it->b);
  journal_.clear();
}

void TokenState::assign_layer(int l, std::span<const int> gpu_of) {
  for (int g = 0; g < G_; ++g) members_[index_lg(l, g)].clear();
  for (int e = 0; e < E_; ++e) {
    primary_[index_le(l, e)] = gpu_of[static_cast<std::size_t>(e)];
    members_[index_lg(l, primary(l, e))].push_back(e);
  }
}

// ---- moves against a previous placement ---------------------------------------------------------

void TokenState::track_moves() {
  tracking_ = true;
  origin_.assign(static_cast<std::size_t>(L_) * E_, {});
  for (int l = 0; l < L_; ++l) {
    for (int e = 0; e < E_; ++e) {
      std::vector<int>& o = origin_[index_le(l, e)];
      o.push_back(primary(l, e));
      for (int g : replicas(l, e)) o.push_back(g);
    }
  }
  mirror_primary_ = primary_;
  mirror_slots_ = slots_;
  moved_.assign(static_cast<std::size_t>(L_), 0);
  moved_total_ = 0;
  changes_.clear();
  steps_.clear();
}

void TokenState::log_layer(int l) {
  const auto held_before = [&](int e, int g) {
    const std::vector<int>& o = origin_[index_le(l, e)];
    return std::find(o.begin(), o.end(), g) != o.end();
  };
  std::int64_t moved = 0;
  for (int e = 0; e < E_; ++e) {
    const int g = primary(l, e);
    int& seen = mirror_primary_[index_le(l, e)];
    if (seen != g) {
      changes_.push_back({l, g, e, -1});
      seen = g;
    }
    moved += held_before(e, g) ? 0 : 1;
  }
  for (int g = 0; g < G_; ++g) {
    const std::vector<int>& now = slots(l, g);
    std::vector<int>& seen = mirror_slots_[index_lg(l, g)];
    for (std::size_t i = 0; i < now.size(); ++i) {
      if (i >= seen.size() || seen[i] != now[i]) {
        changes_.push_back({l, g, now[i], static_cast<int>(i)});
      }
      moved += held_before(now[i], g) ? 0 : 1;
    }
    seen = now;
  }
  moved_total_ += moved - moved_[static_cast<std::size_t>(l)];
  moved_[static_cast<std::size_t>(l)] = moved;
}

void TokenState::log_step() {
  steps_.push_back({changes_.size(), total_, moved_total_});
}

Placement TokenState::replay(const Placement& previous, std::ptrdiff_t step) const {
  std::vector<int> primary = previous.gpu_of();
  std::vector<std::vector<int>> slots(static_cast<std::size_t>(L_) * G_);
  for (const Replica& r : previous.replicas()) slots[index_lg(r.layer, r.gpu)].push_back(r.expert);
  const std::size_t end = step < 0 ? 0 : steps_[static_cast<std::size_t>(step)].changes_end;
  for (std::size_t i = 0; i < end; ++i) {
    const Change& c = changes_[i];
    if (c.slot < 0) {
      primary[index_le(c.layer, c.expert)] = c.gpu;
      continue;
    }
    std::vector<int>& s = slots[index_lg(c.layer, c.gpu)];
    if (static_cast<std::size_t>(c.slot) >= s.size())
      s.resize(static_cast<std::size_t>(c.slot) + 1);
    s[static_cast<std::size_t>(c.slot)] = c.expert;
  }
  Placement p(L_, E_, G_, primary);
  for (int l = 0; l < L_; ++l) {
    for (int g = 0; g < G_; ++g) {
      for (int e : slots[index_lg(l, g)]) p.add_replica(l, e, g);
    }
  }
  return p;
}

// ---- replica slots ------------------------------------------------------------------------------

void TokenState::set_slot(int l, int g, std::size_t i, int e) {
  std::vector<int>& sl = slots_[index_lg(l, g)];
  std::vector<int>& old = extra_[index_le(l, sl[i])];
  old.erase(std::find(old.begin(), old.end(), g));
  sl[i] = e;
  extra_[index_le(l, e)].push_back(g);
}

void TokenState::add_copy(int l, int e, int g) {
  extra_[index_le(l, e)].push_back(g);
  slots_[index_lg(l, g)].push_back(e);
}

void TokenState::remove_last_copy(int l, int e, int g) {
  extra_[index_le(l, e)].pop_back();
  slots_[index_lg(l, g)].pop_back();
}

}  // namespace exflow::solvers
