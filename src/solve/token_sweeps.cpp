// Step 3 of the token search, swaps: for one layer, estimate from one pass over its tokens how
// much moving each expert to each GPU would gain (where its tokens come from, their
// co-selected experts, and for the context-coherent scheme where they go next and the hop
// cost of each transfer), then evaluate the most promising swaps exactly, best estimate first,
// and keep those that lower the cost within every load limit.
#include <algorithm>
#include <cmath>

#include "core/routing.hpp"
#include "solve/token_moves.hpp"

namespace exflow::solvers::token_moves {

namespace {

// gain[a * G + g]: the estimated fall in the cost if expert a of layer l moved to GPU g (0 on
// its own GPU), from one pass over the layer's tokens.

// Context-coherent scheme, in hop costs. Per token of a, with H = H_l, h = h_l and f = h_{l-1}:
//  * a shares its GPU with another column, or is not alone on the home: a's own transfers are
//    f -> GPU and GPU -> h, paid only where no other column is (a GPU of H costs nothing);
//  * a carries the home alone: moving it moves the home, so the combines from H's other GPUs,
//    the dispatch from f and the next layer's dispatches to H_{l+1} all follow it.
// Either way a's cost at g is a sum of hops from a multiset of GPUs ("pulls") to g, less a
// correction on the GPUs whose transfers a would share. A sum of hops to g needs only the pulls
// per GPU and per node (HopTable::sum_of_hops_to).
// The home's tie rule and the layers past l + 1 are left out: the exact evaluation decides.
void coherent_gains(const TokenState& state, int l, std::vector<double>& gain) {
  const int E = state.experts();
  const int G = state.gpus();
  const int k = state.k();
  const TokenSample& sample = state.sample();
  const routing::HopTable& hops = state.hops();
  const int N = hops.nodes();
  std::vector<double> pull(static_cast<std::size_t>(E) * G, 0.0);
  std::vector<double> node_pull(static_cast<std::size_t>(E) * N, 0.0);
  std::vector<double> total(static_cast<std::size_t>(E), 0.0);
  std::vector<double>& shared = gain;  // the corrections, then the gains
  std::fill(shared.begin(), shared.end(), 0.0);
  routing::TokenGpus now(k);
  routing::TokenGpus next(k);
  const int* from = state.entries(l);
  const bool last = l + 1 == state.layers();
  for (std::int64_t t = 0; t < state.tokens(); ++t) {
    const std::span<const int> ch = state.choices(l, t);
    now.clear();
    for (int c = 0; c < k; ++c) now.add(ch[static_cast<std::size_t>(c)]);
    next.clear();
    if (!last) {
      for (int g : state.choices(l + 1, t)) next.add(g);
    }
    const int f = from != nullptr ? from[t] : -1;
    const int h = state.home(l, t);
    for (int c = 0; c < k; ++c) {
      const int a = sample.id(l, t, c);
      const int ga = ch[static_cast<std::size_t>(c)];
      double* p = pull.data() + static_cast<std::size_t>(a) * G;
      double* np = node_pull.data() + static_cast<std::size_t>(a) * N;
      double* corr = shared.data() + static_cast<std::size_t>(a) * G;
      auto add = [&](int x) {
        p[x] += 1;
        np[hops.node_of(x)] += 1;
        total[static_cast<std::size_t>(a)] += 1;
      };
      int alone = 0;
      for (int j = 0; j < now.size(); ++j) {
        if (now.gpu(j) == ga) alone = now.count(j) == 1;
      }
      if (ga == h && alone) {
        if (f >= 0) add(f);
        for (int j = 0; j < now.size(); ++j) {
          const int x = now.gpu(j);
          if (x == h) continue;
          add(x);
          if (f >= 0) corr[x] += hops.cost(f, x);
        }
        for (int j = 0; j < next.size(); ++j) add(next.gpu(j));
      } else {
        if (f >= 0) add(f);
        add(h);
        for (int j = 0; j < now.size(); ++j) {
          const int x = now.gpu(j);
          if (x == ga && alone) continue;
          corr[x] += (f >= 0 ? hops.cost(f, x) : 0.0) + hops.cost(x, h);
        }
      }
    }
  }
  for (int a = 0; a < E; ++a) {
    const double* p = pull.data() + static_cast<std::size_t>(a) * G;
    const double* np = node_pull.data() + static_cast<std::size_t>(a) * N;
    double* g_row = gain.data() + static_cast<std::size_t>(a) * G;
    // g_row holds the corrections; turn it into a's cost at every GPU, then into gains.
    for (int g = 0; g < G; ++g) {
      g_row[g] =
          hops.sum_of_hops_to(total[static_cast<std::size_t>(a)], np[hops.node_of(g)], p[g]) -
          g_row[g];
    }
    const double here = g_row[state.primary(l, a)];
    for (int g = 0; g < G; ++g) g_row[g] = here - g_row[g];
  }
}

// The schemes that route from the owner, in transfers (without replicas a token's layer cost is
// about 2 |H_l| - 1 - [owner in H_l]):
//   2 * (tokens of a alone on its GPU - tokens of a that do not touch g yet)
//   + (tokens of a arriving from g - tokens of a arriving from a's GPU).
// The pass adds 2 per token of a touching g and 1 per token of a arriving from g; the constant
// terms are folded in per a afterwards.
//
// DeepEP normal mode across nodes merges a token's transfers per node as well: moving a to a
// node its token already reaches (through another expert, or the owner's node) saves an
// inter-node transfer each way. reach[a, n] counts a's tokens that reach node n without a;
// the estimate adds 2 (inter cost / intra cost) (reach[a, node(g)] - reach[a, node(a's GPU)]).
void owner_gains(const TokenState& state, int l, std::vector<double>& gain) {
  const int E = state.experts();
  const int G = state.gpus();
  const int k = state.k();
  const TokenSample& sample = state.sample();
  const routing::HopTable& hops = state.hops();
  const int N = hops.nodes();
  const bool node_merging = state.scheme() == Scheme::kDeepEP && N > 1;
  std::vector<std::int64_t> move(static_cast<std::size_t>(E) * G, 0);
  std::vector<std::int64_t> alone(static_cast<std::size_t>(E), 0);
  std::vector<std::int64_t> count(static_cast<std::size_t>(E), 0);
  std::vector<std::int64_t> reach(node_merging ? static_cast<std::size_t>(E) * N : 0, 0);
  routing::TokenGpus gpus(k);   // H_l of the token
  routing::TokenGpus nodes(k);  // the nodes of its chosen copies, with multiplicities
  const int* from = state.entries(l);
  for (std::int64_t t = 0; t < state.tokens(); ++t) {
    const std::span<const int> ch = state.choices(l, t);
    gpus.clear();
    nodes.clear();
    for (int c = 0; c < k; ++c) {
      gpus.add(ch[static_cast<std::size_t>(c)]);
      if (node_merging) nodes.add(hops.node_of(ch[static_cast<std::size_t>(c)]));
    }
    for (int c = 0; c < k; ++c) {
      const int a = sample.id(l, t, c);
      std::int64_t* m = move.data() + static_cast<std::size_t>(a) * G;
      ++count[static_cast<std::size_t>(a)];
      for (int j = 0; j < gpus.size(); ++j) {
        m[gpus.gpu(j)] += 2;
        if (gpus.gpu(j) == ch[static_cast<std::size_t>(c)] && gpus.count(j) == 1) {
          ++alone[static_cast<std::size_t>(a)];
        }
      }
      if (from != nullptr) ++m[from[t]];
      if (node_merging) {
        std::int64_t* r = reach.data() + static_cast<std::size_t>(a) * N;
        const int own = hops.node_of(ch[static_cast<std::size_t>(c)]);
        const int owner_node = hops.node_of(from[t]);
        for (int j = 0; j < nodes.size(); ++j) {
          const int n = nodes.gpu(j);
          if (n != owner_node && nodes.count(j) - (n == own ? 1 : 0) > 0) ++r[n];
        }
        ++r[owner_node];
      }
    }
  }
  const std::int64_t node_weight = static_cast<std::int64_t>(std::llround(
      2.0 * hops.cost_of_hop(routing::kInter) / std::max(1e-9, hops.cost_of_hop(routing::kIntra))));
  for (int a = 0; a < E; ++a) {
    std::int64_t* m = move.data() + static_cast<std::size_t>(a) * G;
    const int ga = state.primary(l, a);
    // m[ga] is 2 * count + arrivals from ga; the GPU it is on scores 0.
    const std::int64_t arrive_here = m[ga] - 2 * count[static_cast<std::size_t>(a)];
    const std::int64_t shift =
        2 * (alone[static_cast<std::size_t>(a)] - count[static_cast<std::size_t>(a)]) - arrive_here;
    for (int g = 0; g < G; ++g) m[g] += shift;
    if (node_merging) {
      const std::int64_t* r = reach.data() + static_cast<std::size_t>(a) * N;
      for (int g = 0; g < G; ++g) m[g] += node_weight * (r[hops.node_of(g)] - r[hops.node_of(ga)]);
    }
    m[ga] = 0;
    for (int g = 0; g < G; ++g)
      gain[static_cast<std::size_t>(a) * G + g] = static_cast<double>(m[g]);
  }
}

}  // namespace

void improve_layer(TokenState& state, const SearchControl& control, int l, double min_gain,
                   int max_tries) {
  const int E = state.experts();
  const int G = state.gpus();
  std::vector<double> gain(static_cast<std::size_t>(E) * G);
  if (state.from_owner()) {
    owner_gains(state, l, gain);
  } else {
    coherent_gains(state, l, gain);
  }
  struct Candidate {
    double estimate;
    int a, b;
  };
  std::vector<Candidate> candidates;
  for (int a = 0; a < E; ++a) {
    const double* ma = gain.data() + static_cast<std::size_t>(a) * G;
    const int ga = state.primary(l, a);
    for (int g = 0; g < G; ++g) {
      if (g == ga) continue;
      for (int b : state.members(l, g)) {
        if (b < a && state.primary(l, b) != ga) {
          const double est = ma[g] + gain[static_cast<std::size_t>(b) * G + ga];
          if (est > 0) candidates.push_back({est, a, b});
        }
      }
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& x, const Candidate& y) { return x.estimate > y.estimate; });
  // Exact evaluation in order of estimate; an expert moved once this sweep is left alone, so
  // the estimates of the rest stay close.
  std::vector<char> moved(static_cast<std::size_t>(E), 0);
  std::size_t tried = 0;
  const std::size_t budget = max_tries > 0 ? static_cast<std::size_t>(max_tries) : full_tries(E);
  for (const Candidate& c : candidates) {
    if (tried >= budget || control.out_of_time(state)) break;
    if (moved[static_cast<std::size_t>(c.a)] || moved[static_cast<std::size_t>(c.b)] ||
        !state.can_swap(l, c.a, c.b)) {
      continue;
    }
    ++tried;
    const double delta = state.try_swap(l, c.a, c.b);
    const bool ok = delta < -std::max(1e-9, min_gain) && state.within_limits();
    state.clear_dload();
    if (!ok) continue;
    state.do_swap(l, c.a, c.b);
    moved[static_cast<std::size_t>(c.a)] = moved[static_cast<std::size_t>(c.b)] = 1;
  }
}

}  // namespace exflow::solvers::token_moves
