// Tests for the serving-stack formats (exflow/formats.hpp): SGLang expert locations and DeepSeek
// EPLB maps (round trips, exact files, every malformed input), expert load tables, affinity
// count tensors (including the OLMoE counts in ../shared/data when present) and the JSONL to
// trace .npy converter.

#include "exflow/formats.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/trace.hpp"
#include "io/npy.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;
using test::write_bytes;
using test::write_npy;

// 2 layers, 4 experts, 2 GPUs, no replicas.
Placement Plain() {
  return Placement(2, 4, 2, {0, 0, 1, 1, /* layer 1 */ 1, 0, 0, 1});
}

// The hand-computed case: 2 layers, 4 experts, 2 GPUs, one replica per GPU and layer.
//   layer 0: GPU 0 holds {0, 1, 2}, GPU 1 holds {0, 2, 3}
//   layer 1: GPU 0 holds {1, 2, 3}, GPU 1 holds {0, 1, 3}
Placement Tiny() {
  Placement p(2, 4, 2, {0, 0, 1, 1, /* layer 1 */ 1, 0, 0, 1});
  p.add_replica(0, 0, 1);
  p.add_replica(0, 2, 0);  // below its primary GPU 1: the two swap roles
  p.add_replica(1, 3, 0);
  p.add_replica(1, 1, 1);
  return p;
}

const char* kTinySglang = R"({"physical_to_logical_map":[[0,1,2,0,2,3],[1,2,3,0,1,3]]})";
const char* kTinyEplb =
    R"({"log2phy":[[[0,3],[1,-1],[2,4],[5,-1]],[[3,-1],[0,4],[1,-1],[2,5]]],)"
    R"("logcnt":[[2,1,2,1],[1,2,1,2]],"phy2log":[[0,1,2,0,2,3],[1,2,3,0,1,3]]})";

// L layers, E experts, G GPUs, `extra` replicas per GPU and layer, deterministic.
Placement Replicated(int L, int E, int G, int extra) {
  Placement p(L, E, G);
  std::uint64_t s = 12345;
  auto next = [&] {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((s >> 33) % 1000003);
  };
  for (int l = 0; l < L; ++l) {
    std::vector<int> perm(static_cast<std::size_t>(E));
    std::iota(perm.begin(), perm.end(), 0);
    for (int i = E - 1; i > 0; --i) std::swap(perm[i], perm[next() % (i + 1)]);
    for (int i = 0; i < E; ++i) p.set(l, perm[i], i / (E / G));
    for (int g = 0; g < G; ++g) {
      for (int added = 0; added < extra;) {
        const int e = next() % E;
        const auto c = p.copies(l, e);
        if (std::find(c.begin(), c.end(), g) != c.end()) continue;
        p.add_replica(l, e, g);
        ++added;
      }
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// SGLang

TEST(Sglang, TinyCaseIsExact) {
  TempDir dir;
  write_sglang_expert_location(dir.file("loc.json"), Tiny());
  EXPECT_EQ(test::read_bytes(dir.file("loc.json")), std::string(kTinySglang) + "\n");
  EXPECT_EQ(read_sglang_expert_location(dir.file("loc.json"), 2), Tiny());
}

TEST(Sglang, PlainPlacementListsEachGpuAscending) {
  TempDir dir;
  write_sglang_expert_location(dir.file("loc.json"), Plain());
  EXPECT_EQ(json::parse(test::read_bytes(dir.file("loc.json"))),
            json::parse(R"({"physical_to_logical_map":[[0,1,2,3],[1,2,0,3]]})"));
  EXPECT_EQ(read_sglang_expert_location(dir.file("loc.json"), 2), Plain());
  EXPECT_EQ(read_sglang_expert_location(dir.file("loc.json"), 2, 4), Plain());
}

TEST(Sglang, RoundTripsWithReplicas) {
  TempDir dir;
  for (int extra : {0, 1, 3}) {
    Placement p = Replicated(5, 32, 4, extra);
    write_sglang_expert_location(dir.file("loc.json"), p);
    EXPECT_EQ(read_sglang_expert_location(dir.file("loc.json"), 4), p) << extra;
  }
}

TEST(Sglang, SlotsWithinAGpuMayComeInAnyOrder) {
  TempDir dir;
  write_bytes(dir.file("loc.json"), R"({"physical_to_logical_map":[[2,1,0,3,0,2],[3,2,1,3,1,0]]})");
  EXPECT_EQ(read_sglang_expert_location(dir.file("loc.json"), 2), Tiny());
}

TEST(Sglang, WriterRejectsUnevenSlots) {
  TempDir dir;
  Placement uneven(1, 4, 2, {0, 0, 0, 1});
  EXPECT_ERROR(UsageError, write_sglang_expert_location(dir.file("a.json"), uneven), "GPU 1");
  Placement layers_differ = Plain();
  layers_differ.add_replica(0, 0, 1);
  layers_differ.add_replica(0, 3, 0);
  EXPECT_ERROR(UsageError, write_sglang_expert_location(dir.file("a.json"), layers_differ),
               "layer 1 has 2 slots per GPU, layer 0 has 3");
  EXPECT_FALSE(std::filesystem::exists(dir.file("a.json")));
}

TEST(Sglang, RejectsMalformedFiles) {
  TempDir dir;
  const std::string f = dir.file("loc.json");
  auto read_text = [&](const std::string& text, int gpus = 2, int experts = 0) {
    write_bytes(f, text);
    return read_sglang_expert_location(f, gpus, experts);
  };
  EXPECT_ERROR(InputError, read_text("not json"), f + ": not valid JSON: ");
  EXPECT_ERROR(InputError, read_text(""), "empty file");
  EXPECT_ERROR(InputError, read_text("{\"map\": []}"),
               "expected an object with key \"physical_to_logical_map\", found keys 'map'");
  EXPECT_ERROR(InputError, read_text("[[0,1,2,3]]"), "found [[0,1,2,3]]");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": "x"})"),
               "physical_to_logical_map is \"x\", expected lists of integers [layers][slots]");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,"a",3]]})"),
               "physical_to_logical_map[0][2] is \"a\", expected an integer");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2.5,3]]})"),
               "physical_to_logical_map[0][2] is 2.5, expected an integer");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,3],[0,1,2]]})"),
               "physical_to_logical_map[1] has 3 entries where [0] has 4");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,3],5]})"),
               "physical_to_logical_map[1] is 5, expected a list");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[[0,1],[2,3]]]})"),
               "nested 3 or more lists deep, expected [layers][slots]");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [0,1,2,3]})"),
               "nested 1 list deep");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": []})"), "empty list");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[]]})"),
               "physical_to_logical_map[0] is an empty list");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,3,0]]})"),
               "5 slots per layer do not divide among 2 GPUs");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,1,3]]})"),
               "layer 0: logical expert 2 has no slot");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,3],[0,1,1,3]]})"),
               "layer 1: logical expert 2 has no slot");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,3]]})", 2, 5),
               "layer 0: logical expert 4 has no slot");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,3],[0,1,2,7]]})", 2, 4),
               f + ": layer 1 slot 3: logical expert 7 is out of range 0..3");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,-1,2,3]]})"),
               "layer 0 slot 1: logical expert -1 is negative");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,2000000000]]})"),
               "layer 0: logical expert 3 has no slot");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,3000000000]]})"),
               "physical_to_logical_map[0][3] = 3000000000 is out of range");
  EXPECT_ERROR(InputError, read_text(R"({"physical_to_logical_map": [[0,1,2,1e30]]})"),
               "expected an integer");
  EXPECT_ERROR(UsageError, read_text(R"({"physical_to_logical_map": [[0,1,2,3]]})", 0),
               "GPU count");
  EXPECT_ERROR(IoError, read_sglang_expert_location(dir.file("missing.json"), 2), "cannot open");
}

// ---------------------------------------------------------------------------------------------
// EPLB

TEST(Eplb, TinyCaseIsExact) {
  TempDir dir;
  write_eplb_maps(dir.file("eplb.json"), Tiny());
  EXPECT_EQ(test::read_bytes(dir.file("eplb.json")), std::string(kTinyEplb) + "\n");
  EXPECT_EQ(read_eplb_maps(dir.file("eplb.json"), 2), Tiny());

  EplbMaps m = eplb_maps(Tiny());
  EXPECT_EQ(m.layers, 2);
  EXPECT_EQ(m.experts, 4);
  EXPECT_EQ(m.slots, 6);
  EXPECT_EQ(m.max_replicas, 2);
  EXPECT_EQ(m.logcnt, (std::vector<int>{2, 1, 2, 1, 1, 2, 1, 2}));
  EXPECT_EQ(m.log2phy, (std::vector<int>{0, 3, 1, -1, 2, 4, 5, -1, 3, -1, 0, 4, 1, -1, 2, 5}));
}

TEST(Eplb, PlainPlacementHasOneColumn) {
  EplbMaps m = eplb_maps(Plain());
  EXPECT_EQ(m.max_replicas, 1);
  EXPECT_EQ(m.phy2log, (std::vector<int>{0, 1, 2, 3, 1, 2, 0, 3}));
  EXPECT_EQ(m.log2phy, (std::vector<int>{0, 1, 2, 3, 2, 0, 1, 3}));
  EXPECT_EQ(m.logcnt, std::vector<int>(8, 1));
  EXPECT_EQ(placement_from_eplb_maps(m, 2), Plain());
}

TEST(Eplb, RoundTripsWithReplicas) {
  TempDir dir;
  for (int extra : {0, 1, 2}) {
    Placement p = Replicated(4, 16, 4, extra);
    write_eplb_maps(dir.file("eplb.json"), p);
    EXPECT_EQ(read_eplb_maps(dir.file("eplb.json"), 4), p) << extra;
    EXPECT_EQ(placement_from_eplb_maps(eplb_maps(p), 4), p) << extra;
  }
}

TEST(Eplb, AcceptsPhy2logAloneAndWiderUnorderedLog2phy) {
  TempDir dir;
  write_bytes(dir.file("a.json"), R"({"phy2log":[[0,1,2,0,2,3],[1,2,3,0,1,3]]})");
  EXPECT_EQ(read_eplb_maps(dir.file("a.json"), 2), Tiny());
  // EPLB's own rebalance_experts pads log2phy to num_redundant + 1 and orders by replica rank.
  write_bytes(dir.file("b.json"), R"({"phy2log":[[0,1,2,0,2,3],[1,2,3,0,1,3]],)"
                                  R"("log2phy":[[[3,0,-1],[1,-1,-1],[4,2,-1],[5,-1,-1]],)"
                                  R"([[3,-1,-1],[4,0,-1],[-1,1,-1],[5,2,-1]]]})");
  EXPECT_EQ(read_eplb_maps(dir.file("b.json"), 2), Tiny());
}

TEST(Eplb, RejectsDisagreementsAndMalformedFiles) {
  TempDir dir;
  const std::string f = dir.file("eplb.json");
  auto read_text = [&](const std::string& text) {
    write_bytes(f, text);
    return read_eplb_maps(f, 2);
  };
  const std::string phy = R"("phy2log":[[0,1,2,0,2,3],[1,2,3,0,1,3]])";
  EXPECT_ERROR(InputError, read_text("{\"logcnt\": [[1]]}"), "key \"phy2log\"");
  EXPECT_ERROR(InputError, read_text("[1, 2"), "not valid JSON");
  EXPECT_ERROR(InputError, read_text("{" + phy + R"(,"logcnt":[[2,1,2,1],[1,2,2,1]]})"),
               f + ": logcnt layer 1 expert 2 is 2 but phy2log has 1 slots of it");
  EXPECT_ERROR(InputError, read_text("{" + phy + R"(,"logcnt":[[2,1,2,1]]})"),
               "logcnt has 1 layers, phy2log has 2");
  EXPECT_ERROR(InputError, read_text("{" + phy + R"(,"logcnt":[[2,1,2],[1,2,1]]})"),
               "layer 0 slot 5: logical expert 3 is out of range 0..2");
  EXPECT_ERROR(InputError, read_text("{" + phy + R"(,"logcnt":[[2,1,2,1],[1,2,1,"2"]]})"),
               "logcnt[1][3] is \"2\", expected an integer");
  EXPECT_ERROR(
      InputError,
      read_text("{" + phy +
                R"(,"log2phy":[[[0,3],[2,-1],[1,4],[5,-1]],[[3,-1],[0,4],[1,-1],[2,5]]]})"),
      "log2phy layer 0 expert 1: lists slots [2] but phy2log puts it in [1]");
  EXPECT_ERROR(
      InputError,
      read_text("{" + phy +
                R"(,"log2phy":[[[0,3],[1,-1],[2,4],[5,-1]],[[3,-1],[0,4],[1,-1],[2,9]]]})"),
      "log2phy layer 1 expert 3: slot 9 is out of range 0..5");
  EXPECT_ERROR(
      InputError,
      read_text("{" + phy +
                R"(,"log2phy":[[[0,3],[1,-1],[2,4],[5,-1]],[[3,-1],[0,4],[1,-2],[2,5]]]})"),
      "log2phy layer 1 expert 2: slot -2 is out of range");
  EXPECT_ERROR(InputError, read_text("{" + phy + R"(,"log2phy":[[0,3],[1,-1]]})"),
               "log2phy is nested 2 lists deep, expected [layers][experts][max_replicas]");
  EXPECT_ERROR(
      InputError,
      read_text("{" + phy + R"(,"log2phy":[[[0,3],[1,-1],[2,4],[5,-1]],[[3],[0],[1],[2]]]})"),
      "log2phy[1][0] has 1 entries");
  EXPECT_ERROR(InputError, read_text(R"({"phy2log":[[0,1,2],[0,1,2]]})"),
               "3 slots per layer do not divide among 2 GPUs");
  EXPECT_ERROR(InputError, read_text(R"({"phy2log":[[0,1,3,1]]})"),
               "layer 0: logical expert 2 has no slot");
}

// ---------------------------------------------------------------------------------------------
// Expert loads

TEST(ExpertLoads, ReadsJsonAndNpy) {
  TempDir dir;
  write_bytes(dir.file("a.json"), R"({"logical_count": [[1, 2, 3], [4, 5, 6]], "rank": 0})");
  ExpertLoads a = read_expert_loads(dir.file("a.json"));
  EXPECT_EQ(a.layers, 2);
  EXPECT_EQ(a.experts, 3);
  EXPECT_EQ(a.counts, (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(a.count(1, 2), 6);

  write_bytes(dir.file("b.JSON"), R"([[7, 8], [9, 10]])");
  ExpertLoads b = read_expert_loads(dir.file("b.JSON"));
  EXPECT_EQ(b.layers, 2);
  EXPECT_EQ(b.counts, (std::vector<std::int64_t>{7, 8, 9, 10}));

  // SGLang's stat recorder: [steps][layers][experts], summed over steps.
  write_bytes(
      dir.file("c.json"),
      R"({"logical_count": [[[1, 2], [3, 4]], [[10, 20], [30, 40]], [[0, 0], [0, 5000000000]]]})");
  ExpertLoads c = read_expert_loads(dir.file("c.json"));
  EXPECT_EQ(c.layers, 2);
  EXPECT_EQ(c.experts, 2);
  EXPECT_EQ(c.counts, (std::vector<std::int64_t>{11, 22, 33, 5000000044}));

  write_npy(dir.file("d.npy"), {1, 2, 3, 4, 5, 6}, {3, 2}, "<i8");
  ExpertLoads d = read_expert_loads(dir.file("d.npy"));
  EXPECT_EQ(d.layers, 3);
  EXPECT_EQ(d.experts, 2);
  EXPECT_EQ(d.counts, (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}));

  // Fortran order, big-endian, unsigned, 3-D: the same logical values as c.
  write_npy(dir.file("e.npy"), {1, 2, 3, 4, 10, 20, 30, 40}, {2, 2, 2}, ">u2", true);
  ExpertLoads e = read_expert_loads(dir.file("e.npy"));
  EXPECT_EQ(e.counts, (std::vector<std::int64_t>{11, 22, 33, 44}));

  // Wide tables: more than 64 experts (beyond what a trace's header check allows in a 3-D k).
  std::vector<std::int64_t> wide(2 * 3 * 100, 1);
  write_npy(dir.file("f.npy"), wide, {2, 3, 100}, "<i4");
  ExpertLoads f = read_expert_loads(dir.file("f.npy"));
  EXPECT_EQ(f.layers, 3);
  EXPECT_EQ(f.experts, 100);
  EXPECT_EQ(f.counts, std::vector<std::int64_t>(300, 2));
}

TEST(ExpertLoads, RejectsMalformedInputs) {
  TempDir dir;
  auto read_text = [&](const std::string& name, const std::string& text) {
    write_bytes(dir.file(name), text);
    return read_expert_loads(dir.file(name));
  };
  EXPECT_ERROR(InputError, read_text("a.json", R"({"logical_count": [[1, -3], [4, 5]]})"),
               "a.json: layer 0 expert 1: count -3 is negative");
  EXPECT_ERROR(InputError, read_text("a.json", R"({"logical_count": [[[1, 2]], [[3, -1]]]})"),
               "step 1 layer 0 expert 1: count -1 is negative");
  EXPECT_ERROR(InputError, read_text("a.json", R"({"counts": [[1]]})"),
               "expected an object with key \"logical_count\"");
  EXPECT_ERROR(InputError, read_text("a.json", R"({"logical_count": [[1, 2], [3]]})"),
               "logical_count[1] has 1 entries");
  EXPECT_ERROR(InputError, read_text("a.json", R"({"logical_count": [1, 2]})"),
               "nested 1 list deep");
  EXPECT_ERROR(InputError, read_text("a.json", R"([[[[1]]]])"), "nested 4 or more lists deep");
  EXPECT_ERROR(InputError, read_text("a.json", R"([[1, true]])"), "[0][1] is true");
  EXPECT_ERROR(InputError, read_text("a.json", R"([[1, 0.5]])"), "[0][1] is 0.5");
  EXPECT_ERROR(InputError, read_text("a.json", R"([[[9223372036854775807]], [[1]]])"),
               "overflows int64");
  EXPECT_ERROR(InputError, read_text("a.json", "  \n"), "empty file");
  EXPECT_ERROR(UsageError, read_text("a.txt", "[[1]]"), "a.txt: unknown expert-load format '.txt'");

  write_npy(dir.file("b.npy"), {1, 2, 3}, {3}, "<i4");
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("b.npy")),
               "b.npy: shape (3,) has 1 dimension; expert loads are [layers, experts]");
  write_npy(dir.file("c.npy"), std::vector<std::int64_t>(16, 1), {2, 2, 2, 2}, "<i4");
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("c.npy")), "has 4 dimensions");
  write_npy(dir.file("d.npy"), {1, -2, 3, 4}, {2, 2}, "<i2");
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("d.npy")),
               "layer 0 expert 1: count -2 is negative");
  write_npy(dir.file("e.npy"), {1, 2}, {1, 2}, "<u8");
  std::string bytes = test::read_bytes(dir.file("e.npy"));
  bytes.replace(bytes.size() - 8, 8, std::string(8, '\xff'));
  write_bytes(dir.file("e.npy"), bytes);
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("e.npy")), "does not fit in int64");
  std::string floats = io::encode_npy({1, 2}, {1, 2}, "<i4");
  floats.replace(floats.find("<i4"), 3, "<f4");
  write_bytes(dir.file("f.npy"), floats);
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("f.npy")), "floating-point");
  write_bytes(dir.file("g.npy"), "");
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("g.npy")), "empty file");
  write_bytes(dir.file("h.npy"), "hello");
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("h.npy")), "not an npy file");
  write_npy(dir.file("i.npy"), {1, 2}, {2, 1}, "<i4");
  write_bytes(dir.file("i.npy"), test::read_bytes(dir.file("i.npy")) + "xx");
  EXPECT_ERROR(InputError, read_expert_loads(dir.file("i.npy")), "unexpected bytes");
  EXPECT_ERROR(IoError, read_expert_loads(dir.file("missing.npy")), "cannot open");
}

// ---------------------------------------------------------------------------------------------
// Affinity counts

// The [L-1, E, E] pair counts of `trace`, as a recorder would store them.
std::vector<std::int64_t> PairCounts(const Trace& trace) {
  const int L = trace.layers(), E = trace.experts(), k = trace.k();
  std::vector<std::int64_t> counts(static_cast<std::size_t>(L - 1) * E * E, 0);
  for (std::int64_t t = 0; t < trace.tokens(); ++t) {
    for (int l = 0; l + 1 < L; ++l) {
      for (int a = 0; a < k; ++a) {
        for (int b = 0; b < k; ++b) {
          ++counts[(static_cast<std::size_t>(l) * E + trace.at(t, l, a)) * E +
                   trace.at(t, l + 1, b)];
        }
      }
    }
  }
  return counts;
}

Trace TopKTrace(std::int64_t tokens, int layers, int k, int experts) {
  std::vector<std::int32_t> ids;
  std::uint64_t s = 99;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      const int first = static_cast<int>((s >> 33) % static_cast<std::uint64_t>(experts));
      for (int c = 0; c < k; ++c) ids.push_back((first + c * 7) % experts);  // distinct
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

TEST(AffinityCounts, MatchesTheGraphOfTheTrace) {
  TempDir dir;
  struct Case {
    int layers, k, experts;
    std::string descr;
    bool fortran;
  };
  for (const Case& c :
       {Case{4, 1, 8, "<i8", false}, Case{3, 2, 8, ">i4", true}, Case{3, 3, 80, "<u4", false}}) {
    Trace trace = TopKTrace(200, c.layers, c.k, c.experts);
    write_npy(dir.file("counts.npy"), PairCounts(trace), {c.layers - 1, c.experts, c.experts},
              c.descr, c.fortran);
    AffinityGraph got = read_affinity_counts(dir.file("counts.npy"), c.k);
    AffinityGraph want = AffinityGraph::from_trace(trace, 1);
    EXPECT_EQ(got.layers(), c.layers);
    EXPECT_EQ(got.experts(), c.experts);
    EXPECT_EQ(got.tokens(), 200);
    EXPECT_EQ(got.transitions(), want.transitions());
    EXPECT_EQ(got.loads(), want.loads());
  }
}

TEST(AffinityCounts, RejectsMalformedTensors) {
  TempDir dir;
  const std::string f = dir.file("counts.npy");
  // Pair 0 totals 4, pair 1 totals 5.
  write_npy(f, {1, 1, 1, 1, /* pair 1 */ 2, 1, 1, 1}, {2, 2, 2}, "<i8");
  EXPECT_ERROR(InputError, read_affinity_counts(f),
               "layer pair 1 (layers 1->2) totals 5 pairs but layer pair 0 (layers 0->1) totals 4");
  write_npy(f, {1, 1, 1, 1, 2, 1, -1, 1}, {2, 2, 2}, "<i8");
  EXPECT_ERROR(InputError, read_affinity_counts(f),
               "layer pair 1 (layer 1 expert 1 -> layer 2 expert 0): count -1 is negative");
  write_npy(f, {1, 1, 1, 1}, {2, 2}, "<i8");
  EXPECT_ERROR(InputError, read_affinity_counts(f),
               "shape (2, 2) is not [layers-1, experts, experts]");
  write_npy(f, std::vector<std::int64_t>(12, 1), {1, 3, 4}, "<i8");
  EXPECT_ERROR(InputError, read_affinity_counts(f), "shape (1, 3, 4) is not");
  write_npy(f, std::vector<std::int64_t>(8, 1), {2, 2, 2}, "<i8");
  EXPECT_ERROR(UsageError, read_affinity_counts(f, 0), "top-k must be positive");
  // A truncated file is reported with its real shape, not the flattened one parse_npy sees.
  write_npy(f, std::vector<std::int64_t>(2 * 80 * 80, 1), {2, 80, 80}, "<i2");
  std::string bytes = test::read_bytes(f);
  write_bytes(f, bytes.substr(0, bytes.size() - 10));
  EXPECT_ERROR(InputError, read_affinity_counts(f),
               f + ": truncated: shape (2, 80, 80) of '<i2' needs 25600 data bytes");
  std::string zero = io::encode_npy({}, {1, 2, 2}, "<i8");
  zero.replace(zero.find("(1, 2, 2)"), 9, "(0, 2, 2)");
  write_bytes(f, zero);
  EXPECT_ERROR(InputError, read_affinity_counts(f), "shape (0, 2, 2) has a zero dimension");
}

TEST(AffinityCounts, OlmoeCountsAreATop8Trace) {
  if (!test::shared_data_available()) GTEST_SKIP() << "../shared/data is absent";
  const std::string path = test::shared_data("olmoe-interlayer-counts.npy");
  AffinityGraph g = read_affinity_counts(path, 8);
  EXPECT_EQ(g.layers(), 16);
  EXPECT_EQ(g.experts(), 64);
  EXPECT_EQ(g.tokens(), 30511);
  for (int l = 0; l < g.layers(); ++l) {
    std::int64_t sum = 0;
    for (int e = 0; e < g.experts(); ++e) sum += g.load(l, e);
    EXPECT_EQ(sum, 30511 * 8) << "layer " << l;
  }
  // Consistent with a trace: what arrives at layer l+1 (column sums of pair l) is what leaves
  // it (row sums of pair l+1), k per token.
  for (int l = 0; l + 2 < g.layers(); ++l) {
    for (int j = 0; j < g.experts(); ++j) {
      std::int64_t in = 0;
      for (int i = 0; i < g.experts(); ++i) in += g.transition(l, i, j);
      EXPECT_EQ(in, 8 * g.load(l + 1, j)) << "layer pair " << l << " expert " << j;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// JSONL -> npy

// A JSONL log of `trace`: layer-major rows, with "token" fields in reverse order when asked.
std::string Jsonl(const Trace& trace, bool with_token) {
  std::string out;
  for (int l = 0; l < trace.layers(); ++l) {
    for (std::int64_t i = 0; i < trace.tokens(); ++i) {
      const std::int64_t t = with_token ? trace.tokens() - 1 - i : i;
      json row = {{"layer", l}, {"topk_ids", json::array()}};
      for (int c = 0; c < trace.k(); ++c) row["topk_ids"].push_back(trace.at(t, l, c));
      if (with_token) row["token"] = t;
      out += row.dump() + (i % 3 == 0 ? "\r\n" : "\n");
    }
    out += "\n";  // blank lines are skipped
  }
  return out;
}

void ExpectSameIds(const Trace& a, const Trace& b) {
  ASSERT_EQ(a.tokens(), b.tokens());
  ASSERT_EQ(a.layers(), b.layers());
  ASSERT_EQ(a.k(), b.k());
  int mismatches = 0;
  for (std::int64_t t = 0; t < a.tokens(); ++t) {
    for (int l = 0; l < a.layers(); ++l) {
      for (int c = 0; c < a.k(); ++c) {
        if (a.at(t, l, c) != b.at(t, l, c) && mismatches++ < 3) {
          ADD_FAILURE() << "token " << t << " layer " << l << " column " << c;
        }
      }
    }
  }
}

io::NpyHeader HeaderOf(const std::string& path) {
  const std::string bytes = test::read_bytes(path);
  return io::parse_npy(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), path);
}

TEST(ConvertJsonl, RoundTripsTopK) {
  TempDir dir;
  Trace trace = TopKTrace(50, 4, 3, 40);
  for (bool with_token : {false, true}) {
    write_bytes(dir.file("log.jsonl"), Jsonl(trace, with_token));
    ConvertResult r = convert_jsonl_to_npy(dir.file("log.jsonl"), dir.file("out/trace.npy"));
    EXPECT_EQ(r.tokens, 50);
    EXPECT_EQ(r.layers, 4);
    EXPECT_EQ(r.k, 3);
    EXPECT_EQ(r.dtype, "<i2");
    io::NpyHeader h = HeaderOf(dir.file("out/trace.npy"));
    EXPECT_EQ(h.descr, "<i2");
    EXPECT_FALSE(h.fortran_order);
    EXPECT_EQ(h.shape, (std::vector<std::int64_t>{50, 4, 3}));
    ExpectSameIds(Trace::open(dir.file("out/trace.npy")), trace);
  }
}

TEST(ConvertJsonl, TopOneIsTwoDimensionalAndLargeIdsAreInt32) {
  TempDir dir;
  Trace trace = Trace::from_ids({0, 40000, 65535, 7, 1, 2}, 3, 2, 1);
  write_bytes(dir.file("log.jsonl"), Jsonl(trace, false));
  ConvertResult r = convert_jsonl_to_npy(dir.file("log.jsonl"), dir.file("trace.npy"));
  EXPECT_EQ(r.k, 1);
  EXPECT_EQ(r.dtype, "<i4");
  io::NpyHeader h = HeaderOf(dir.file("trace.npy"));
  EXPECT_EQ(h.descr, "<i4");
  EXPECT_EQ(h.shape, (std::vector<std::int64_t>{3, 2}));
  ExpectSameIds(Trace::open(dir.file("trace.npy")), trace);
}

TEST(ConvertJsonl, ReadsAStreamWithInterleavedRows) {
  TempDir dir;
  std::istringstream in(
      "{\"layer\": 1, \"topk_ids\": [3, 1]}\n"
      "{\"layer\": 0, \"topk_ids\": [2, 0], \"extra\": \"ignored\"}\n"
      "{\"layer\": 0, \"topk_ids\": [1, 2]}\n"
      "{\"topk_ids\": [0, 3], \"layer\": 1}\n");
  ConvertResult r = convert_jsonl_to_npy(in, "<stdin>", dir.file("t.npy"));
  EXPECT_EQ(r.tokens, 2);
  Trace t = Trace::open(dir.file("t.npy"));
  ExpectSameIds(t, Trace::from_ids({2, 0, 3, 1, 1, 2, 0, 3}, 2, 2, 2));
}

// Rows the fast scanner takes and rows only the JSON parser takes give the same trace.
TEST(ConvertJsonl, AnyJsonSpellingOfARowReadsTheSame) {
  TempDir dir;
  std::istringstream in(
      "\xEF\xBB\xBF{\"layer\":0,\"topk_ids\":[5,6],\"token\":1}\n"
      " { \"token\" : 0 ,\t\"topk_ids\" : [ 7 , 8 ] , \"layer\" : 0 } \r\n"
      "{\"layer\": 1, \"topk_ids\": [1, 2], \"note\": \"extra keys go the slow way\"}\n"
      "{\"lay\\u0065r\": 1, \"topk_ids\": [3, 4]}\n");
  convert_jsonl_to_npy(in, "mixed", dir.file("t.npy"));
  ExpectSameIds(Trace::open(dir.file("t.npy")), Trace::from_ids({7, 8, 1, 2, 5, 6, 3, 4}, 2, 2, 2));

  TempDir d2;
  const std::string f = d2.file("x.jsonl");
  auto convert = [&](const std::string& text) {
    write_bytes(f, text);
    convert_jsonl_to_npy(f, d2.file("t.npy"));
  };
  EXPECT_ERROR(InputError, convert("{\"layer\": 0, \"topk_ids\": [1e2]}\n"),
               ":1: topk_ids[0] is 100.0, expected an integer expert id");
  EXPECT_ERROR(InputError, convert("{\"layer\": 0, \"topk_ids\": [01]}\n"), ":1: not valid JSON");
  EXPECT_ERROR(InputError, convert("{\"layer\": 0, \"topk_ids\": [1]} x\n"), ":1: not valid JSON");
  EXPECT_ERROR(InputError, convert("{\"layer\": 0, \"topk_ids\": [18446744073709551615]}\n"),
               ":1: topk_ids[0] is 18446744073709551615, expected an integer expert id");
  EXPECT_ERROR(InputError, convert("{\"layer\": 0, \"topk_ids\": [-1000000000000000000]}\n"),
               ":1: topk_ids[0] = -1000000000000000000 is out of range");
}

TEST(ConvertJsonl, RejectsMalformedLogs) {
  TempDir dir;
  const std::string in = dir.file("log.jsonl");
  const std::string out = dir.file("trace.npy");
  auto convert = [&](const std::string& text) {
    write_bytes(in, text);
    convert_jsonl_to_npy(in, out);
  };
  const std::string l0 = "{\"layer\": 0, \"topk_ids\": [1, 2]}\n";
  const std::string l1 = "{\"layer\": 1, \"topk_ids\": [1, 2]}\n";
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 2, \"topk_ids\": [1, 2]}\n"),
               in + ": layer 1 has no rows but layer 2 has; layers must be 0..2");
  EXPECT_ERROR(InputError, convert(l0 + l1 + "{\"layer\": 1, \"topk_ids\": [1]}\n"),
               in + ":3: \"topk_ids\" has 1 ids but line 1 has 2; every row needs the same k");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 1, \"topk_ids\": [4, -1]}\n"),
               in + ":2: topk_ids[1] is -1, SGLang's padding");
  EXPECT_ERROR(InputError, convert(l0 + l1 + "{\"layer\": 0, \"topk_ids\": [1, 2]\n"),
               in + ":3: not valid JSON: ");
  EXPECT_ERROR(InputError, convert(l0 + l0 + l1), "layer 1 has 1 rows but layer 0 has 2");
  EXPECT_ERROR(InputError,
               convert("{\"layer\": 0, \"topk_ids\": [1, 2], \"token\": 0}\n" + l1 +
                       "\n{\"layer\": 0, \"topk_ids\": [1, 2], \"token\": 0}\n" + l1),
               in + ":4: layer 0 token 0 appears twice (first on line 1)");
  EXPECT_ERROR(InputError, convert("{\"layer\": 0, \"topk_ids\": [1, 2], \"token\": 5}\n" + l1),
               in + ":1: token 5 is out of range: layer 0 has 1 rows");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 1, \"topk_ids\": [1, 2], \"token\": -1}\n"),
               ":2: \"token\" is -1, expected a non-negative integer");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 1, \"topk_ids\": [1, 65536]}\n"),
               ":2: topk_ids[1] = 65536 is out of range 0..65535");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 1, \"topk_ids\": [1, -5]}\n"),
               ":2: topk_ids[1] = -5 is out of range");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 1, \"topk_ids\": [1, \"2\"]}\n"),
               ":2: topk_ids[1] is \"2\", expected an integer expert id");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": -1, \"topk_ids\": [1, 2]}\n"),
               ":2: \"layer\" is -1, expected an integer 0..65535");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 1, \"topk_ids\": 3}\n"),
               ":2: \"topk_ids\" is 3, expected a non-empty list");
  EXPECT_ERROR(InputError, convert(l0 + "{\"layer\": 1, \"topk_ids\": []}\n"),
               ":2: \"topk_ids\" is [], expected a non-empty list");
  EXPECT_ERROR(InputError, convert(l0 + "{\"topk_ids\": [1, 2]}\n"), ":2: missing \"layer\"");
  EXPECT_ERROR(InputError, convert(l0 + "[1, 2]\n"), ":2: expected an object");
  EXPECT_ERROR(InputError, convert("\n\n"), in + ": no rows");
  EXPECT_ERROR(InputError, convert(""), in + ": no rows");
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_ERROR(IoError, convert_jsonl_to_npy(dir.file("missing.jsonl"), out), "cannot open");
}

}  // namespace
}  // namespace exflow
