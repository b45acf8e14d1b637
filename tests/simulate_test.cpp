// The communication simulator: a hand-computed alpha-beta case, the presets, bad options, and the
// vanilla layout for more GPUs than experts. (Its byte matrices are checked against exflow-run's
// measured bytes in run_cli_test.)
#include "exflow/simulate.hpp"

#include <gtest/gtest.h>

#include <array>

#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/report.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "sim/png.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

TEST(Simulate, HandComputedAlphaBeta) {
  // 2 nodes x 1 GPU, vanilla: expert e on GPU e. Token 0: experts 0 then 1 (moves GPU 0 -> 1 at
  // layer 1); token 1: experts 1, 1 (stays). Rows of 1000 x 2 bytes; 4 tokens per step = twice
  // the trace; inter-node 8 Gbit/s = 1e9 bytes/s; alpha 10 us.
  const Trace trace = Trace::from_ids({0, 1, 1, 1}, 2, 2, 1, 2);
  const Topology topo(2, 1);
  const Placement vanilla = vanilla_placement(2, 2, topo);
  SimulationOptions o;
  o.hidden = 1000;
  o.dtype_bytes = 2;
  o.kv_bytes_per_token = 500;
  o.tokens_per_step = 4;
  o.network = Network{100, 8, 10};
  const std::vector<ConfigurationResult> r =
      simulate(trace, topo,
               {{"baseline/vanilla", Scheme::kBaseline, &vanilla, "vanilla"},
                {"exflow/vanilla", Scheme::kContextCoherent, &vanilla, "vanilla"}},
               o);
  ASSERT_EQ(r.size(), 2u);
  // Coherent: one dispatch of 2 rows per step (4000 bytes) at layer 1, nothing else.
  const ConfigurationResult& c = r[1];
  EXPECT_DOUBLE_EQ(c.dispatch[0].seconds, 0.0);
  EXPECT_DOUBLE_EQ(c.dispatch[1].bytes, 4000.0);
  EXPECT_DOUBLE_EQ(c.dispatch[1].busiest_bytes, 4000.0);
  EXPECT_NEAR(c.dispatch[1].seconds, 10e-6 + 4e-6, 1e-15);
  EXPECT_DOUBLE_EQ(c.combine[1].seconds, 0.0);
  // All-gather: 4 tokens x 1 layer x 500 bytes = 2000 bytes, to the other GPU; half of it per
  // GPU crosses the node boundary.
  EXPECT_DOUBLE_EQ(c.allgather_bytes_per_step, 2000.0);
  EXPECT_NEAR(c.allgather_seconds_per_step, 10e-6 + 1e-6, 1e-15);
  EXPECT_NEAR(c.seconds_per_step, 25e-6, 1e-15);
  EXPECT_NEAR(c.seconds_per_token, 25e-6 / 4, 1e-15);
  // Baseline: token 0 (owner GPU 0) is dispatched to GPU 1 and combined back at layer 1.
  const ConfigurationResult& b = r[0];
  EXPECT_NEAR(b.dispatch[1].seconds, 14e-6, 1e-15);
  EXPECT_NEAR(b.combine[1].seconds, 14e-6, 1e-15);
  EXPECT_DOUBLE_EQ(b.allgather_seconds_per_step, 0.0);
  EXPECT_DOUBLE_EQ(b.alltoall_bytes_per_step, 8000.0);
  EXPECT_DOUBLE_EQ(b.speedup, 1.0);
  EXPECT_NEAR(c.speedup, 28.0 / 25.0, 1e-12);
  EXPECT_TRUE(c.bytes.empty());

  o.matrices = true;
  const std::vector<ConfigurationResult> m =
      simulate(trace, topo, {{"exflow/vanilla", Scheme::kContextCoherent, &vanilla, "vanilla"}}, o);
  // [L, 2, G, G]: only layer 1's dispatch 0 -> 1, one row of 2000 bytes over the whole trace.
  std::vector<std::int64_t> expected(2 * 2 * 2 * 2, 0);
  expected[((1 * 2 + 0) * 2 + 0) * 2 + 1] = 2000;
  EXPECT_EQ(m[0].bytes, expected);
}

TEST(Simulate, DeepEPNormalModeTimesTheRdmaAndNvlinkStagesByHand) {
  // 2 nodes x 2 GPUs, vanilla: expert e on GPU e; one layer, top-2, owners t mod 4.
  //   token 0 (owner 0): experts 2, 3: RDMA 0 -> 2 (node 1's GPU with local index 0), then
  //                      NVLink forward 2 -> 3.
  //   token 1 (owner 1): experts 0, 3: NVLink 1 -> 0, RDMA 1 -> 3 (node 1's local index 1).
  //   token 2 (owner 2): experts 2, 3: NVLink 2 -> 3.
  //   token 3 (owner 3): experts 0, 1: RDMA 3 -> 1, then NVLink forward 1 -> 0.
  // Dispatch per GPU (rows): NVLink sent/received 0/2, 2/0, 2/0, 0/2: busiest 2 rows, 1 of them
  // forwarded on every GPU; RDMA sent/received 1/0, 1/1, 0/1, 1/1: busiest 1 row. Without the
  // forwards the NVLink stage's busiest GPU would move 1 row.
  // Standard (baseline), for comparison: NVLink 1 -> 0 and 2 -> 3; NIC 0 -> 2, 0 -> 3, 1 -> 3,
  // 3 -> 0, 3 -> 1: GPU 0 and GPU 3 send 2 rows across nodes, GPU 3 receives 2.
  const Trace trace = Trace::from_ids({2, 3, 0, 3, 2, 3, 0, 1}, 4, 1, 2, 4);
  const Topology topo(2, 2);
  const Placement vanilla = vanilla_placement(1, 4, topo);
  SimulationOptions o;
  o.hidden = 1000;  // rows of 2000 bytes
  o.dtype_bytes = 2;
  o.kv_bytes_per_token = 0;
  o.tokens_per_step = 4;           // the trace once per step
  o.network = Network{32, 8, 10};  // NVLink 4e9 bytes/s, NIC 1e9 bytes/s, alpha 10 us
  const std::vector<Configuration> configs = {
      {"baseline/vanilla", Scheme::kBaseline, &vanilla, "vanilla"},
      {"deepep/vanilla", Scheme::kDeepEP, &vanilla, "vanilla"},
      {"deepep-ll/vanilla", Scheme::kDeepEPLowLatency, &vanilla, "vanilla"}};
  std::vector<ConfigurationResult> r = simulate(trace, topo, configs, o);
  ASSERT_EQ(r.size(), 3u);
  const ConfigurationResult& d = r[1];
  EXPECT_EQ(d.scheme, Scheme::kDeepEP);
  EXPECT_EQ(d.placement_name, "vanilla");
  // 3 RDMA rows and 4 NVLink rows, 2000 bytes each; combine mirrors dispatch.
  EXPECT_DOUBLE_EQ(d.dispatch[0].bytes, 7 * 2000.0);
  EXPECT_DOUBLE_EQ(d.combine[0].bytes, 7 * 2000.0);
  // RDMA stage 2000 / 1e9 = 2 us, NVLink stage 4000 / 4e9 = 1 us: the RDMA stage bounds it.
  EXPECT_NEAR(d.dispatch[0].seconds, 10e-6 + 2e-6, 1e-15);
  EXPECT_DOUBLE_EQ(d.dispatch[0].busiest_bytes, 2000.0);
  EXPECT_NEAR(d.combine[0].seconds, 12e-6, 1e-15);
  EXPECT_NEAR(d.seconds_per_step, 24e-6, 1e-15);
  EXPECT_DOUBLE_EQ(d.allgather_seconds_per_step, 0.0);  // the KV all-gather is coherent's alone
  EXPECT_DOUBLE_EQ(d.metrics.inter, 6.0 / 4);           // 3 RDMA rows each way per 4 tokens
  EXPECT_DOUBLE_EQ(d.metrics.intra, 8.0 / 4);
  // Standard: the busiest NIC moves 2 rows, 4 us; NVLink 1 row, 0.5 us.
  EXPECT_NEAR(r[0].dispatch[0].seconds, 14e-6, 1e-15);
  EXPECT_NEAR(r[0].seconds_per_step, 28e-6, 1e-15);
  EXPECT_NEAR(d.speedup, 28.0 / 24.0, 1e-12);
  // Low-latency mode: no expert shares a GPU here, so the same sends as standard.
  EXPECT_NEAR(r[2].seconds_per_step, 28e-6, 1e-15);
  EXPECT_EQ(fastest(r), 1u);

  // A slow NVLink (8 Gbit/s, 1e9 bytes/s): the NVLink stage with its forwards, 2 rows = 4 us,
  // bounds DeepEP's dispatch now; standard's NIC side still takes 4 us.
  o.network = Network{8, 8, 10};
  r = simulate(trace, topo, configs, o);
  EXPECT_NEAR(r[1].dispatch[0].seconds, 14e-6, 1e-15);
  EXPECT_DOUBLE_EQ(r[1].dispatch[0].busiest_bytes, 4000.0);
  EXPECT_NEAR(r[0].dispatch[0].seconds, 14e-6, 1e-15);
  EXPECT_EQ(fastest(r), 0u);  // a tie goes to the first
}

TEST(Simulate, DeepEPLowLatencySendsEveryTokenExpertOverTheNic) {
  // 2 nodes x 1 GPU, experts 0, 1 on GPU 0 and 2, 3 on GPU 1. Token 0 (owner 0) needs experts 2
  // and 3: standard and DeepEP normal send it once to GPU 1, low-latency mode twice, both over
  // the NIC (1e9 bytes/s). Token 1 (owner 1) needs 2 and 3: local.
  const Trace trace = Trace::from_ids({2, 3, 2, 3}, 2, 1, 2, 4);
  const Topology topo(2, 1);
  const Placement vanilla = vanilla_placement(1, 4, topo);
  SimulationOptions o;
  o.hidden = 1000;
  o.kv_bytes_per_token = 0;
  o.tokens_per_step = 2;
  o.network = Network{100, 8, 10};
  const std::vector<ConfigurationResult> r =
      simulate(trace, topo,
               {{"baseline/vanilla", Scheme::kBaseline, &vanilla, "vanilla"},
                {"deepep/vanilla", Scheme::kDeepEP, &vanilla, "vanilla"},
                {"deepep-ll/vanilla", Scheme::kDeepEPLowLatency, &vanilla, "vanilla"}},
               o);
  EXPECT_NEAR(r[0].dispatch[0].seconds, 12e-6, 1e-15);
  EXPECT_NEAR(r[1].dispatch[0].seconds, 12e-6, 1e-15);
  EXPECT_NEAR(r[2].dispatch[0].seconds, 14e-6, 1e-15);
  EXPECT_DOUBLE_EQ(r[2].dispatch[0].bytes, 4000.0);
  EXPECT_NEAR(r[2].seconds_per_step, 28e-6, 1e-15);
  EXPECT_NEAR(r[2].speedup, 24.0 / 28.0, 1e-12);
}

TEST(Simulate, SchemeConfigurationsKeepTheFirstThreeAndAddEveryScheme) {
  const Topology topo(1, 2);
  const Placement vanilla = vanilla_placement(1, 2, topo);
  const Placement other = vanilla_placement(1, 2, topo);
  const std::vector<Configuration> c =
      scheme_configurations(vanilla, {{"a", &other}, {"b", &other}});
  std::vector<std::string> names;
  for (const Configuration& x : c) names.push_back(x.name);
  EXPECT_EQ(names, (std::vector<std::string>{"baseline/vanilla", "exflow/vanilla", "exflow/a",
                                             "exflow/b", "baseline/a", "baseline/b",
                                             "deepep/vanilla", "deepep/a", "deepep/b",
                                             "deepep-ll/vanilla", "deepep-ll/a", "deepep-ll/b"}));
  EXPECT_EQ(c[0].scheme, Scheme::kBaseline);
  EXPECT_EQ(c[2].scheme, Scheme::kContextCoherent);
  EXPECT_EQ(c[2].placement, &other);
  EXPECT_EQ(c[2].placement_name, "a");
  EXPECT_EQ(c[6].scheme, Scheme::kDeepEP);
  EXPECT_EQ(c[6].placement, &vanilla);
  EXPECT_EQ(c[11].scheme, Scheme::kDeepEPLowLatency);
  EXPECT_EQ(std::string(configuration_prefix(Scheme::kContextCoherent)), "exflow");
}

TEST(Simulate, PresetsAndBadOptions) {
  const ModelPreset& ds = find_model_preset("deepseek-v3");
  EXPECT_EQ(ds.hidden, 7168);
  EXPECT_EQ(ds.kv_bytes_per_token, 1152);
  EXPECT_EQ(ds.layers, 58);
  EXPECT_EQ(ds.experts, 256);
  EXPECT_EQ(ds.k, 8);
  EXPECT_EQ(ds.first_dense_layers, 3);
  EXPECT_EQ(find_model_preset("deepseek-v2-lite").first_dense_layers, 1);
  EXPECT_EQ(model_presets().size(), 6u);
  for (const char* name : {"mixtral-8x7b", "mixtral-8x22b", "deepseek-v3", "deepseek-v2-lite",
                           "qwen3-235b-a22b", "olmoe-1b-7b"}) {
    EXPECT_EQ(find_model_preset(name).name, name);
  }
  try {
    find_model_preset("llama");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("olmoe-1b-7b"), std::string::npos) << e.what();
  }
  const Trace trace = Trace::from_ids({0, 1}, 1, 2, 1, 2);
  const Topology topo(1, 2);
  const Placement vanilla = vanilla_placement(2, 2, topo);
  SimulationOptions o;
  o.hidden = 8;
  o.tokens_per_step = 1;
  const std::vector<Configuration> one = {{"x", Scheme::kBaseline, &vanilla, "vanilla"}};
  EXPECT_NO_THROW(simulate(trace, topo, one, o));
  SimulationOptions bad = o;
  bad.network.inter_gbps = 0;
  EXPECT_THROW(simulate(trace, topo, one, bad), UsageError);
  bad = o;
  bad.tokens_per_step = 0;
  EXPECT_THROW(simulate(trace, topo, one, bad), UsageError);
  bad = o;
  bad.network.latency_us = -1;
  EXPECT_THROW(simulate(trace, topo, one, bad), UsageError);
}

TEST(Simulate, VanillaForMoreGpusThanExperts) {
  const Topology topo(2, 4);  // 8 GPUs, 2 experts: groups of 2 GPUs, each with both experts
  const Placement p = vanilla_placement_any(3, 2, topo);
  EXPECT_EQ(p.copies(1, 0), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(p.copies(2, 1), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_NO_THROW(validate(p, topo, Balance::kNone));
  EXPECT_EQ(p.slots_per_gpu(0), std::vector<int>(8, 1));
  EXPECT_EQ(vanilla_placement_any(1, 16, topo), vanilla_placement(1, 16, topo));
  EXPECT_THROW(vanilla_placement_any(1, 3, topo), UsageError);
}

TEST(ReportPng, DecodesWithAnIndependentInflater) {
  // Python's zlib (not this encoder's code) inflates the image data; the rows come back as
  // filter byte 0 followed by the palette indices.
  std::array<std::uint8_t, 768> palette{};
  for (int i = 0; i < 256; ++i)
    palette[static_cast<std::size_t>(3 * i)] = static_cast<std::uint8_t>(i);
  const std::vector<std::uint8_t> pixels = {0, 1, 2, 250, 251, 252};
  test::TempDir dir;
  test::write_bytes(dir.file("x.png"), sim::encode_png(3, 2, pixels, palette));
  const test::CommandRun r = test::run_command(
      "python3", {"-c",
                  "import struct, sys, zlib\n"
                  "b = open(sys.argv[1], 'rb').read()\n"
                  "assert b[:8] == b'\\x89PNG\\r\\n\\x1a\\n'\n"
                  "i, idat, kinds = 8, b'', []\n"
                  "while i < len(b):\n"
                  "  n, = struct.unpack('>I', b[i:i+4]); kind = b[i+4:i+8]; data = b[i+8:i+8+n]\n"
                  "  assert struct.unpack('>I', b[i+8+n:i+12+n])[0] == zlib.crc32(kind + data)\n"
                  "  kinds.append(kind.decode()); idat += data if kind == b'IDAT' else b''\n"
                  "  if kind == b'IHDR': print(*struct.unpack('>IIBBBBB', data))\n"
                  "  i += 12 + n\n"
                  "print(*kinds)\n"
                  "print(*zlib.decompress(idat))\n",
                  dir.file("x.png")});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "3 2 8 3 0 0 0\nIHDR PLTE IDAT IEND\n0 0 1 2 0 250 251 252\n");
  EXPECT_EQ(sim::base64("Man"), "TWFu");
  EXPECT_EQ(sim::base64("Ma"), "TWE=");
  EXPECT_EQ(sim::base64("M"), "TQ==");
}

TEST(Report, EscapesTextAndDrawsEverySection) {
  ReportData d;
  d.title = "a <b> & \"c\"";
  d.facts.emplace_back("k", "<v>");
  d.affinity.push_back({0, {0, 1}, {0, 1}, {0.25, 0.75, 1.0, 0.0}});
  d.local_fraction.push_back({"vanilla", {0.5, 0.25}});
  d.loads.push_back({"vanilla", 2, 2, {1, 3, 2, 2}});
  d.convergence = {{100, 5.0}, {200, 4.0}};
  d.vanilla_cost = 6.0;
  d.simulation = {{"baseline/vanilla", 1.0, 0.0, 1.0}, {"exflow/vanilla", 0.5, 0.25, 1.33}};
  const std::string html = render_html_report(d);
  EXPECT_NE(html.find("a &lt;b&gt; &amp; &quot;c&quot;"), std::string::npos);
  EXPECT_EQ(html.find("<v>"), std::string::npos);
  std::size_t svgs = 0;
  for (std::size_t at = html.find("<svg"); at != std::string::npos;
       at = html.find("<svg", at + 1)) {
    ++svgs;
  }
  EXPECT_EQ(svgs, 5u);
  EXPECT_NE(html.find("0.750 ms (1.33x)"), std::string::npos);
  EXPECT_EQ(html.find("Schemes side by side"), std::string::npos);  // no table without rows

  d.scheme_columns = {"vanilla", "a<b>.csv"};
  d.schemes = {{"baseline", false, {{1.0, 1.0, 2.5, 0.5}, {0.8, 1.25, 2.0, 0.25}}},
               {"deepep", true, {{0.5, 2.0, 1.0, 1.5}, {0.4, 2.5, 0.75, 1.0}}}};
  d.fastest = "deepep/a<b>.csv";
  const std::string table = render_html_report(d);
  EXPECT_NE(table.find("<th colspan=\"3\">vanilla</th><th colspan=\"3\">a&lt;b&gt;.csv</th>"),
            std::string::npos);
  EXPECT_NE(table.find("<tr><td>baseline</td><td>1.000 (1.00x)</td><td>2.500</td><td>0.500</td>"
                       "<td>0.800 (1.25x)</td><td>2.000</td><td>0.250</td></tr>"),
            std::string::npos);
  EXPECT_NE(table.find("<tr class=\"primary\"><td>deepep *</td><td>0.500 (2.00x)</td>"),
            std::string::npos);
  EXPECT_NE(table.find("Fastest: deepep/a&lt;b&gt;.csv"), std::string::npos);
}

}  // namespace
}  // namespace exflow
