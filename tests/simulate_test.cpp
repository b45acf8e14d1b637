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
               {{"baseline/vanilla", Scheme::kBaseline, &vanilla},
                {"exflow/vanilla", Scheme::kContextCoherent, &vanilla}},
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
      simulate(trace, topo, {{"exflow/vanilla", Scheme::kContextCoherent, &vanilla}}, o);
  // [L, 2, G, G]: only layer 1's dispatch 0 -> 1, one row of 2000 bytes over the whole trace.
  std::vector<std::int64_t> expected(2 * 2 * 2 * 2, 0);
  expected[((1 * 2 + 0) * 2 + 0) * 2 + 1] = 2000;
  EXPECT_EQ(m[0].bytes, expected);
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
  const std::vector<Configuration> one = {{"x", Scheme::kBaseline, &vanilla}};
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
}

}  // namespace
}  // namespace exflow
