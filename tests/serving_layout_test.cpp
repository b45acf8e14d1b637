// Tests for how placements meet the serving engines' maps: decoder layers (dense rows added on
// write, dropped on read), physical slots that divide over the GPUs when the experts do not
// (E + R redundant slots), two copies of an expert on one GPU as upstream EPLB makes them, and
// EPLB's log2phy padding. Every map here is built the way the upstream writers lay it out:
// GPU-major slots, one row per decoder layer, -1 padding.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/formats.hpp"
#include "exflow/placement.hpp"
#include "exflow/plan.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;
using test::write_bytes;

json ReadJson(const std::string& path) {
  return json::parse(test::read_bytes(path));
}

// A deterministic top-k trace whose experts repeat from layer to layer (so placements matter).
Trace SkewedTrace(std::int64_t tokens, int layers, int k, int experts, std::uint64_t seed) {
  std::vector<std::int32_t> ids;
  std::uint64_t s = seed;
  auto next = [&] {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((s >> 33) % 1000003);
  };
  for (std::int64_t t = 0; t < tokens; ++t) {
    const int base = next() % experts;
    for (int l = 0; l < layers; ++l) {
      std::vector<int> row;
      while (static_cast<int>(row.size()) < k) {
        const int e = (base + l + next() % 5 + 3 * static_cast<int>(row.size())) % experts;
        if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
      }
      ids.insert(ids.end(), row.begin(), row.end());
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

// ---------------------------------------------------------------------------------------------
// Decoder layers

TEST(DecoderLayers, ParsesCountsListsAndModels) {
  EXPECT_EQ(parse_dense_layers("3").dense, (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(parse_dense_layers("0").empty());
  EXPECT_EQ(parse_dense_layers("5,0").dense, (std::vector<int>{0, 5}));
  EXPECT_EQ(parse_dense_layers("7,").dense, (std::vector<int>{7}));
  EXPECT_EQ(parse_dense_layers("deepseek-v2-lite").dense, (std::vector<int>{0}));
  EXPECT_EQ(parse_dense_layers("deepseek-v3").dense, (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(parse_dense_layers("mixtral-8x7b").empty());
  EXPECT_TRUE(parse_dense_layers("qwen3-235b-a22b").empty());
  EXPECT_TRUE(parse_dense_layers("olmoe-1b-7b").empty());
  EXPECT_ERROR(UsageError, parse_dense_layers("llama"), "'llama' is not a count");
  EXPECT_ERROR(UsageError, parse_dense_layers("1,1"), "layer 1 is listed twice");
  EXPECT_ERROR(UsageError, parse_dense_layers("1,-2"), "'-2' in '1,-2'");
  EXPECT_ERROR(UsageError, parse_dense_layers("-1"), "'-1' is not a count");

  const DecoderLayers d = parse_dense_layers("0,4");
  EXPECT_EQ(d.total(3), 5);
  EXPECT_EQ(d.moe_layer_ids(3), (std::vector<int>{1, 2, 3}));
  EXPECT_ERROR(UsageError, d.total(2), "dense layer 4 is not a decoder layer");
}

TEST(DecoderLayers, SglangHasOneCompleteRowPerDecoderLayer) {
  // DeepSeek-V2-Lite's layout: 27 decoder layers, the first dense; 64 experts on 8 GPUs with one
  // redundant slot each.
  TempDir dir;
  const Topology topology(1, 8);
  const Trace trace = SkewedTrace(400, 26, 6, 64, 7);
  PlanOptions o;
  o.redundant = 1;
  o.time_limit = 1;
  o.token_time_limit = 1;
  o.score = false;
  const Placement p = plan(trace, topology, o).placement;
  const DecoderLayers v2_lite = parse_dense_layers("deepseek-v2-lite");
  const std::string path = dir.path() + "/v2-lite.json";
  write_sglang_expert_location(path, p, v2_lite);
  const json map = ReadJson(path)["physical_to_logical_map"];
  ASSERT_EQ(map.size(), 27u);
  for (int s = 0; s < 72; ++s) EXPECT_EQ(map[0][s].get<int>(), s % 64);  // dense: trivial
  for (int l = 0; l < 26; ++l) {
    std::vector<int> row = map[l + 1].get<std::vector<int>>();
    std::vector<int> want;
    for (int g = 0; g < 8; ++g) {
      std::vector<int> on_gpu;
      for (int e = 0; e < 64; ++e) {
        for (int c : p.copies(l, e)) {
          if (c == g) on_gpu.push_back(e);
        }
      }
      want.insert(want.end(), on_gpu.begin(), on_gpu.end());
    }
    EXPECT_EQ(row, want) << "decoder layer " << l + 1 << " is MoE layer " << l;
  }
  EXPECT_EQ(read_sglang_expert_location(path, 8, 64, v2_lite), p);
  EXPECT_EQ(read_placement_file(path, 26, 64, 8, v2_lite), p);
  EXPECT_ERROR(InputError, read_placement_file(path, 26, 64, 8),
               "placement has 27 MoE layers x 64 experts, the trace 26 x 64; if the model has 1 "
               "dense decoder layer(s), give dense_layers");
  EXPECT_ERROR(InputError, read_sglang_expert_location(path, 8, 64, parse_dense_layers("27")),
               "27 layers cannot hold dense layer 26 and a MoE layer");

  // The same through EPLB's maps, with vLLM's log2phy width (redundant + 1).
  const std::string eplb = dir.path() + "/v2-lite-eplb.json";
  write_eplb_maps(eplb, p, v2_lite, EplbPadding::kRedundantPlusOne);
  const json e = ReadJson(eplb);
  ASSERT_EQ(e["phy2log"].size(), 27u);
  EXPECT_EQ(e["phy2log"], map);
  ASSERT_EQ(e["log2phy"].size(), 27u);
  EXPECT_EQ(e["log2phy"][0][0].size(), 9u);    // 8 redundant slots + 1
  EXPECT_EQ(e["logcnt"][0][0].get<int>(), 2);  // the trivial row repeats experts 0..7
  EXPECT_EQ(read_eplb_maps(eplb, 8, v2_lite), p);
  EXPECT_EQ(read_placement_file(eplb, 26, 64, 8, v2_lite), p);
}

TEST(DecoderLayers, LoadsDropTheDenseRows) {
  ExpertLoads loads;
  loads.layers = 3;
  loads.experts = 2;
  loads.counts = {0, 0, 5, 6, 7, 8};
  const ExpertLoads moe = moe_rows(loads, parse_dense_layers("1"), "loads.json");
  EXPECT_EQ(moe.layers, 2);
  EXPECT_EQ(moe.counts, (std::vector<std::int64_t>{5, 6, 7, 8}));
  EXPECT_EQ(moe_rows(loads, {}, "loads.json").counts, loads.counts);
  EXPECT_ERROR(InputError, moe_rows(loads, parse_dense_layers("3"), "loads.json"),
               "loads.json: 3 layers cannot hold dense layer 2 and a MoE layer");
}

// ---------------------------------------------------------------------------------------------
// Slots, not experts, divide over the GPUs

// phy2log as deepseek-ai/EPLB's README example shapes it: 12 logical experts, 16 physical slots
// on 8 GPUs (2 each), GPU-major; expert 5 and 10 hold two slots each, and on layer 1 expert 3
// fills both slots of GPU 2.
const char* kEplbTwelveOnSixteen =
    R"({"phy2log": [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],)"
    R"(             [7, 10, 6, 8, 3, 3, 5, 9, 11, 4, 2, 0, 1, 4, 2, 9]]})";

TEST(Slots, UpstreamEplbOutputWithTwoCopiesOnOneGpuLoadsAndWritesBack) {
  TempDir dir;
  const std::string path = dir.path() + "/eplb.json";
  write_bytes(path, kEplbTwelveOnSixteen);
  const Topology topology(2, 4);
  const Placement p = read_eplb_maps(path, 8);
  EXPECT_EQ(p.experts(), 12);
  EXPECT_EQ(p.copies(1, 3), (std::vector<int>{2, 2}));  // two slots on GPU 2
  EXPECT_EQ(p.copies(0, 5), (std::vector<int>{0, 1}));
  EXPECT_EQ(p.slots_per_gpu(1), std::vector<int>(8, 2));
  EXPECT_NO_THROW(validate(p, topology, Balance::kExact, path));

  // Written back: the same slots of every GPU (exflow orders a GPU's slots by expert id).
  const std::string again = dir.path() + "/again.json";
  write_eplb_maps(again, p);
  const json in = json::parse(kEplbTwelveOnSixteen)["phy2log"];
  const json out = ReadJson(again)["phy2log"];
  for (int l = 0; l < 2; ++l) {
    for (int g = 0; g < 8; ++g) {
      std::vector<int> a{in[l][2 * g].get<int>(), in[l][2 * g + 1].get<int>()};
      std::vector<int> b{out[l][2 * g].get<int>(), out[l][2 * g + 1].get<int>()};
      std::sort(a.begin(), a.end());
      EXPECT_EQ(a, b) << "layer " << l << " GPU " << g;
    }
  }
  EXPECT_EQ(read_eplb_maps(again, 8), p);
  const json l2p = ReadJson(again)["log2phy"];
  EXPECT_EQ(l2p[1][3], json({4, 5}));  // both slots of GPU 2, ascending
}

TEST(Slots, TwoCopiesOnOneGpuRouteAsOne) {
  // Evaluated as if the GPU held the expert once: the same cost and transfers.
  const Topology topology(1, 4);
  const Trace trace = SkewedTrace(300, 3, 2, 8, 3);
  Placement single = vanilla_placement(3, 8, topology);
  single.add_replica(1, 5, 0);
  Placement doubled = single;
  doubled.add_copy(1, 5, 0);
  doubled.add_copy(2, 1, 0);  // expert 1 of layer 2 already lives on GPU 0
  EXPECT_EQ(doubled.copies(2, 1), (std::vector<int>{0, 0}));
  EXPECT_FALSE(doubled == single);
  for (Scheme scheme : {Scheme::kContextCoherent, Scheme::kBaseline}) {
    EvalOptions eo;
    eo.scheme = scheme;
    const Metrics a = evaluate(trace, single, topology, eo);
    const Metrics b = evaluate(trace, doubled, topology, eo);
    EXPECT_DOUBLE_EQ(a.cost, b.cost);
    EXPECT_EQ(a.intra_transfers, b.intra_transfers);
    EXPECT_EQ(a.inter_transfers, b.inter_transfers);
  }
  EXPECT_ERROR(UsageError, single.add_replica(1, 5, 0), "already has a copy on GPU 0");

  // The CSV keeps both rows.
  TempDir dir;
  write_placement_csv(dir.file("doubled.csv"), doubled);
  EXPECT_EQ(read_placement_csv(dir.file("doubled.csv"), 3, 8, 4), doubled);
}

TEST(Slots, ValidateCountsSlotsNotExperts) {
  const Topology topology(2, 4);
  // 12 experts + 4 redundant slots on 8 GPUs: 2 slots each, as SGLang's trivial map lays them
  // out (slot s holds expert s mod 12).
  Placement p(1, 12, 8, {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5});
  for (int e : {0, 1, 2, 3}) p.add_replica(0, e, 6 + e / 2);
  EXPECT_NO_THROW(validate(p, topology, Balance::kExact));
  const Placement short_one(1, 12, 8, {0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7});
  EXPECT_ERROR(InputError, validate(short_one, topology, Balance::kExact),
               "layer 0 has 12 experts + 0 replicas = 12 slots, which cannot fill the 8 GPUs "
               "equally");
  EXPECT_EQ(trivial_placement(1, 12, 4, topology), p);
  EXPECT_ERROR(UsageError, trivial_placement(1, 12, 3, topology),
               "12 experts + 3 redundant slots do not divide over 8 GPUs");
}

TEST(Slots, RedundantSlotsInAll) {
  EXPECT_EQ(redundant_slots(2, 0, 64, 8), 16);
  EXPECT_EQ(redundant_slots(0, 32, 256, 72), 32);
  EXPECT_EQ(redundant_slots(0, 0, 12, 8), 0);
  EXPECT_ERROR(UsageError, redundant_slots(1, 8, 64, 8), "not both");
  EXPECT_ERROR(UsageError, redundant_slots(0, 31, 256, 72),
               "redundant_total 31: 256 experts + 31 redundant slots do not divide over 72 GPUs");
  EXPECT_ERROR(UsageError, redundant_slots(0, 30, 4, 2),
               "needs more copies than 4 experts can have on 2 GPUs");
}

TEST(Slots, PlansExpertsThatDoNotDivideOverTheGpus) {
  // 12 experts + 4 redundant slots on 2 nodes x 4 GPUs (EPLB's README shape), top-2.
  const Topology topology(2, 4);
  const Trace trace = SkewedTrace(600, 4, 2, 12, 5);
  PlanOptions o;
  o.redundant_total = 4;
  o.time_limit = 1;
  o.token_time_limit = 2;
  const PlanResult r = plan(trace, topology, o);
  EXPECT_NO_THROW(validate(r.placement, topology, Balance::kExact, "plan"));
  for (int l = 0; l < 4; ++l) EXPECT_EQ(r.placement.slots_per_gpu(l), std::vector<int>(8, 2));
  EXPECT_EQ(r.vanilla, trivial_placement(4, 12, 4, topology));
  ASSERT_TRUE(r.metrics.has_value());
  EXPECT_EQ(r.metrics->placement.cost, evaluate(trace, r.placement, topology).cost);
  EXPECT_LE(r.metrics->placement.cost, r.metrics->vanilla.cost);

  TempDir dir;
  const std::string path = dir.path() + "/sglang.json";
  write_sglang_expert_location(path, r.placement);
  const json map = ReadJson(path)["physical_to_logical_map"];
  ASSERT_EQ(map.size(), 4u);
  EXPECT_EQ(map[0].size(), 16u);
  EXPECT_EQ(read_sglang_expert_location(path, 8, 12), r.placement);

  // The loads path balances the same shape.
  std::vector<std::int64_t> loads(static_cast<std::size_t>(4 * 12));
  for (std::size_t i = 0; i < loads.size(); ++i) loads[i] = static_cast<std::int64_t>(i % 7 + 1);
  const Placement b = balance_loads(loads, 4, 12, topology, 4);
  EXPECT_NO_THROW(validate(b, topology, Balance::kExact, "balanced"));

  PlanOptions both = o;
  both.redundant = 1;
  EXPECT_ERROR(UsageError, plan(trace, topology, both), "not both");
  PlanOptions none = o;
  none.redundant_total = 0;
  EXPECT_ERROR(UsageError, plan(trace, topology, none), "cannot be split evenly");
}

}  // namespace
}  // namespace exflow
