// The evaluator: hand-computed cases, the original tool's metric definitions, and an
// independent token-by-token reference on random traces and placements.
#include "exflow/evaluate.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

TEST(Evaluate, HandComputedTop1SingleNode) {
  // E = 4 on 1 node x 2 GPUs, vanilla: experts 0,1 -> GPU 0, experts 2,3 -> GPU 1.
  // token: experts -> GPUs      moves
  //   0:   0 1 2  -> 0 0 1     1
  //   1:   3 2 0  -> 1 1 0     1
  //   2:   0 2 0  -> 0 1 0     2
  //   3:   1 0 1  -> 0 0 0     0
  Trace t = Trace::from_ids({0, 1, 2, 3, 2, 0, 0, 2, 0, 1, 0, 1}, 4, 3, 1, 4);
  Topology topo(1, 2);
  Metrics m = evaluate(t, vanilla_placement(3, 4, topo), topo, {});
  EXPECT_DOUBLE_EQ(m.cost, 1.0);
  EXPECT_DOUBLE_EQ(m.intra, 1.0);
  EXPECT_DOUBLE_EQ(m.inter, 0.0);
  EXPECT_DOUBLE_EQ(m.cintra, 1.0);
  EXPECT_DOUBLE_EQ(m.cinter, 0.0);
  EXPECT_EQ(m.intra_transfers, 4);
  ASSERT_EQ(m.local_fraction_per_layer.size(), 2u);
  EXPECT_DOUBLE_EQ(m.local_fraction_per_layer[0], 0.75);
  EXPECT_DOUBLE_EQ(m.local_fraction_per_layer[1], 0.25);
  EXPECT_DOUBLE_EQ(m.local_fraction, 0.5);
  // GPU loads per layer: [3 1] [2 2] [3 1]; mean 2.
  EXPECT_EQ(m.gpu_load, (std::vector<std::int64_t>{3, 1, 2, 2, 3, 1}));
  EXPECT_DOUBLE_EQ(m.load_ratio_per_layer[0], 1.5);
  EXPECT_DOUBLE_EQ(m.load_ratio_per_layer[1], 1.0);
  EXPECT_DOUBLE_EQ(m.load_ratio_max, 1.5);
  EXPECT_DOUBLE_EQ(m.load_ratio_mean, 4.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.cost_per_layer[0], 0.0);
  EXPECT_DOUBLE_EQ(m.cost_per_layer[1], 0.25);
  EXPECT_DOUBLE_EQ(m.cost_per_layer[2], 0.75);
}

TEST(Evaluate, HandComputedTop1MultiNodeWithTheSeedsNormalisation) {
  // 2 nodes x 2 GPUs, expert e on GPU e. token 0: 0 1 2 3 (intra, inter, intra);
  // token 1: 0 0 3 2 (local, inter, intra). intra = 3/2, inter = 2/2.
  Trace t = Trace::from_ids({0, 1, 2, 3, 0, 0, 3, 2}, 2, 4, 1, 4);
  Topology topo(2, 2);
  Placement p = vanilla_placement(4, 4, topo);
  Metrics m = evaluate(t, p, topo, {});
  EXPECT_DOUBLE_EQ(m.intra, 1.5);
  EXPECT_DOUBLE_EQ(m.inter, 1.0);
  EXPECT_DOUBLE_EQ(m.cost, 3.5);    // 1.5 * 1 + 1.0 * 2
  EXPECT_DOUBLE_EQ(m.cintra, 1.5);  // intra / (P - 1)
  EXPECT_DOUBLE_EQ(m.cinter, 0.5);  // inter / (P (N - 1))
  EXPECT_DOUBLE_EQ(m.local_fraction, 1.0 / 6.0);

  Topology weighted(2, 2, 3.0, 10.0);
  EXPECT_DOUBLE_EQ(evaluate(t, p, weighted, {}).cost, 1.5 * 3.0 + 1.0 * 10.0);
}

// 1 node x 3 GPUs, 9 experts, vanilla: GPU g holds experts 3g, 3g+1, 3g+2. k = 5.
Metrics eval_k5(std::vector<std::int32_t> ids) {
  Trace t = Trace::from_ids(std::move(ids), 1, 2, 5, 9);
  Topology topo(1, 3);
  return evaluate(t, vanilla_placement(2, 9, topo), topo, {});
}

TEST(Evaluate, TopKHomeTieGoesToLowestGpuWhenColumnZeroIsNotAmongTheBest) {
  // Layer 0: experts 6 | 3 4 | 0 1 -> GPU 2 holds 1, GPU 1 holds 2, GPU 0 holds 2: home 0.
  //   combine 2 -> 0 and 1 -> 0: 2 transfers.
  // Layer 1: experts 0 1 2 | 6 7 -> H = {0, 2}; dispatch 0 -> 2: 1 transfer (from GPU 1
  //   it would be 2); home 0 (3 experts); combine 2 -> 0: 1 transfer. Total 4.
  Metrics m = eval_k5({6, 3, 4, 0, 1, 0, 1, 2, 6, 7});
  EXPECT_EQ(m.intra_transfers, 4);
  EXPECT_DOUBLE_EQ(m.cost, 4.0);
  EXPECT_DOUBLE_EQ(m.local_fraction, 0.0);
}

TEST(Evaluate, TopKHomeTieGoesToColumnZerosGpu) {
  // Layer 0: experts 3 | 0 | 6 | 4 | 1 -> GPU 1: 2, GPU 0: 2, GPU 2: 1; column 0 is on GPU 1,
  //   which is tied for most: home 1. Combines 0 -> 1, 2 -> 1: 2 transfers.
  // Layer 1: experts 3 4 5 6 7 -> H = {1, 2}: dispatch 1 -> 2 (1; from GPU 0 it would be
  //   2); home 1; combine 2 -> 1: 1. Total 4.
  Metrics m = eval_k5({3, 0, 6, 4, 1, 3, 4, 5, 6, 7});
  EXPECT_EQ(m.intra_transfers, 4);
}

TEST(Evaluate, TopKStaysLocalWhenAllExpertsAreOnTheHome) {
  // Top-3 rows of experts 0..2, all on GPU 0 of the vanilla placement of 9 experts.
  Trace t = Trace::from_ids({0, 1, 2, 2, 0, 1}, 1, 2, 3, 9);
  Topology topo(1, 3);
  Metrics m = evaluate(t, vanilla_placement(2, 9, topo), topo, {});
  EXPECT_EQ(m.intra_transfers, 0);
  EXPECT_DOUBLE_EQ(m.local_fraction, 1.0);
  EXPECT_DOUBLE_EQ(m.load_ratio_max, 3.0);  // all 3 assignments on GPU 0, mean 1
}

TEST(Evaluate, BaselineDispatchesAndCombinesThroughTheOwner) {
  // 1 node x 2 GPUs, vanilla over 4 experts. token 0 (owner GPU 0): experts 0 2 -> GPUs 0 1;
  // token 1 (owner GPU 1): experts 0 3 -> GPUs 0 1. Each non-owner GPU costs 2 transfers.
  Trace t = Trace::from_ids({0, 2, 0, 3}, 2, 2, 1, 4);
  Topology topo(1, 2);
  EvalOptions o;
  o.scheme = Scheme::kBaseline;
  Metrics m = evaluate(t, vanilla_placement(2, 4, topo), topo, o);
  EXPECT_EQ(m.intra_transfers, 4);
  EXPECT_DOUBLE_EQ(m.cost, 2.0);
  ASSERT_EQ(m.local_fraction_per_layer.size(), 2u);
  EXPECT_DOUBLE_EQ(m.local_fraction_per_layer[0], 0.5);
  EXPECT_DOUBLE_EQ(m.local_fraction_per_layer[1], 0.5);
}

TEST(Evaluate, ReplicasAreUsedWhereTheTokenIsElseTheNearest) {
  // 2 nodes x 2 GPUs, 4 experts, expert e on GPU e; expert 3 of layer 1 also on GPU 1 and
  // expert 2 of layer 1 also on GPU 0.
  //   token 0: 1 -> 3: on GPU 1, expert 3 has a copy there: no move.
  //   token 1: 0 -> 3: on GPU 0; copies of 3 on GPUs 1 (same node) and 3: uses 1, one intra.
  //   token 2: 0 -> 2: uses the copy on GPU 0: no move.
  //   token 3: 3 -> 2: on GPU 3; copies of 2 on GPUs 0 (other node) and 2 (same node): 2.
  Trace t = Trace::from_ids({1, 3, 0, 3, 0, 2, 3, 2}, 4, 2, 1, 4);
  Topology topo(2, 2);
  Placement p = vanilla_placement(2, 4, topo);
  p.add_replica(1, 3, 1);
  p.add_replica(1, 2, 0);
  Metrics m = evaluate(t, p, topo, {});
  EXPECT_EQ(m.intra_transfers, 2);
  EXPECT_EQ(m.inter_transfers, 0);
  EXPECT_DOUBLE_EQ(m.local_fraction, 0.5);
  EXPECT_EQ(m.replicas, 2);
  // Layer 1 copies used: GPU 1 (token 0), 1 (token 1), 0 (token 2), 2 (token 3); only the
  // last is not its expert's first copy (expert 3's first copy is GPU 1, expert 2's GPU 0).
  EXPECT_EQ(m.replica_assignments, 1);
  EXPECT_EQ(m.gpu_load, (std::vector<std::int64_t>{2, 1, 0, 1, 1, 2, 1, 0}));

  // Without the replicas: tokens 0 (1 -> 3, inter), 1 (0 -> 3, inter), 2 (0 -> 2, inter),
  // 3 (3 -> 2, intra).
  Metrics plain = evaluate(t, vanilla_placement(2, 4, topo), topo, {});
  EXPECT_EQ(plain.intra_transfers, 1);
  EXPECT_EQ(plain.inter_transfers, 3);
}

TEST(Evaluate, NearestReplicaFollowsHopCostNotHopClass) {
  // 2 nodes x 2 GPUs where crossing nodes is cheaper (1) than staying in one (2). Expert 1 of
  // layer 1 has copies on GPUs 1 (same node as GPU 0) and 2 (other node): a token coming from
  // GPU 0 uses the copy on GPU 2, one inter-node transfer of cost 1.
  Trace t = Trace::from_ids({0, 1}, 1, 2, 1, 4);
  Topology topo(2, 2, 2.0, 1.0);
  Placement p(2, 4, 4, {0, 1, 2, 3, 3, 1, 0, 2});
  p.add_replica(1, 1, 2);
  Metrics m = evaluate(t, p, topo, {});
  EXPECT_EQ(m.inter_transfers, 1);
  EXPECT_EQ(m.intra_transfers, 0);
  EXPECT_DOUBLE_EQ(m.cost, 1.0);
}

TEST(Evaluate, TopKReplicaOnTheHomeAvoidsTheDispatch) {
  // 1 node x 2 GPUs, 4 experts, vanilla (0,1 | 2,3), k = 2. Layer 0: experts 0 1 -> home 0.
  // Layer 1: experts 2 3 both on GPU 1: dispatch 0 -> 1, home 1. With a replica of expert 2 on
  // GPU 0: H = {0, 1}, one dispatch 0 -> 1, home 0 (column 0's GPU wins the tie), one combine:
  // the replica costs a transfer here. GPU 0 becomes expert 2's first copy.
  Trace t = Trace::from_ids({0, 1, 2, 3}, 1, 2, 2, 4);
  Topology topo(1, 2);
  Placement p = vanilla_placement(2, 4, topo);
  EXPECT_EQ(evaluate(t, p, topo, {}).intra_transfers, 1);
  p.add_replica(1, 2, 0);
  Metrics m = evaluate(t, p, topo, {});
  EXPECT_EQ(m.intra_transfers, 2);
  EXPECT_EQ(m.gpu_load, (std::vector<std::int64_t>{2, 0, 1, 1}));
  EXPECT_EQ(m.replica_assignments, 0);
}

TEST(Evaluate, BaselineOwnerDealsWholeSequences) {
  // 4 tokens in sequences of 2 on 2 GPUs: tokens 0, 1 owned by GPU 0, tokens 2, 3 by GPU 1.
  // Every token uses expert 0 (GPU 0) at both layers: only tokens 2, 3 move, 2 transfers per
  // layer each, one dispatch 1 -> 0 and one combine 0 -> 1.
  Trace t = Trace::from_ids({0, 0, 0, 0, 0, 0, 0, 0}, 4, 2, 1, 2);
  Topology topo(1, 2);
  EvalOptions o;
  o.scheme = Scheme::kBaseline;
  o.sequence_length = 2;
  o.traffic = true;
  Metrics m = evaluate(t, vanilla_placement(2, 2, topo), topo, o);
  EXPECT_EQ(m.intra_transfers, 8);
  const std::vector<std::int64_t> per_layer = {0, 0, 2, 0, 0, 2, 0, 0};  // [phase, src, dst]
  std::vector<std::int64_t> expected = per_layer;
  expected.insert(expected.end(), per_layer.begin(), per_layer.end());
  EXPECT_EQ(m.traffic, expected);
  o.sequence_length = 0;
  EXPECT_THROW(evaluate(t, vanilla_placement(2, 2, topo), topo, o), UsageError);
}

TEST(Evaluate, RejectsMismatchedPlacement) {
  Trace t = Trace::from_ids({0, 1, 2, 3}, 2, 2, 1, 4);
  Topology topo(1, 2);
  EXPECT_THROW(evaluate(t, vanilla_placement(3, 4, topo), topo, {}), InputError);
  EXPECT_THROW(evaluate(t, vanilla_placement(2, 4, Topology(1, 4)), topo, {}), InputError);
}

// ---------------------------------------------------------------------------------------------
// Reference: a direct transcription of DESIGN.md section 3, one token at a time, with no
// shared code with the evaluator.

struct Reference {
  double cost = 0;
  std::int64_t intra = 0;
  std::int64_t inter = 0;
  std::int64_t local = 0;
  std::int64_t replica_assignments = 0;
  std::vector<std::int64_t> load;
  std::vector<std::int64_t> traffic;  // [L, 2, G, G]: layer, phase (dispatch, combine), src, dst
};

Reference reference(const Trace& trace, const Placement& p, const Topology& topo, Scheme scheme,
                    std::int64_t seq_len = 1) {
  Reference r;
  const int G = topo.gpus();
  r.load.assign(static_cast<std::size_t>(trace.layers()) * G, 0);
  r.traffic.assign(static_cast<std::size_t>(trace.layers()) * 2 * G * G, 0);
  int layer = 0;
  auto transfer = [&](int a, int b, int phase) {
    if (a == b) return;
    bool same_node = a / topo.gpus_per_node() == b / topo.gpus_per_node();
    (same_node ? r.intra : r.inter) += 1;
    r.cost += same_node ? topo.intra_cost() : topo.inter_cost();
    ++r.traffic[static_cast<std::size_t>(((layer * 2 + phase) * G + a) * G + b)];
  };
  // The copy a token on GPU `at` uses: its own, else the cheapest, ties to the lowest id.
  auto copy_used = [&](int l, int e, int at) {
    std::vector<int> copies = p.copies(l, e);
    int best = copies[0];
    for (int g : copies) {
      if (g == at) return g;
      if (topo.cost(at, g) < topo.cost(at, best)) best = g;
    }
    return best;
  };
  for (std::int64_t t = 0; t < trace.tokens(); ++t) {
    int prev_home = -1;
    const int owner = static_cast<int>((t / seq_len) % G);
    for (int l = 0; l < trace.layers(); ++l) {
      layer = l;
      int at = scheme == Scheme::kBaseline ? owner
               : l > 0                     ? prev_home
                                           : p.copies(0, trace.at(t, 0, 0))[0];
      std::map<int, int> held;  // GPU -> experts of the token it holds
      int col0 = -1;
      for (int c = 0; c < trace.k(); ++c) {
        int e = trace.at(t, l, c);
        int g = copy_used(l, e, at);
        if (c == 0) col0 = g;
        ++held[g];
        ++r.load[static_cast<std::size_t>(l) * topo.gpus() + g];
        r.replica_assignments += g != p.gpu(l, e);
      }
      if (scheme == Scheme::kBaseline) {
        for (auto [g, n] : held) {
          transfer(owner, g, 0);
          transfer(g, owner, 1);
        }
        r.local += (held.size() == 1 && held.count(owner)) ? 1 : 0;
        continue;
      }
      int best = 0;
      for (auto [g, n] : held) best = std::max(best, n);
      int home = col0;
      if (held[col0] != best) {
        for (auto [g, n] : held) {
          if (n == best) {
            home = g;  // std::map iterates in increasing GPU id: the first is the lowest
            break;
          }
        }
      }
      if (l > 0) {
        for (auto [g, n] : held) transfer(prev_home, g, 0);
        r.local += (held.size() == 1 && held.count(prev_home)) ? 1 : 0;
      }
      for (auto [g, n] : held) transfer(g, home, 1);
      prev_home = home;
    }
  }
  return r;
}

Trace random_trace(std::int64_t tokens, int layers, int k, int experts, std::mt19937& rng) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens) * layers * k);
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      // k distinct experts, as a router produces.
      std::set<int> chosen;
      while (static_cast<int>(chosen.size()) < k) chosen.insert(static_cast<int>(rng() % experts));
      std::vector<int> order(chosen.begin(), chosen.end());
      std::shuffle(order.begin(), order.end(), rng);
      for (int c = 0; c < k; ++c)
        ids[(static_cast<std::size_t>(t) * layers + l) * k + c] = order[c];
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

Placement random_balanced(int layers, int experts, const Topology& topo, std::mt19937& rng) {
  Placement p = vanilla_placement(layers, experts, topo);
  for (int l = 0; l < layers; ++l) {
    std::vector<int> row(p.gpu_of().begin() + l * experts, p.gpu_of().begin() + (l + 1) * experts);
    std::shuffle(row.begin(), row.end(), rng);
    for (int e = 0; e < experts; ++e) p.set(l, e, row[e]);
  }
  return p;
}

// Adds `per_gpu` replicas of random experts to every GPU of every layer.
void add_random_replicas(Placement& p, int per_gpu, std::mt19937& rng) {
  for (int l = 0; l < p.layers(); ++l) {
    for (int g = 0; g < p.gpus(); ++g) {
      for (int added = 0; added < per_gpu;) {
        int e = static_cast<int>(rng() % p.experts());
        std::vector<int> c = p.copies(l, e);
        if (std::find(c.begin(), c.end(), g) != c.end()) continue;
        p.add_replica(l, e, g);
        ++added;
      }
    }
  }
}

struct RandomCase {
  int nodes, gpus_per_node, experts, layers, k;
  Scheme scheme;
  int replicas = 0;          // per GPU per layer
  std::int64_t seq_len = 1;  // baseline owner: (t / seq_len) mod G
};

class EvaluateMatchesReference : public ::testing::TestWithParam<RandomCase> {};

TEST_P(EvaluateMatchesReference, OnRandomTracesAndPlacements) {
  const RandomCase c = GetParam();
  std::mt19937 rng(1234 + c.nodes * 100 + c.gpus_per_node * 10 + c.k);
  Topology topo(c.nodes, c.gpus_per_node, 1.0, 2.5);
  Trace trace = random_trace(5000, c.layers, c.k, c.experts, rng);
  for (int rep = 0; rep < 3; ++rep) {
    Placement p = random_balanced(c.layers, c.experts, topo, rng);
    add_random_replicas(p, c.replicas, rng);
    Reference r = reference(trace, p, topo, c.scheme, c.seq_len);
    EvalOptions o;
    o.scheme = c.scheme;
    o.sequence_length = c.seq_len;
    for (int threads : {1, 3}) {
      o.threads = threads;
      Metrics m = evaluate(trace, p, topo, o);
      EXPECT_EQ(m.intra_transfers, r.intra);
      EXPECT_EQ(m.inter_transfers, r.inter);
      EXPECT_NEAR(m.cost, r.cost / trace.tokens(), 1e-12 * std::max(1.0, m.cost));
      EXPECT_EQ(m.gpu_load, r.load);
      EXPECT_EQ(m.replica_assignments, r.replica_assignments);
      double local_entries = static_cast<double>(m.local_fraction_per_layer.size());
      EXPECT_NEAR(m.local_fraction, r.local / (local_entries * trace.tokens()), 1e-12);
      EXPECT_TRUE(m.traffic.empty());
      o.traffic = true;
      o.gpu_traffic = true;
      Metrics with_traffic = evaluate(trace, p, topo, o);
      o.traffic = false;
      o.gpu_traffic = false;
      EXPECT_EQ(with_traffic.traffic, r.traffic);
      // Per-GPU volumes are the matrix's row and column sums by link class.
      const int G = topo.gpus();
      std::vector<std::int64_t> volumes(static_cast<std::size_t>(trace.layers()) * 2 * G * 4, 0);
      for (int lp = 0; lp < trace.layers() * 2; ++lp) {
        for (int a = 0; a < G; ++a) {
          for (int b = 0; b < G; ++b) {
            const std::int64_t n = r.traffic[static_cast<std::size_t>((lp * G + a) * G + b)];
            const int inter = topo.node_of(a) != topo.node_of(b) ? 1 : 0;
            volumes[static_cast<std::size_t>((lp * G + a) * 4 + inter)] += n;
            volumes[static_cast<std::size_t>((lp * G + b) * 4 + 2 + inter)] += n;
          }
        }
      }
      EXPECT_EQ(with_traffic.gpu_traffic, volumes);
      EXPECT_EQ(with_traffic.intra_transfers, r.intra);
      EXPECT_EQ(with_traffic.cost_per_layer, m.cost_per_layer);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, EvaluateMatchesReference,
                         ::testing::Values(RandomCase{1, 4, 8, 6, 1, Scheme::kContextCoherent},
                                           RandomCase{2, 4, 16, 5, 1, Scheme::kContextCoherent},
                                           RandomCase{3, 2, 12, 4, 1, Scheme::kContextCoherent},
                                           RandomCase{1, 8, 64, 4, 6, Scheme::kContextCoherent},
                                           RandomCase{2, 4, 32, 4, 4, Scheme::kContextCoherent},
                                           RandomCase{1, 4, 8, 5, 1, Scheme::kBaseline},
                                           RandomCase{2, 2, 16, 4, 3, Scheme::kBaseline},
                                           RandomCase{1, 4, 8, 5, 1, Scheme::kContextCoherent, 1},
                                           RandomCase{2, 4, 16, 5, 1, Scheme::kContextCoherent, 2},
                                           RandomCase{1, 8, 64, 4, 6, Scheme::kContextCoherent, 1},
                                           RandomCase{2, 4, 32, 4, 4, Scheme::kContextCoherent, 2},
                                           RandomCase{2, 2, 16, 4, 3, Scheme::kBaseline, 1},
                                           RandomCase{2, 2, 16, 4, 3, Scheme::kBaseline, 0, 7},
                                           RandomCase{1, 4, 8, 5, 1, Scheme::kBaseline, 1, 64}));

TEST(Evaluate, EvaluateAllMatchesSeparateEvaluations) {
  std::mt19937 rng(5);
  Topology topo(2, 2);
  Trace trace = random_trace(3000, 5, 2, 8, rng);
  Placement a = random_balanced(5, 8, topo, rng);
  Placement b = vanilla_placement(5, 8, topo);
  std::vector<Metrics> both = evaluate_all(trace, {&a, &b}, topo, {});
  EXPECT_EQ(both[0].gpu_load, evaluate(trace, a, topo, {}).gpu_load);
  EXPECT_DOUBLE_EQ(both[0].cost, evaluate(trace, a, topo, {}).cost);
  EXPECT_DOUBLE_EQ(both[1].cost, evaluate(trace, b, topo, {}).cost);
}

TEST(Evaluate, TopKPathWithKEqualOneEqualsTheTop1Path) {
  // A replica of an expert no token uses sends a top-1 trace through the general top-k walk
  // (the top-1 fast path handles placements without replicas only): every metric must agree.
  std::mt19937 rng(21);
  Topology topo(2, 4, 1.0, 3.0);
  Trace trace = random_trace(4000, 6, 1, 15, rng);  // ids 0..14 of E = 16
  std::vector<std::int32_t> ids;
  for (std::int64_t t = 0; t < trace.tokens(); ++t) {
    for (int l = 0; l < 6; ++l) ids.push_back(trace.at(t, l));
  }
  Trace wide = Trace::from_ids(ids, trace.tokens(), 6, 1, 16);
  Placement plain = random_balanced(6, 16, topo, rng);
  Placement with_replica = plain;
  const int unused_gpu = (plain.gpu(3, 15) + 1) % topo.gpus();
  with_replica.add_replica(3, 15, unused_gpu);
  Metrics a = evaluate(wide, plain, topo, {});
  Metrics b = evaluate(wide, with_replica, topo, {});
  EXPECT_EQ(a.intra_transfers, b.intra_transfers);
  EXPECT_EQ(a.inter_transfers, b.inter_transfers);
  EXPECT_DOUBLE_EQ(a.cost, b.cost);
  EXPECT_EQ(a.local_fraction_per_layer, b.local_fraction_per_layer);
  EXPECT_EQ(a.cost_per_layer, b.cost_per_layer);
  EXPECT_EQ(a.gpu_load, b.gpu_load);
  EXPECT_EQ(b.replicas, 1);
  EXPECT_EQ(b.replica_assignments, 0);
}

TEST(Evaluate, TopkOptionScoresColumnZeroOfATopKFile) {
  std::mt19937 rng(9);
  Topology topo(2, 2);
  Trace top3 = random_trace(2000, 4, 3, 8, rng);
  std::vector<std::int64_t> all;
  std::vector<std::int32_t> first;
  for (std::int64_t t = 0; t < top3.tokens(); ++t) {
    for (int l = 0; l < 4; ++l) {
      first.push_back(top3.at(t, l, 0));
      for (int c = 0; c < 3; ++c) all.push_back(top3.at(t, l, c));
    }
  }
  test::TempDir dir;
  test::write_npy(dir.file("top3.npy"), all, {top3.tokens(), 4, 3}, "<i2");
  TraceOpenOptions options;
  options.topk = 1;
  options.experts = 8;
  Trace restricted = Trace::open(dir.file("top3.npy"), options);
  Trace top1 = Trace::from_ids(first, top3.tokens(), 4, 1, 8);
  Placement p = random_balanced(4, 8, topo, rng);
  Metrics a = evaluate(restricted, p, topo, {});
  Metrics b = evaluate(top1, p, topo, {});
  EXPECT_EQ(a.k, 1);
  EXPECT_EQ(a.intra_transfers, b.intra_transfers);
  EXPECT_EQ(a.inter_transfers, b.inter_transfers);
  EXPECT_EQ(a.gpu_load, b.gpu_load);
}

}  // namespace
}  // namespace exflow
