// Tests for vllm-ascend's expert map (exflow/formats.hpp): the exact file, a file laid out as
// vllm-ascend writes it, round trips, read_placement_file's dispatch and every malformed input.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/placement.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using nlohmann::json;
using test::TempDir;
using test::write_bytes;

// 2 layers, 4 experts, 2 GPUs, one replica per GPU and layer.
//   layer 0: GPU 0 holds {0, 1, 2}, GPU 1 holds {0, 2, 3}
//   layer 1: GPU 0 holds {1, 2, 3}, GPU 1 holds {0, 1, 3}
Placement Tiny() {
  Placement p(2, 4, 2, {0, 0, 1, 1, /* layer 1 */ 1, 0, 0, 1});
  p.add_replica(0, 0, 1);
  p.add_replica(0, 2, 0);
  p.add_replica(1, 3, 0);
  p.add_replica(1, 1, 1);
  return p;
}

const char* kTinyMap =
    R"({"layer_list":[)"
    R"({"device_count":2,"device_list":[{"device_expert":[0,1,2],"device_id":0},)"
    R"({"device_expert":[0,2,3],"device_id":1}],"layer_id":0},)"
    R"({"device_count":2,"device_list":[{"device_expert":[1,2,3],"device_id":0},)"
    R"({"device_expert":[0,1,3],"device_id":1}],"layer_id":1}],"moe_layer_count":2})";

// L layers, E experts, G GPUs, `extra` replicas per GPU and layer, deterministic.
Placement Replicated(int L, int E, int G, int extra) {
  Placement p(L, E, G);
  std::uint64_t s = 99;
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

// The file as vllm-ascend's recorder writes it (json.dump(record, f, indent=4)): keys in its
// order, and a device's experts in local slot order, which need not be ascending.
std::string UpstreamLayout(const std::vector<std::vector<std::vector<int>>>& devices) {
  nlohmann::ordered_json record;
  record["moe_layer_count"] = devices.size();
  record["layer_list"] = nlohmann::ordered_json::array();
  for (std::size_t l = 0; l < devices.size(); ++l) {
    nlohmann::ordered_json layer;
    layer["layer_id"] = l;
    layer["device_count"] = devices[l].size();
    layer["device_list"] = nlohmann::ordered_json::array();
    for (std::size_t d = 0; d < devices[l].size(); ++d) {
      nlohmann::ordered_json device;
      device["device_id"] = d;
      device["device_expert"] = devices[l][d];
      layer["device_list"].push_back(device);
    }
    record["layer_list"].push_back(layer);
  }
  return record.dump(4);
}

TEST(VllmAscend, TinyCaseIsExact) {
  TempDir dir;
  write_vllm_ascend_expert_map(dir.file("map.json"), Tiny());
  EXPECT_EQ(test::read_bytes(dir.file("map.json")), std::string(kTinyMap) + "\n");
  EXPECT_EQ(read_vllm_ascend_expert_map(dir.file("map.json"), 2), Tiny());
  EXPECT_EQ(read_vllm_ascend_expert_map(dir.file("map.json"), 2, 4), Tiny());
}

TEST(VllmAscend, ReadsTheLayoutVllmAscendWrites) {
  TempDir dir;
  // One layer, 8 experts on 2 devices of 5 slots: experts 7 and 2 on both, slots unsorted.
  write_bytes(dir.file("map.json"), UpstreamLayout({{{7, 2, 0, 3, 5}, {6, 1, 4, 7, 2}}}));
  Placement want(1, 8, 2, {0, 1, 0, 0, 1, 0, 1, 0});
  want.add_replica(0, 2, 1);
  want.add_replica(0, 7, 1);
  EXPECT_EQ(read_vllm_ascend_expert_map(dir.file("map.json"), 2), want);
  EXPECT_EQ(read_placement_file(dir.file("map.json"), 1, 8, 2), want);

  // Two layers, no redundancy, written the same way.
  write_bytes(dir.file("two.json"), UpstreamLayout({{{3, 0}, {2, 1}}, {{1, 2}, {0, 3}}}));
  EXPECT_EQ(read_vllm_ascend_expert_map(dir.file("two.json"), 2),
            Placement(2, 4, 2, {0, 1, 1, 0, /* layer 1 */ 1, 0, 0, 1}));
}

TEST(VllmAscend, RoundTrips) {
  TempDir dir;
  const std::string f = dir.file("map.json");
  for (int extra : {0, 1, 3}) {
    Placement p = Replicated(5, 32, 4, extra);
    write_vllm_ascend_expert_map(f, p);
    EXPECT_EQ(read_vllm_ascend_expert_map(f, 4), p) << extra;
    EXPECT_EQ(read_placement_file(f, 5, 32, 4), p) << extra;
  }
  // 6 experts on 4 GPUs: the experts do not divide, the 8 slots do (2 per GPU).
  Placement uneven(2, 6, 4, {0, 0, 1, 1, 2, 3, /* layer 1 */ 3, 2, 1, 0, 0, 1});
  uneven.add_replica(0, 0, 2);
  uneven.add_replica(0, 2, 3);
  uneven.add_replica(1, 0, 2);
  uneven.add_replica(1, 1, 3);
  write_vllm_ascend_expert_map(f, uneven);
  const json j = json::parse(test::read_bytes(f));
  EXPECT_EQ(j["layer_list"][0]["device_list"][2]["device_expert"], json::parse("[0, 4]"));
  EXPECT_EQ(read_vllm_ascend_expert_map(f, 4), uneven);
  EXPECT_EQ(read_vllm_ascend_expert_map(f, 4, 6), uneven);
}

TEST(VllmAscend, DenseLayersAreNotListed) {
  TempDir dir;
  write_vllm_ascend_expert_map(dir.file("a.json"), Tiny());
  write_vllm_ascend_expert_map(dir.file("b.json"), Tiny(), DecoderLayers{{0, 3}});
  EXPECT_EQ(test::read_bytes(dir.file("b.json")), test::read_bytes(dir.file("a.json")));
  EXPECT_EQ(read_vllm_ascend_expert_map(dir.file("b.json"), 2, 4, DecoderLayers{{0, 3}}), Tiny());
  // 2 MoE layers + 1 dense layer are decoder layers 0..2: dense layer 5 does not exist.
  EXPECT_ERROR(UsageError,
               write_vllm_ascend_expert_map(dir.file("c.json"), Tiny(), DecoderLayers{{5}}), "5");
  EXPECT_FALSE(std::filesystem::exists(dir.file("c.json")));
  EXPECT_ERROR(UsageError,
               read_vllm_ascend_expert_map(dir.file("a.json"), 2, 4, DecoderLayers{{5}}), "5");
}

TEST(VllmAscend, WriterRejectsWhatTheMapCannotHold) {
  TempDir dir;
  const std::string f = dir.file("map.json");
  Placement twice(1, 4, 2, {0, 0, 1, 1});
  twice.add_copy(0, 0, 0);
  twice.add_copy(0, 2, 1);
  EXPECT_ERROR(UsageError, write_vllm_ascend_expert_map(f, twice),
               "placement: layer 0 puts expert 0 twice on GPU 0; vllm-ascend maps an expert to "
               "one local slot per device");
  Placement uneven(1, 4, 2, {0, 0, 0, 1});
  EXPECT_ERROR(UsageError, write_vllm_ascend_expert_map(f, uneven), "GPU 1");
  EXPECT_FALSE(std::filesystem::exists(f));
}

TEST(VllmAscend, RejectsMalformedFiles) {
  TempDir dir;
  const std::string f = dir.file("map.json");
  auto read_text = [&](const std::string& text, int gpus = 2, int experts = 0) {
    write_bytes(f, text);
    return read_vllm_ascend_expert_map(f, gpus, experts);
  };
  // One layer, two devices; `d0`/`d1` are the devices' JSON.
  auto one = [](const std::string& d0, const std::string& d1) {
    return R"({"moe_layer_count": 1, "layer_list": [{"layer_id": 0, "device_count": 2, )"
           R"("device_list": [)" +
           d0 + ", " + d1 + "]}]}";
  };
  auto dev = [](int id, const std::string& experts) {
    return R"({"device_id": )" + std::to_string(id) + R"(, "device_expert": )" + experts + "}";
  };
  const std::string good0 = dev(0, "[0, 1]"), good1 = dev(1, "[2, 3]");
  ASSERT_EQ(read_text(one(good0, good1)), Placement(1, 4, 2, {0, 0, 1, 1}));

  EXPECT_ERROR(InputError, read_text("not json"), f + ": not valid JSON: ");
  EXPECT_ERROR(InputError, read_text(""), "empty file");
  EXPECT_ERROR(InputError, read_text("[1]"),
               f + ": expected an object with keys \"moe_layer_count\" and \"layer_list\", "
                   "found [1]");
  EXPECT_ERROR(InputError, read_text(R"({"moe_layer_count": 1})"), "found no \"layer_list\"");
  EXPECT_ERROR(InputError, read_text(R"({"moe_layer_count": 1, "layer_list": 5})"),
               f + ": layer_list is 5, expected a list");
  EXPECT_ERROR(InputError, read_text(R"({"moe_layer_count": 0, "layer_list": []})"),
               f + ": layer_list is an empty list");
  EXPECT_ERROR(InputError,
               read_text(R"({"layer_list": [{"device_list": [)" + good0 + ", " + good1 + "]}]}"),
               f + ": no \"moe_layer_count\"");
  EXPECT_ERROR(InputError,
               read_text(R"({"moe_layer_count": "1", "layer_list": [{"device_list": [)" + good0 +
                         ", " + good1 + "]}]}"),
               f + ": moe_layer_count is \"1\", expected a non-negative integer");
  EXPECT_ERROR(InputError,
               read_text(R"({"moe_layer_count": 2, "layer_list": [{"device_list": [)" + good0 +
                         ", " + good1 + "]}]}"),
               f + ": moe_layer_count is 2 but layer_list has 1 layer");
  EXPECT_ERROR(InputError, read_text(R"({"moe_layer_count": 1, "layer_list": [3]})"),
               f + ": layer_list[0] is 3, expected an object");
  EXPECT_ERROR(
      InputError,
      read_text(R"({"moe_layer_count": 1, "layer_list": [{"layer_id": 1, "device_list": [)" +
                good0 + ", " + good1 + "]}]}"),
      f + ": layer_list[0].layer_id is 1, expected 0");
  EXPECT_ERROR(InputError, read_text(R"({"moe_layer_count": 1, "layer_list": [{"layer_id": -1}]})"),
               f + ": layer_list[0].layer_id is -1, expected a non-negative integer");
  EXPECT_ERROR(InputError, read_text(R"({"moe_layer_count": 1, "layer_list": [{"layer_id": 0}]})"),
               f + ": layer_list[0] has no \"device_list\"");
  EXPECT_ERROR(InputError,
               read_text(R"({"moe_layer_count": 1, "layer_list": [{"device_count": 3, )"
                         R"("device_list": [)" +
                         good0 + ", " + good1 + "]}]}"),
               f + ": layer_list[0].device_count is 3 but device_list has 2 devices");
  EXPECT_ERROR(InputError, read_text(one(good0, good1), 4),
               f + ": layer_list[0].device_list has 2 devices, expected 4 (the GPU count)");
  EXPECT_ERROR(InputError, read_text(one(good0, "[2, 3]")),
               f + ": layer_list[0].device_list[1] is [2,3], expected an object");
  EXPECT_ERROR(InputError, read_text(one(dev(1, "[0, 1]"), dev(0, "[2, 3]"))),
               f + ": layer_list[0].device_list[0].device_id is 1, expected 0");
  EXPECT_ERROR(InputError, read_text(one(good0, R"({"device_id": 1})")),
               f + ": layer_list[0].device_list[1] has no \"device_expert\"");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "\"x\""))),
               f + ": layer_list[0].device_list[1].device_expert is \"x\", expected");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[2, \"a\"]"))),
               f + ": layer_list[0].device_list[1].device_expert[1] is \"a\", expected an integer");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[2, 2.5]"))),
               "device_expert[1] is 2.5, expected an integer");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[[2, 3]]"))), "device_expert is nested");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[]"))),
               f + ": layer_list[0].device_list[1].device_expert is an empty list");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[2, 3, 1]"))),
               f + ": layer_list[0].device_list[1].device_expert lists 3 experts but "
                   "layer_list[0].device_list[0] lists 2; every device holds the same number");
  EXPECT_ERROR(InputError,
               read_text(R"({"moe_layer_count": 2, "layer_list": [{"device_list": [)" + good0 +
                         ", " + good1 + "]}, " + R"({"device_list": [)" + dev(0, "[0, 1, 2]") +
                         ", " + dev(1, "[3, 0, 1]") + "]}]}"),
               f + ": layer_list[1].device_list[0].device_expert lists 3 experts");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[2, -1]"))),
               f + ": layer_list[0].device_list[1].device_expert[1] = -1 is negative");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[7, 3]")), 2, 4),
               f + ": layer_list[0].device_list[1].device_expert[0] = 7 is out of range 0..3");
  EXPECT_ERROR(InputError, read_text(one(good0, dev(1, "[3000000000, 3]"))),
               "device_expert[0] = 3000000000 is out of range");
  EXPECT_ERROR(InputError, read_text(one(dev(0, "[0, 0]"), good1)),
               f + ": layer_list[0].device_list[0].device_expert[1] = 0 repeats "
                   "device_expert[0]; an expert has at most one slot per device");
  EXPECT_ERROR(InputError, read_text(one(dev(0, "[0, 1]"), dev(1, "[1, 3]"))),
               f + ": layer 0: logical expert 2 has no slot");
  EXPECT_ERROR(InputError, read_text(one(good0, good1), 2, 5),
               "layer 0: logical expert 4 has no slot");
  EXPECT_ERROR(UsageError, read_text(one(good0, good1), 0), "GPU count");
  EXPECT_ERROR(IoError, read_vllm_ascend_expert_map(dir.file("missing.json"), 2), "cannot open");
  // read_placement_file checks the map against the trace.
  write_bytes(f, one(good0, good1));
  EXPECT_ERROR(InputError, read_placement_file(f, 2, 4, 2), "x 4 experts, the trace 2 x 4");
}

}  // namespace
}  // namespace exflow
