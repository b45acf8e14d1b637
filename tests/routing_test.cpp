// The routing rulebook (src/core/routing.hpp), rule by rule on hand-made cases.
#include "core/routing.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "exflow/placement.hpp"
#include "exflow/topology.hpp"

namespace exflow::routing {
namespace {

TEST(Routing, HopTableFollowsTheTopology) {
  const HopTable hops(Topology(2, 2, 1.5, 4.0));
  EXPECT_EQ(hops.hop(1, 1), kLocal);
  EXPECT_EQ(hops.hop(0, 1), kIntra);
  EXPECT_EQ(hops.hop(1, 2), kInter);
  EXPECT_EQ(hops.cost(3, 3), 0.0);
  EXPECT_EQ(hops.cost(2, 3), 1.5);
  EXPECT_EQ(hops.cost(0, 3), 4.0);
  EXPECT_EQ(hops.node_of(3), 1);
}

TEST(Routing, OwnerDealsSequencesRoundRobin) {
  EXPECT_EQ(owner(5, 1, 4), 1);
  EXPECT_EQ(owner(5, 2, 4), 2);
  EXPECT_EQ(owner(17, 2, 4), 0);
}

TEST(Routing, CopyChoiceOwnGpuThenCheapestThenLowestId) {
  const HopTable hops(Topology(2, 2));  // GPUs 0 1 | 2 3
  const std::vector<int> copies = {3, 0, 2};
  EXPECT_EQ(choose_copy(copies, 2, hops), 2);                  // its own GPU's copy
  EXPECT_EQ(choose_copy(copies, 1, hops), 0);                  // within the node beats across
  EXPECT_EQ(choose_copy(std::vector<int>{3, 2}, 0, hops), 2);  // both across: lowest id
  EXPECT_EQ(choose_copy(std::vector<int>{3}, 0, hops), 3);
  // Equal costs within and across nodes: the lowest id wins.
  const HopTable flat(Topology(2, 2, 1.0, 1.0));
  EXPECT_EQ(choose_copy(std::vector<int>{3, 2, 1}, 0, flat), 1);
  EXPECT_EQ(start_gpu(3, std::vector<int>{2, 1}), 1);
}

TEST(Routing, HomeMostExpertsThenColumnZeroThenLowestId) {
  TokenGpus h(4);
  for (int g : {3, 1, 1, 3}) h.add(g);  // tie 2-2: column 0's GPU
  EXPECT_EQ(h.home(), 3);
  h.clear();
  for (int g : {3, 2, 1, 1}) h.add(g);  // most on GPU 1
  EXPECT_EQ(h.home(), 1);
  TokenGpus five(5);
  for (int g : {3, 2, 2, 0, 0}) five.add(g);
  EXPECT_EQ(five.size(), 3);
  EXPECT_EQ(five.home(), 0);  // 2-2 between GPUs 2 and 0, column 0's GPU has one: lowest id
}

TEST(Routing, TransfersOfEachScheme) {
  TokenGpus h(3);
  for (int g : {2, 0, 2}) h.add(g);
  std::vector<std::vector<int>> seen;
  auto record = [&](int phase, int src, int dst) { seen.push_back({phase, src, dst}); };
  // Context-coherent from GPU 1: dispatch to 2 and 0, combine 0 into the home 2.
  EXPECT_FALSE(coherent_transfers(h, 1, h.home(), record));
  EXPECT_EQ(seen, (std::vector<std::vector<int>>{
                      {kDispatch, 1, 2}, {kDispatch, 1, 0}, {kCombine, 0, 2}}));
  seen.clear();
  // Layer 0 (no previous home): combines only; "local" means no dispatch was needed.
  EXPECT_TRUE(coherent_transfers(h, -1, 2, record));
  EXPECT_EQ(seen, (std::vector<std::vector<int>>{{kCombine, 0, 2}}));
  seen.clear();
  // Baseline from owner 0: to GPU 2 and back.
  EXPECT_FALSE(baseline_transfers(h, 0, record));
  EXPECT_EQ(seen, (std::vector<std::vector<int>>{{kDispatch, 0, 2}, {kCombine, 2, 0}}));
  EXPECT_EQ(coherent_layer_cost(h, 1, 2, HopTable(Topology(1, 3))), 3.0);
}

TEST(Routing, CopyTableListsCopiesAscending) {
  Placement p(2, 3, 4);
  p.set(1, 2, 3);
  p.add_replica(1, 2, 1);
  p.add_replica(1, 2, 2);
  const CopyTable copies(p);
  const std::span<const int> c = copies.copies(1, 2);
  EXPECT_EQ(std::vector<int>(c.begin(), c.end()), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(copies.copies(0, 0).size(), 1u);
  EXPECT_EQ(copies.choose(1, 2, 0, HopTable(Topology(2, 2))), 1);
}

}  // namespace
}  // namespace exflow::routing
