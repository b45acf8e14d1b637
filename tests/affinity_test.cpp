// The affinity graph (transition counts, expert loads) and the profile statistics.
#include "exflow/affinity.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "exflow/trace.hpp"

namespace exflow {
namespace {

TEST(AffinityGraph, CountsTop1TransitionsAndLoads) {
  // tokens x layers: [0 1 2] [3 2 0] [0 2 0] [1 0 1]
  Trace t = Trace::from_ids({0, 1, 2, 3, 2, 0, 0, 2, 0, 1, 0, 1}, 4, 3, 1, 4);
  AffinityGraph g = AffinityGraph::from_trace(t, 1);
  EXPECT_EQ(g.tokens(), 4);
  EXPECT_EQ(g.transition(0, 0, 1), 1);
  EXPECT_EQ(g.transition(0, 3, 2), 1);
  EXPECT_EQ(g.transition(0, 0, 2), 1);
  EXPECT_EQ(g.transition(0, 1, 0), 1);
  EXPECT_EQ(g.transition(1, 2, 0), 2);
  EXPECT_EQ(g.transition(1, 1, 2), 1);
  EXPECT_EQ(g.transition(1, 0, 1), 1);
  std::int64_t total = 0;
  for (auto w : g.transitions()) total += w;
  EXPECT_EQ(total, 8);
  EXPECT_EQ(g.load(0, 0), 2);
  EXPECT_EQ(g.load(1, 2), 2);
  EXPECT_EQ(g.load(2, 0), 2);
  EXPECT_EQ(g.load(2, 3), 0);
}

TEST(AffinityGraph, TopKCountsEveryPairOfConsecutiveExperts) {
  // one token, 2 layers, k = 2: {0, 1} -> {2, 3}
  Trace t = Trace::from_ids({0, 1, 2, 3}, 1, 2, 2, 4);
  AffinityGraph g = AffinityGraph::from_trace(t, 1);
  EXPECT_EQ(g.transition(0, 0, 2), 1);
  EXPECT_EQ(g.transition(0, 0, 3), 1);
  EXPECT_EQ(g.transition(0, 1, 2), 1);
  EXPECT_EQ(g.transition(0, 1, 3), 1);
  EXPECT_EQ(g.load(0, 0) + g.load(0, 1), 2);
}

// C-order ids [tokens, layers, k], k distinct experts per row.
std::vector<std::int32_t> random_ids(std::int64_t tokens, int layers, int k, int experts,
                                     unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids;
  for (std::int64_t row = 0; row < tokens * layers; ++row) {
    const auto begin = static_cast<std::ptrdiff_t>(ids.size());
    while (static_cast<std::ptrdiff_t>(ids.size()) - begin < k) {  // k distinct experts
      const auto e = static_cast<std::int32_t>(rng() % experts);
      if (std::find(ids.begin() + begin, ids.end(), e) == ids.end()) ids.push_back(e);
    }
  }
  return ids;
}

Trace random_trace(std::int64_t tokens, int layers, int k, int experts, unsigned seed) {
  return Trace::from_ids(random_ids(tokens, layers, k, experts, seed), tokens, layers, k, experts);
}

TEST(AffinityGraph, SameCountsForAnyThreadCount) {
  Trace t = random_trace(9000, 5, 2, 16, 7);
  AffinityGraph one = AffinityGraph::from_trace(t, 1);
  AffinityGraph three = AffinityGraph::from_trace(t, 3);
  EXPECT_EQ(one.transitions(), three.transitions());
  EXPECT_EQ(one.loads(), three.loads());
}

// Counts every (layer l, layer l + 1) pair of a token's experts in C-order ids [T, L, k].
void count_directly(const std::vector<std::int32_t>& ids, int L, int k, int E,
                    std::vector<std::int64_t>& transitions, std::vector<std::int64_t>& loads) {
  transitions.assign(static_cast<std::size_t>(L - 1) * E * E, 0);
  loads.assign(static_cast<std::size_t>(L) * E, 0);
  const std::size_t row = static_cast<std::size_t>(L) * k;
  for (std::size_t at = 0; at < ids.size(); at += row) {
    const std::int32_t* token = ids.data() + at;
    for (int l = 0; l < L; ++l) {
      for (int a = 0; a < k; ++a) {
        const std::int32_t from = token[l * k + a];
        ++loads[static_cast<std::size_t>(l) * E + from];
        if (l + 1 == L) continue;
        for (int b = 0; b < k; ++b) {
          ++transitions[(static_cast<std::size_t>(l) * E + from) * E + token[(l + 1) * k + b]];
        }
      }
    }
  }
}

// The counting gathers tens of thousands of tokens per worker and counts them a layer pair at a
// time into 16-bit cells, added into the totals before they could overflow: token counts past
// one gathering (and past 65 535 in one cell), experts not a power of two, top-k, as many
// layers as leave room for one decoded block only, and several threads.
TEST(AffinityGraph, MatchesADirectCountAcrossGatheringsAndCellOverflows) {
  struct Case {
    std::int64_t tokens;
    int layers;
    int k;
    int experts;
    int threads;
  };
  for (const Case& c : {Case{70001, 3, 1, 1, 1}, Case{70001, 3, 1, 1, 2}, Case{100003, 4, 2, 7, 1},
                        Case{100003, 4, 2, 7, 5}, Case{40000, 5, 3, 97, 3},
                        Case{6000, 150, 4, 16, 2}, Case{1, 2, 1, 3, 4}}) {
    SCOPED_TRACE(std::to_string(c.tokens) + " tokens x " + std::to_string(c.layers) +
                 " layers x k " + std::to_string(c.k) + ", " + std::to_string(c.experts) +
                 " experts, " + std::to_string(c.threads) + " threads");
    std::vector<std::int32_t> ids = random_ids(c.tokens, c.layers, c.k, c.experts, 11);
    std::vector<std::int64_t> transitions, loads;
    count_directly(ids, c.layers, c.k, c.experts, transitions, loads);
    const Trace t = Trace::from_ids(std::move(ids), c.tokens, c.layers, c.k, c.experts);
    const AffinityGraph g = AffinityGraph::from_trace(t, c.threads);
    EXPECT_EQ(g.tokens(), c.tokens);
    EXPECT_TRUE(g.transitions() == transitions);
    EXPECT_TRUE(g.loads() == loads);
  }
}

TEST(Profile, DeterministicChainHasFullAffinity) {
  // expert e at layer l is always followed by (e + 1) mod 4; every expert equally loaded.
  std::vector<std::int32_t> ids;
  for (int t = 0; t < 400; ++t) {
    for (int l = 0; l < 3; ++l) ids.push_back((t + l) % 4);
  }
  AffinityProfile p = profile(AffinityGraph::from_trace(Trace::from_ids(ids, 400, 3, 1, 4), 1));
  ASSERT_EQ(p.pairs.size(), 2u);
  EXPECT_DOUBLE_EQ(p.uniform_share, 0.25);
  EXPECT_DOUBLE_EQ(p.pairs[0].top_successor_share, 1.0);
  EXPECT_NEAR(p.pairs[0].mutual_information_bits, 2.0, 1e-12);
  EXPECT_NEAR(p.mean_mutual_information_bits, 2.0, 1e-12);
  ASSERT_EQ(p.loads.size(), 3u);
  EXPECT_DOUBLE_EQ(p.loads[0].max_over_mean, 1.0);
  EXPECT_DOUBLE_EQ(p.loads[0].cv, 0.0);
}

TEST(Profile, IndependentRoutingHasNoAffinity) {
  AffinityProfile p = profile(AffinityGraph::from_trace(random_trace(200000, 2, 1, 8, 3), 2));
  EXPECT_NEAR(p.pairs[0].top_successor_share, 1.0 / 8, 0.01);
  EXPECT_LT(p.pairs[0].mutual_information_bits, 0.002);
}

TEST(Profile, LoadSkew) {
  // layer 0: expert 0 takes 3 of 4 tokens, expert 1 one.
  Trace t = Trace::from_ids({0, 0, 0, 1}, 4, 1, 1, 2);
  AffinityProfile p = profile(AffinityGraph::from_trace(t, 1));
  EXPECT_TRUE(p.pairs.empty());
  EXPECT_DOUBLE_EQ(p.loads[0].max_over_mean, 1.5);
  EXPECT_DOUBLE_EQ(p.loads[0].cv, 0.5);
  EXPECT_EQ(p.loads[0].max, 3);
  EXPECT_EQ(p.loads[0].min, 1);
}

}  // namespace
}  // namespace exflow
