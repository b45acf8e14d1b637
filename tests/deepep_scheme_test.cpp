// The DeepEP schemes of the evaluator against an independent implementation written from
// ../shared/docs/SCHEMES.md: random placements with replicas (two copies on one GPU included),
// top-1 and top-k, several nodes, sequences of tokens per owner.
//
// The reference routes each token by the document's words: owner (t / S) mod G; a copy on the
// owner, else the lowest-id copy on the owner's node, else the lowest-id copy; then counts the
// transfers of each scheme from the set of GPUs used, without the rulebook's code.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow {
namespace {

struct Reference {
  std::int64_t intra = 0;
  std::int64_t inter = 0;
  std::int64_t local = 0;              // token-layers with every expert on the owner
  std::vector<std::int64_t> gpu_load;  // [L, G]
};

Reference reference(const std::vector<std::int32_t>& ids, std::int64_t tokens, int layers, int k,
                    const Placement& p, int nodes, int per_node, std::int64_t seq_len,
                    Scheme scheme) {
  const int G = nodes * per_node;
  Reference r;
  r.gpu_load.assign(static_cast<std::size_t>(layers) * G, 0);
  const auto node = [&](int g) { return g / per_node; };
  const auto count = [&](int a, int b, std::int64_t times) {
    if (a == b) return;
    (node(a) == node(b) ? r.intra : r.inter) += 2 * times;  // dispatch and the mirrored combine
  };
  for (std::int64_t t = 0; t < tokens; ++t) {
    const int owner = static_cast<int>((t / seq_len) % G);
    for (int l = 0; l < layers; ++l) {
      std::vector<int> used;
      for (int c = 0; c < k; ++c) {
        const int e = ids[(static_cast<std::size_t>(t) * layers + l) * k + c];
        std::vector<int> copies = p.copies(l, e);
        int chosen = -1;
        if (std::find(copies.begin(), copies.end(), owner) != copies.end()) chosen = owner;
        for (int g : copies) {
          if (chosen < 0 && node(g) == node(owner)) chosen = g;
        }
        if (chosen < 0) chosen = copies.front();
        used.push_back(chosen);
        ++r.gpu_load[static_cast<std::size_t>(l) * G + chosen];
      }
      const std::set<int> h(used.begin(), used.end());
      r.local += h == std::set<int>{owner} ? 1 : 0;
      if (scheme == Scheme::kDeepEPLowLatency) {
        for (int g : used) count(owner, g, 1);
      } else if (scheme == Scheme::kDeepEP) {
        std::set<int> remote_nodes;
        for (int g : h) {
          if (node(g) != node(owner)) remote_nodes.insert(node(g));
        }
        for (int m : remote_nodes) {
          const int relay = m * per_node + owner % per_node;
          count(owner, relay, 1);
          for (int g : h) {
            if (node(g) == m) count(relay, g, 1);
          }
        }
        for (int g : h) {
          if (node(g) == node(owner)) count(owner, g, 1);
        }
      } else {
        for (int g : h) count(owner, g, 1);
      }
    }
  }
  return r;
}

// Ids [tokens, layers, k] with k distinct experts per row.
std::vector<std::int32_t> random_ids(std::mt19937& rng, std::int64_t tokens, int layers, int k,
                                     int experts) {
  std::vector<std::int32_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      std::vector<int> row;
      while (static_cast<int>(row.size()) < k) {
        const int e = static_cast<int>(rng() % static_cast<unsigned>(experts));
        if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
      }
      ids.insert(ids.end(), row.begin(), row.end());
    }
  }
  return ids;
}

// Every expert on a random GPU, plus `copies` random extra copies per layer (two on one GPU
// allowed).
Placement random_placement(std::mt19937& rng, int layers, int experts, int gpus, int copies) {
  Placement p(layers, experts, gpus);
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) p.set(l, e, static_cast<int>(rng() % gpus));
    for (int r = 0; r < copies; ++r) {
      p.add_copy(l, static_cast<int>(rng() % experts), static_cast<int>(rng() % gpus));
    }
  }
  return p;
}

TEST(DeepEPSchemes, MatchAnIndependentImplementation) {
  std::mt19937 rng(29);
  struct Case {
    int nodes, per_node, experts, layers, k;
    std::int64_t seq_len;
  };
  for (const Case c : {Case{2, 4, 16, 3, 1, 1}, Case{2, 4, 16, 3, 4, 1}, Case{3, 2, 12, 4, 3, 5},
                       Case{4, 2, 16, 2, 6, 1}, Case{1, 4, 8, 3, 2, 3}}) {
    const int G = c.nodes * c.per_node;
    const Topology topology(c.nodes, c.per_node);
    const std::int64_t tokens = 500;
    const std::vector<std::int32_t> ids = random_ids(rng, tokens, c.layers, c.k, c.experts);
    const Trace trace = Trace::from_ids(ids, tokens, c.layers, c.k, c.experts);
    const Placement p = random_placement(rng, c.layers, c.experts, G, G / 2);
    for (Scheme scheme : {Scheme::kBaseline, Scheme::kDeepEP, Scheme::kDeepEPLowLatency}) {
      EvalOptions eo;
      eo.scheme = scheme;
      eo.sequence_length = c.seq_len;
      const Metrics m = evaluate(trace, p, topology, eo);
      const Reference want =
          reference(ids, tokens, c.layers, c.k, p, c.nodes, c.per_node, c.seq_len, scheme);
      const std::string at = std::string(to_string(scheme)) + " " + std::to_string(c.nodes) + "x" +
                             std::to_string(c.per_node) + " k " + std::to_string(c.k);
      EXPECT_EQ(m.scheme, scheme);
      EXPECT_EQ(m.intra_transfers, want.intra) << at;
      EXPECT_EQ(m.inter_transfers, want.inter) << at;
      EXPECT_DOUBLE_EQ(m.cost, (want.intra * 1.0 + want.inter * 2.0) / tokens) << at;
      EXPECT_DOUBLE_EQ(m.local_fraction, static_cast<double>(want.local) / (tokens * c.layers))
          << at;
      EXPECT_EQ(m.gpu_load, want.gpu_load) << at;
    }
  }
}

// Transfers of one token-layer under a standard scheme, from the GPUs its columns use: (intra,
// inter), dispatch and combine together.
std::pair<double, double> scheme_transfers(const std::vector<int>& used, int owner, int per_node,
                                           Scheme scheme) {
  const auto node = [&](int g) { return g / per_node; };
  double intra = 0, inter = 0;
  const auto count = [&](int a, int b) {
    if (a != b) (node(a) == node(b) ? intra : inter) += 2;
  };
  const std::set<int> h(used.begin(), used.end());
  if (scheme == Scheme::kDeepEPLowLatency) {
    for (int g : used) count(owner, g);
  } else if (scheme == Scheme::kDeepEP) {
    std::set<int> remote;
    for (int g : h) {
      if (node(g) != node(owner)) remote.insert(node(g));
    }
    for (int m : remote) {
      const int relay = m * per_node + owner % per_node;
      count(owner, relay);
      for (int g : h) {
        if (node(g) == m) count(relay, g);
      }
    }
    for (int g : h) {
      if (node(g) == node(owner)) count(owner, g);
    }
  } else {
    for (int g : h) count(owner, g);
  }
  return {intra, inter};
}

// Copy choice even by enumeration: every combination of the columns' copies (the owner's copy
// if it has one, else any copy, each equally likely, columns independent), weighted by its
// probability. Returns expected (intra, inter) transfers and loads [L, G] over the trace.
struct Expected {
  double intra = 0, inter = 0;
  std::vector<double> gpu_load;
};

Expected enumerate_even(const std::vector<std::int32_t>& ids, std::int64_t tokens, int layers,
                        int k, const Placement& p, int per_node, std::int64_t seq_len,
                        Scheme scheme) {
  const int G = p.gpus();
  Expected x;
  x.gpu_load.assign(static_cast<std::size_t>(layers) * G, 0.0);
  for (std::int64_t t = 0; t < tokens; ++t) {
    const int owner = static_cast<int>((t / seq_len) % G);
    for (int l = 0; l < layers; ++l) {
      std::vector<std::vector<int>> options;  // per column, the copies it may use
      for (int c = 0; c < k; ++c) {
        const int e = ids[(static_cast<std::size_t>(t) * layers + l) * k + c];
        std::vector<int> copies = p.copies(l, e);
        std::sort(copies.begin(), copies.end());
        copies.erase(std::unique(copies.begin(), copies.end()), copies.end());
        if (std::find(copies.begin(), copies.end(), owner) != copies.end()) copies = {owner};
        options.push_back(copies);
      }
      std::vector<std::size_t> pick(static_cast<std::size_t>(k), 0);
      while (true) {
        double prob = 1;
        std::vector<int> used;
        for (int c = 0; c < k; ++c) {
          used.push_back(options[static_cast<std::size_t>(c)][pick[static_cast<std::size_t>(c)]]);
          prob /= static_cast<double>(options[static_cast<std::size_t>(c)].size());
        }
        const auto [intra, inter] = scheme_transfers(used, owner, per_node, scheme);
        x.intra += prob * intra;
        x.inter += prob * inter;
        for (int g : used) x.gpu_load[static_cast<std::size_t>(l) * G + g] += prob;
        int c = 0;
        while (c < k &&
               ++pick[static_cast<std::size_t>(c)] == options[static_cast<std::size_t>(c)].size()) {
          pick[static_cast<std::size_t>(c)] = 0;
          ++c;
        }
        if (c == k) break;
      }
    }
  }
  return x;
}

TEST(DeepEPSchemes, EvenCopyChoiceMatchesAnEnumerationOfEveryChoice) {
  std::mt19937 rng(31);
  struct Case {
    int nodes, per_node, experts, layers, k;
    std::int64_t seq_len;
  };
  for (const Case c : {Case{2, 4, 16, 2, 1, 1}, Case{2, 4, 16, 2, 4, 1}, Case{3, 2, 12, 3, 3, 5},
                       Case{1, 4, 8, 2, 2, 3}}) {
    const int G = c.nodes * c.per_node;
    const Topology topology(c.nodes, c.per_node);
    const std::int64_t tokens = 200;
    const std::vector<std::int32_t> ids = random_ids(rng, tokens, c.layers, c.k, c.experts);
    const Trace trace = Trace::from_ids(ids, tokens, c.layers, c.k, c.experts);
    const Placement p = random_placement(rng, c.layers, c.experts, G, G);
    for (Scheme scheme : {Scheme::kBaseline, Scheme::kDeepEP, Scheme::kDeepEPLowLatency}) {
      EvalOptions eo;
      eo.scheme = scheme;
      eo.sequence_length = c.seq_len;
      eo.replica_choice = ReplicaChoice::kEven;
      const Metrics m = evaluate(trace, p, topology, eo);
      const Expected want =
          enumerate_even(ids, tokens, c.layers, c.k, p, c.per_node, c.seq_len, scheme);
      const std::string at = std::string(to_string(scheme)) + " " + std::to_string(c.nodes) + "x" +
                             std::to_string(c.per_node) + " k " + std::to_string(c.k);
      EXPECT_NEAR(m.intra, want.intra / tokens, 1e-5) << at;
      EXPECT_NEAR(m.inter, want.inter / tokens, 1e-5) << at;
      // The whole-number totals are the expected ones rounded (halves either way).
      EXPECT_NEAR(static_cast<double>(m.intra_transfers), want.intra, 0.5 + 1e-6) << at;
      EXPECT_NEAR(static_cast<double>(m.inter_transfers), want.inter, 0.5 + 1e-6) << at;
      for (std::size_t i = 0; i < want.gpu_load.size(); ++i) {
        EXPECT_NEAR(static_cast<double>(m.gpu_load[i]), want.gpu_load[i], 0.5 + 1e-6) << at;
      }
      // The phases mirror each other and add up to the whole.
      EXPECT_NEAR(m.dispatch.inter + m.combine.inter, m.inter, 1e-9) << at;
      EXPECT_NEAR(m.dispatch.intra, m.combine.intra, 1e-9) << at;
    }
  }
}

TEST(DeepEPSchemes, EvenEqualsNearestWithoutReplicasAndIsRefusedForCoherent) {
  const Topology topology(2, 2);
  const Trace trace = Trace::from_ids({0, 3, 1, 2, 2, 3, 0, 1}, 4, 1, 2, 4);
  const Placement p(1, 4, 4, {0, 1, 2, 3});
  EvalOptions eo;
  eo.scheme = Scheme::kDeepEP;
  const Metrics nearest = evaluate(trace, p, topology, eo);
  eo.replica_choice = ReplicaChoice::kEven;
  const Metrics even = evaluate(trace, p, topology, eo);
  EXPECT_EQ(nearest.intra_transfers, even.intra_transfers);
  EXPECT_EQ(nearest.inter_transfers, even.inter_transfers);
  EXPECT_EQ(nearest.gpu_load, even.gpu_load);
  eo.scheme = Scheme::kContextCoherent;
  EXPECT_THROW(evaluate(trace, p, topology, eo), UsageError);
  EXPECT_EQ(parse_replica_choice("even"), ReplicaChoice::kEven);
  EXPECT_STREQ(to_string(ReplicaChoice::kNearest), "nearest");
  EXPECT_THROW(parse_replica_choice("random"), UsageError);
}

TEST(DeepEPSchemes, PhasesAddUpToTheTotalsOnEveryLayer) {
  std::mt19937 rng(7);
  const Topology topology(2, 2);
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 300 * 3 * 2; i += 2) {
    const int a = static_cast<int>(rng() % 8);
    ids.push_back(a);
    ids.push_back((a + 1 + static_cast<int>(rng() % 7)) % 8);
  }
  const Trace trace = Trace::from_ids(ids, 300, 3, 2, 8);
  Placement p(3, 8, 4, {0, 0, 1, 1, 2, 2, 3, 3, 1, 0, 3, 2, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 3, 2});
  p.add_copy(1, 4, 1);
  for (Scheme scheme :
       {Scheme::kContextCoherent, Scheme::kBaseline, Scheme::kDeepEP, Scheme::kDeepEPLowLatency}) {
    EvalOptions eo;
    eo.scheme = scheme;
    const Metrics m = evaluate(trace, p, topology, eo);
    const std::string at = to_string(scheme);
    EXPECT_NEAR(m.dispatch.cost + m.combine.cost, m.cost, 1e-9) << at;
    EXPECT_NEAR(m.dispatch.intra + m.combine.intra, m.intra, 1e-9) << at;
    EXPECT_NEAR(m.dispatch.inter + m.combine.inter, m.inter, 1e-9) << at;
    ASSERT_EQ(m.dispatch.cost_per_layer.size(), 3u) << at;
    double sum = 0;
    for (int l = 0; l < 3; ++l) {
      EXPECT_NEAR(m.dispatch.cost_per_layer[l] + m.combine.cost_per_layer[l], m.cost_per_layer[l],
                  1e-9)
          << at;
      EXPECT_NEAR(m.dispatch.intra_per_layer[l] * topology.intra_cost() +
                      m.dispatch.inter_per_layer[l] * topology.inter_cost(),
                  m.dispatch.cost_per_layer[l], 1e-9)
          << at;
      sum += m.dispatch.cost_per_layer[l];
    }
    EXPECT_NEAR(sum, m.dispatch.cost, 1e-9) << at;
    if (scheme != Scheme::kContextCoherent) {
      EXPECT_NEAR(m.dispatch.cost, m.combine.cost, 1e-9) << at;  // combine mirrors dispatch
    } else {
      EXPECT_NEAR(m.dispatch.cost_per_layer[0], 0.0, 1e-12) << at;  // no dispatch into layer 0
    }
  }
}

TEST(DeepEPSchemes, NormalModeSendsOneInterNodeTransferPerRemoteNode) {
  // 2 nodes x 4 GPUs; token 0 is owned by GPU 0 and uses GPUs 5, 6, 7 (node 1) and 1 (node 0).
  const Topology topology(2, 4);
  Placement p(1, 8, 8, {0, 1, 2, 3, 4, 5, 6, 7});
  const Trace trace = Trace::from_ids({5, 6, 7, 1}, 1, 1, 4, 8);
  EvalOptions eo;
  eo.scheme = Scheme::kDeepEP;
  const Metrics deepep = evaluate(trace, p, topology, eo);
  // Dispatch: 0 -> 4 (RDMA to the owner's local index), 4 -> 5, 4 -> 6, 4 -> 7, 0 -> 1; combine
  // the same reversed.
  EXPECT_EQ(deepep.inter_transfers, 2);
  EXPECT_EQ(deepep.intra_transfers, 8);
  eo.scheme = Scheme::kDeepEPLowLatency;
  const Metrics ll = evaluate(trace, p, topology, eo);
  EXPECT_EQ(ll.inter_transfers, 6);
  EXPECT_EQ(ll.intra_transfers, 2);
  eo.scheme = Scheme::kBaseline;
  const Metrics standard = evaluate(trace, p, topology, eo);
  EXPECT_EQ(standard.inter_transfers, 6);
  EXPECT_EQ(standard.intra_transfers, 2);
}

TEST(DeepEPSchemes, NamesParseAndPrint) {
  EXPECT_EQ(parse_scheme("coherent"), Scheme::kContextCoherent);
  EXPECT_EQ(parse_scheme("context-coherent"), Scheme::kContextCoherent);
  EXPECT_EQ(parse_scheme("standard"), Scheme::kBaseline);
  EXPECT_EQ(parse_scheme("deepep"), Scheme::kDeepEP);
  EXPECT_EQ(parse_scheme("deepep-ll"), Scheme::kDeepEPLowLatency);
  EXPECT_STREQ(to_string(Scheme::kDeepEP), "deepep");
  EXPECT_STREQ(to_string(Scheme::kDeepEPLowLatency), "deepep-ll");
  try {
    parse_scheme("ring");
    ADD_FAILURE() << "no exception";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "unknown scheme 'ring' (coherent, standard, deepep, deepep-ll)");
  }
}

}  // namespace
}  // namespace exflow
