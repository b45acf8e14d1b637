// The runtime model: deterministic weights, hand-checked kernels, row batching that never changes
// a token's bits, the reference run (determinism, causality, schedule independence) and the
// exflow-run CLI end to end.
#include "exflow/runtime.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numbers>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/splitmix64.hpp"
#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/route_plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "support/test_support.hpp"

namespace exflow::runtime {
namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.layers = 3;
  c.experts = 4;
  c.k = 2;
  c.hidden = 8;
  c.heads = 2;
  c.ffn = 12;
  c.seed = 7;
  return c;
}

// A random top-k trace [tokens, layers, k] with distinct experts per row.
Trace random_trace(std::int64_t tokens, int layers, int k, int experts, std::uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<std::int32_t> ids;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      std::vector<std::int32_t> row;
      while (static_cast<int>(row.size()) < k) {
        const int e = rng.below(experts);
        if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
      }
      ids.insert(ids.end(), row.begin(), row.end());
    }
  }
  return Trace::from_ids(std::move(ids), tokens, layers, k, experts);
}

std::vector<float> random_values(std::size_t n, std::uint64_t seed) {
  std::vector<float> v(n);
  fill_uniform(seed, 1.0f, v);
  return v;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_same_expert(const ExpertWeights& a, const ExpertWeights& b) {
  EXPECT_TRUE(same_bits(a.w1, b.w1));
  EXPECT_TRUE(same_bits(a.w2, b.w2));
  EXPECT_TRUE(same_bits(a.w3, b.w3));
}

// ---------------------------------------------------------------------------------------------
// Weights and inputs

TEST(RuntimeWeights, OneExpertAloneEqualsTheSameExpertAmongAll) {
  const ModelConfig c = small_config();
  const ModelWeights all(c);
  std::vector<char> hosted(static_cast<std::size_t>(c.layers * c.experts), 0);
  hosted[2 * c.experts + 3] = 1;
  const ModelWeights one(c, hosted);
  EXPECT_EQ(one.hosted_experts(), 1);
  EXPECT_FALSE(one.hosts(0, 0));
  EXPECT_THROW(one.expert(0, 0), UsageError);
  expect_same_expert(one.expert(2, 3), all.expert(2, 3));
  expect_same_expert(make_expert_weights(c, 2, 3), all.expert(2, 3));
  EXPECT_TRUE(same_bits(one.layer(1).wq, all.layer(1).wq));
  EXPECT_TRUE(same_bits(one.layer(1).ffn_norm, all.layer(1).ffn_norm));

  // A model with more layers and experts generates the same values for the same (layer, expert).
  ModelConfig bigger = c;
  bigger.layers = 5;
  bigger.experts = 16;
  bigger.k = 4;
  expect_same_expert(make_expert_weights(bigger, 2, 3), all.expert(2, 3));
  EXPECT_TRUE(same_bits(make_layer_weights(bigger, 1).wo, all.layer(1).wo));
}

TEST(RuntimeWeights, SeedsLayersExpertsAndKindsGiveDifferentValues) {
  const ModelConfig c = small_config();
  ModelConfig other = c;
  other.seed = 8;
  const ExpertWeights a = make_expert_weights(c, 1, 2);
  EXPECT_FALSE(same_bits(a.w1, make_expert_weights(other, 1, 2).w1));
  EXPECT_FALSE(same_bits(a.w1, make_expert_weights(c, 1, 3).w1));
  EXPECT_FALSE(same_bits(a.w1, make_expert_weights(c, 2, 2).w1));
  EXPECT_FALSE(same_bits(a.w1, a.w3));
  const LayerWeights l = make_layer_weights(c, 0);
  EXPECT_FALSE(same_bits(l.wq, l.wk));
  EXPECT_FALSE(same_bits(l.wq, make_layer_weights(other, 0).wq));
  EXPECT_FALSE(same_bits(make_input(c, 5), make_input(c, 6)));
  EXPECT_TRUE(same_bits(make_input(c, 5), make_input(c, 5)));
  EXPECT_FALSE(same_bits(make_input(c, 5), make_input(other, 5)));
}

TEST(RuntimeWeights, ShapesAndScales) {
  ModelConfig c = small_config();
  c.hidden = 64;
  c.ffn = 96;
  const ExpertWeights e = make_expert_weights(c, 0, 0);
  EXPECT_EQ(e.w1.size(), 64u * 96u);
  EXPECT_EQ(e.w3.size(), 64u * 96u);
  EXPECT_EQ(e.w2.size(), 96u * 64u);
  // U(±sqrt(3/fan_in)): variance 1/fan_in.
  double ss = 0;
  for (float v : e.w1) {
    EXPECT_LE(std::fabs(v), std::sqrt(3.0f / 64.0f));
    ss += static_cast<double>(v) * v;
  }
  EXPECT_NEAR(ss / static_cast<double>(e.w1.size()) * 64.0, 1.0, 0.05);
  for (float g : make_layer_weights(c, 0).attn_norm) {
    EXPECT_GE(g, 0.875f);
    EXPECT_LT(g, 1.125f);
  }
  c.activation = Activation::kGELU;
  EXPECT_TRUE(make_expert_weights(c, 0, 0).w3.empty());
  EXPECT_TRUE(same_bits(make_expert_weights(c, 0, 0).w1, e.w1));
}

// ---------------------------------------------------------------------------------------------
// Kernels on hand-computed cases

TEST(RuntimeKernels, RmsNorm) {
  const std::vector<float> x = {3, 4, 1, 1};
  const std::vector<float> gain = {1, 2};
  std::vector<float> y(4);
  rmsnorm(x, gain, 2, y);
  const double rms = std::sqrt(12.5 + 1e-6);
  EXPECT_NEAR(y[0], 3 / rms, 1e-6);
  EXPECT_NEAR(y[1], 8 / rms, 1e-6);
  EXPECT_NEAR(y[2], 1 / std::sqrt(1 + 1e-6), 1e-6);
  EXPECT_NEAR(y[3], 2 / std::sqrt(1 + 1e-6), 1e-6);
}

TEST(RuntimeKernels, MatmulIsRowTimesMatrix) {
  const std::vector<float> x = {1, 2, -1, 0};
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};  // [2, 3]
  std::vector<float> y(6);
  matmul(x, w, 2, 2, 3, y);
  EXPECT_EQ(y, (std::vector<float>{9, 12, 15, -1, -2, -3}));
  EXPECT_THROW(matmul(x, w, 2, 3, 2, y), UsageError);
}

TEST(RuntimeKernels, MatmulEqualsThePlainLoopBitForBit) {
  // Every tiling path (4-row tiles, single rows, remainder columns) accumulates i in order.
  for (int rows : {1, 3, 4, 5, 9}) {
    for (int out : {1, 15, 16, 33, 70}) {
      const int in = 7;
      const std::vector<float> x = random_values(static_cast<std::size_t>(rows * in), 11);
      const std::vector<float> w = random_values(static_cast<std::size_t>(in * out), 12);
      std::vector<float> y(static_cast<std::size_t>(rows * out)), plain(y.size(), 0.0f);
      matmul(x, w, rows, in, out, y);
      for (int r = 0; r < rows; ++r) {
        for (int i = 0; i < in; ++i) {
          for (int j = 0; j < out; ++j) plain[r * out + j] += x[r * in + i] * w[i * out + j];
        }
      }
      EXPECT_TRUE(same_bits(y, plain)) << rows << " x " << out;
    }
  }
}

TEST(RuntimeKernels, AttentionOneHeadAndTwoHeads) {
  const std::vector<float> q = {1, 0};
  const std::vector<float> keys = {1, 0, 0, 1};
  const std::vector<float> values = {1, 2, 3, 4};
  std::vector<float> out(2);
  attend(q, keys, values, 2, 1, out);
  const double s0 = 1 / std::sqrt(2.0);
  const double p0 = std::exp(s0) / (std::exp(s0) + 1);
  EXPECT_NEAR(out[0], p0 * 1 + (1 - p0) * 3, 1e-6);
  EXPECT_NEAR(out[1], p0 * 2 + (1 - p0) * 4, 1e-6);

  // Two heads of width 1: head 0 scores [1, 0], head 1 scores [0, 0] (uniform).
  attend(q, keys, values, 2, 2, out);
  const double e = std::exp(1.0) / (std::exp(1.0) + 1);
  EXPECT_NEAR(out[0], e * 1 + (1 - e) * 3, 1e-6);
  EXPECT_NEAR(out[1], 3.0, 1e-6);

  // One position: the token's own value, exactly.
  attend(q, std::span<const float>(keys).first(2), std::span<const float>(values).first(2), 1, 1,
         out);
  EXPECT_EQ(out, (std::vector<float>{1, 2}));
}

TEST(RuntimeKernels, AttentionReadsOnlyThePositionsItIsGiven) {
  // Causal by construction: the cache rows after the token's position never enter its result.
  const int H = 8;
  const std::vector<float> q = random_values(H, 1);
  std::vector<float> keys = random_values(5 * H, 2), values = random_values(5 * H, 3);
  std::vector<float> before(H), after(H);
  attend(q, std::span<const float>(keys).first(3 * H), std::span<const float>(values).first(3 * H),
         3, 2, before);
  for (int i = 3 * H; i < 5 * H; ++i) keys[i] = values[i] = 100.0f;
  attend(q, std::span<const float>(keys).first(3 * H), std::span<const float>(values).first(3 * H),
         3, 2, after);
  EXPECT_TRUE(same_bits(before, after));
}

TEST(RuntimeKernels, ExpertFfnSwiGluAndGelu) {
  ExpertWeights w;
  w.hidden = 2;
  w.ffn = 2;
  w.w1 = w.w3 = w.w2 = {1, 0, 0, 1};
  const std::vector<float> m = {1, -2};
  std::vector<float> y(2);
  expert_ffn(w, Activation::kSwiGLU, m, 1, y);
  auto silu_ref = [](double x) { return x / (1 + std::exp(-x)); };
  EXPECT_NEAR(y[0], silu_ref(1) * 1, 1e-6);
  EXPECT_NEAR(y[1], silu_ref(-2) * -2, 1e-6);

  w.w3.clear();
  expert_ffn(w, Activation::kGELU, m, 1, y);
  auto gelu_ref = [](double x) {
    return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
  };
  EXPECT_NEAR(y[0], gelu_ref(1), 1e-6);
  EXPECT_NEAR(y[1], gelu_ref(-2), 1e-6);
  EXPECT_THROW(expert_ffn(w, Activation::kSwiGLU, m, 1, y), UsageError);
}

TEST(RuntimeKernels, DeterministicExpMatchesTheLibrary) {
  EXPECT_EQ(exp_det(0.0), 1.0);
  EXPECT_EQ(exp_det(-1000.0), 0.0);
  EXPECT_TRUE(std::isinf(exp_det(1000.0)));
  EXPECT_TRUE(std::isnan(exp_det(std::nan(""))));
  for (double x = -708; x < 709; x += 0.37) EXPECT_NEAR(exp_det(x) / std::exp(x), 1.0, 1e-15) << x;
  for (double x = -745; x < -708; x += 0.37) {
    EXPECT_LE(std::fabs(exp_det(x) - std::exp(x)), 1e-323) << x;  // subnormal: a unit or two
  }
  EXPECT_NEAR(silu(0.5f), 0.5 / (1 + std::exp(-0.5)), 1e-7);
  EXPECT_EQ(silu(-200.0f), -0.0f);
  EXPECT_EQ(gelu(50.0f), 50.0f);
}

TEST(RuntimeKernels, CombineWeights) {
  const std::vector<float> w3 = combine_weights(Combine::kTraceOrder, 3);
  EXPECT_EQ(w3, (std::vector<float>{4.0f / 7, 2.0f / 7, 1.0f / 7}));
  EXPECT_EQ(combine_weights(Combine::kTraceOrder, 1), std::vector<float>{1.0f});
  EXPECT_EQ(combine_weights(Combine::kUniform, 4), std::vector<float>(4, 0.25f));
  EXPECT_THROW(combine_weights(Combine::kUniform, 0), UsageError);
}

TEST(RuntimeKernels, CombineAddsTheWeightedColumns) {
  std::vector<float> h = {1, 1};
  const std::vector<float> outputs = {1, 0, 0, 1};  // column 0 = e0, column 1 = e1
  const std::vector<float> w = combine_weights(Combine::kTraceOrder, 2);
  combine(outputs, w, h);
  EXPECT_NEAR(h[0], 1 + 2.0 / 3, 1e-6);
  EXPECT_NEAR(h[1], 1 + 1.0 / 3, 1e-6);

  // The column order is the trace's: swapping two expert outputs changes the result.
  const int H = 16;
  const std::vector<float> y = random_values(3 * H, 4);
  std::vector<float> swapped(y);
  std::swap_ranges(swapped.begin(), swapped.begin() + H, swapped.begin() + H);
  std::vector<float> a(H, 0.5f), b(H, 0.5f);
  combine(y, combine_weights(Combine::kTraceOrder, 3), a);
  combine(swapped, combine_weights(Combine::kTraceOrder, 3), b);
  EXPECT_FALSE(same_bits(a, b));
  EXPECT_THROW(combine(y, w, a), UsageError);
}

TEST(RuntimeKernels, CombineGivesTheSameBitsForAnyGroupingOfTheColumns) {
  // The columns of a token split over processes: each sums its own, the home adds the partial
  // sums (sent as int32) in any order. Every grouping must give combine()'s bits.
  const int H = 64;
  const int k = 6;
  const std::vector<float> y = random_values(k * H, 11);
  const std::vector<float> w = combine_weights(Combine::kTraceOrder, k);
  std::vector<float> expected(H, 0.75f);
  combine(y, w, expected);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int> group(k);
    for (int& g : group) g = static_cast<int>(rng() % 3);
    std::vector<std::int64_t> total(H, 0);
    for (int g : {2, 0, 1}) {  // partials arrive in any order
      std::vector<std::int64_t> partial(H, 0);
      for (int c = 0; c < k; ++c) {
        if (group[static_cast<std::size_t>(c)] != g) continue;
        accumulate_expert_output(
            std::span<const float>(y).subspan(static_cast<std::size_t>(c) * H, H),
            w[static_cast<std::size_t>(c)], k, partial);
      }
      std::vector<std::int32_t> wire(H);
      narrow_partial(partial, wire);
      for (int i = 0; i < H; ++i)
        total[static_cast<std::size_t>(i)] += wire[static_cast<std::size_t>(i)];
    }
    std::vector<float> h(H, 0.75f);
    apply_combined(total, h);
    EXPECT_TRUE(same_bits(h, expected)) << "trial " << trial;
  }
  // Within 2^-21 per term of the exact weighted sum.
  for (int i = 0; i < H; ++i) {
    double exact = 0.75;
    for (int c = 0; c < k; ++c) {
      exact += static_cast<double>(w[static_cast<std::size_t>(c)]) *
               y[static_cast<std::size_t>(c * H + i)];
    }
    EXPECT_NEAR(expected[static_cast<std::size_t>(i)], exact, k * 0x1p-21 + 1e-7);
  }
}

TEST(RuntimeKernels, CombineRejectsOutputsOutsideTheFixedPointRange) {
  std::vector<std::int64_t> acc(2, 0);
  const std::vector<float> fits = {1000.0f, -1000.0f};
  accumulate_expert_output(fits, 1.0f, 2, acc);  // limit 2048 / 2 = 1024
  EXPECT_EQ(acc[0], 1000LL << kCombineFractionBits);
  const std::vector<float> too_big = {0.0f, 1100.0f};
  EXPECT_THROW(accumulate_expert_output(too_big, 1.0f, 2, acc), InputError);
  const std::vector<float> nan = {std::nanf(""), 0.0f};
  EXPECT_THROW(accumulate_expert_output(nan, 1.0f, 1, acc), InputError);
}

TEST(RuntimeKernels, BatchingRowsNeverChangesARowsBits) {
  ModelConfig c = small_config();
  c.hidden = 24;
  c.heads = 3;
  c.ffn = 40;
  const int rows = 11;
  const std::size_t H = 24;
  const std::vector<float> x = random_values(rows * H, 5);
  const LayerWeights lw = make_layer_weights(c, 0);
  for (Activation act : {Activation::kSwiGLU, Activation::kGELU}) {
    c.activation = act;
    const ExpertWeights ew = make_expert_weights(c, 0, 1);
    std::vector<float> q(x.size()), k(x.size()), v(x.size()), y(x.size()), h(x);
    attention_qkv(lw, x, rows, q, k, v);
    expert_ffn(ew, act, x, rows, y);
    attention_output(lw, x, rows, h);
    for (int r = 0; r < rows; ++r) {
      const auto row = std::span<const float>(x).subspan(r * H, H);
      std::vector<float> q1(H), k1(H), v1(H), y1(H), h1(row.begin(), row.end());
      attention_qkv(lw, row, 1, q1, k1, v1);
      expert_ffn(ew, act, row, 1, y1);
      attention_output(lw, row, 1, h1);
      EXPECT_TRUE(same_bits(q1, std::span<const float>(q).subspan(r * H, H))) << r;
      EXPECT_TRUE(same_bits(k1, std::span<const float>(k).subspan(r * H, H))) << r;
      EXPECT_TRUE(same_bits(v1, std::span<const float>(v).subspan(r * H, H))) << r;
      EXPECT_TRUE(same_bits(y1, std::span<const float>(y).subspan(r * H, H))) << r;
      EXPECT_TRUE(same_bits(h1, std::span<const float>(h).subspan(r * H, H))) << r;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Workload

TEST(RuntimeWorkload, ScheduleIsPrefillThenOneStepPerPosition) {
  Workload w;
  w.batch = 2;
  w.seq_len = 8;
  w.prefill = 3;
  std::vector<Step> s = schedule(w);
  ASSERT_EQ(s.size(), 6u);
  EXPECT_EQ(s[0].first_position, 0);
  EXPECT_EQ(s[0].positions, 3);
  EXPECT_EQ(s[1].first_position, 3);
  EXPECT_EQ(s[5].first_position, 7);
  EXPECT_EQ(s[5].positions, 1);
  w.prefill.reset();
  EXPECT_EQ(w.prefill_positions(), 4);
  w.prefill = 0;
  EXPECT_EQ(schedule(w).size(), 8u);
  w.prefill = 8;
  EXPECT_EQ(schedule(w).size(), 1u);
  EXPECT_EQ(w.tokens(), 16);
  EXPECT_EQ(w.token(1, 2), 10);
  w.prefill = 9;
  EXPECT_THROW(validate(w), UsageError);
  w.prefill.reset();
  w.batch = 0;
  EXPECT_THROW(validate(w), UsageError);
}

TEST(RuntimeWorkload, TooShortTraceIsOneLineNamingTheCounts) {
  const Trace trace = random_trace(10, 3, 2, 4, 1);
  ModelConfig c = small_config();
  Workload w;
  w.batch = 2;
  w.seq_len = 8;
  try {
    check_fits(trace, c, w);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("needs 16 tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("batch 2 x seq-len 8"), std::string::npos) << msg;
    EXPECT_NE(msg.find("has 10"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_THROW(run_reference(trace, c, w), InputError);
  w.seq_len = 5;
  c.k = 3;
  EXPECT_THROW(check_fits(trace, c, w), UsageError);
  c.k = 2;
  c.layers = 4;
  EXPECT_THROW(check_fits(trace, c, w), UsageError);
  c.layers = 3;
  c.experts = 3;
  EXPECT_THROW(check_fits(trace, c, w), UsageError);
  c.experts = 4;
  c.heads = 3;
  EXPECT_THROW(check_fits(trace, c, w), UsageError);
}

TEST(RuntimeWorkload, RoutesFollowTheTrace) {
  const Trace trace = random_trace(20, 3, 2, 4, 2);
  const ModelConfig c = small_config();
  Workload w;
  w.batch = 2;
  w.seq_len = 5;
  const std::vector<std::int32_t> r = workload_routes(trace, c, w);
  ASSERT_EQ(r.size(), 10u * 3 * 2);
  for (std::int64_t t = 0; t < 10; ++t) {
    for (int l = 0; l < 3; ++l) {
      for (int col = 0; col < 2; ++col) EXPECT_EQ(r[(t * 3 + l) * 2 + col], trace.at(t, l, col));
    }
  }
}

TEST(RoutePlan, FollowsTheCostModelsRules) {
  // 1 node x 2 GPUs, 4 experts: vanilla puts experts 0, 1 on GPU 0 and 2, 3 on GPU 1. Two
  // sequences of two tokens, 2 layers, top-2.
  ModelConfig c = small_config();
  c.layers = 2;
  c.experts = 4;
  c.k = 2;
  Workload w;
  w.batch = 2;
  w.seq_len = 2;
  const std::vector<std::int32_t> routes = {
      2, 0, 0, 1,  // token 0: layer 0 GPUs {1, 0} (tie: column 0's GPU 1), layer 1 {0, 0}
      0, 2, 3, 2,  // token 1: layer 0 {0, 1} (tie: GPU 0), layer 1 {1, 1}
      1, 3, 3, 0,  // token 2: layer 0 {0, 1} (tie: GPU 0), layer 1 {1, 0} (tie: GPU 1)
      3, 2, 1, 0,  // token 3: layer 0 {1, 1}, layer 1 {0, 0}
  };
  const Topology topo(1, 2);
  Placement p = vanilla_placement(2, 4, topo);

  const RoutePlan exflow = plan_routes(routes, c, w, p, topo, ParallelMode::kExflow);
  EXPECT_EQ(exflow.home, (std::vector<std::int32_t>{1, 0, 0, 1, 0, 1, 1, 0}));
  EXPECT_EQ(exflow.attention,
            (std::vector<std::int32_t>{kEveryGpu, 1, kEveryGpu, 0, kEveryGpu, 0, kEveryGpu, 1}));
  EXPECT_TRUE(exflow.serves(0, 0, 0) && exflow.serves(0, 0, 1));
  EXPECT_FALSE(exflow.serves(0, 1, 1));
  EXPECT_EQ(exflow.final_gpu(2), 1);

  // Baseline: sequence s is owned by GPU s mod 2 at every layer.
  const RoutePlan baseline = plan_routes(routes, c, w, p, topo, ParallelMode::kBaseline);
  EXPECT_EQ(baseline.home, (std::vector<std::int32_t>{0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(baseline.attention, baseline.home);

  // A replica of expert 0 at layer 1 on GPU 1: token 0 (home 1 at layer 0) uses it, token 3
  // (home 1) too; token 2's baseline owner 1 as well.
  p.add_replica(1, 0, 1);
  const RoutePlan replicated = plan_routes(routes, c, w, p, topo, ParallelMode::kExflow);
  EXPECT_EQ(replicated.gpu(0, 1, 0), 1);
  EXPECT_EQ(replicated.gpu(0, 1, 1), 0);    // expert 1 has one copy
  EXPECT_EQ(replicated.home_gpu(0, 1), 1);  // tie between GPUs 1 and 0: column 0's
  EXPECT_EQ(replicated.gpu(3, 1, 1), 1);
  EXPECT_EQ(plan_routes(routes, c, w, p, topo, ParallelMode::kBaseline).gpu(2, 1, 1), 1);

  // A placement of another shape is an input error.
  EXPECT_THROW(
      plan_routes(routes, c, w, vanilla_placement(3, 4, topo), topo, ParallelMode::kExflow),
      InputError);
}

TEST(RoutePlan, DeepEPSendsOneInterNodeRowPerNodeThroughTheRelay) {
  // 2 nodes x 2 GPUs, 8 experts: vanilla puts experts 2g and 2g + 1 on GPU g. Sequences of two
  // tokens: tokens 0, 1 are owned by GPU 0, tokens 2, 3 by GPU 1. One layer, top-3.
  ModelConfig c = small_config();
  c.layers = 1;
  c.experts = 8;
  c.k = 3;
  Workload w;
  w.batch = 2;
  w.seq_len = 2;
  const std::vector<std::int32_t> routes = {
      6, 2, 0,  // token 0: GPUs 3, 1, 0: relay 2 (serves nothing) forwards to 3; 1 directly
      4, 6, 5,  // token 1: GPUs 2, 3, 2: relay 2 serves two columns and forwards to 3
      0, 1, 2,  // token 2: GPUs 0, 0, 1: within the owner's node only
      7, 3, 3,  // token 3: GPUs 3, 1, 1: the relay of owner 1 on node 1 is GPU 3 itself
  };
  const Topology topo(2, 2);
  const Placement p = vanilla_placement(1, 8, topo);
  const RoutePlan deepep = plan_routes(routes, c, w, p, topo, ParallelMode::kDeepEP);
  const RoutePlan baseline = plan_routes(routes, c, w, p, topo, ParallelMode::kBaseline);
  EXPECT_EQ(deepep.copy, baseline.copy);
  EXPECT_EQ(deepep.attention, baseline.attention);
  EXPECT_EQ(deepep.home, baseline.home);

  const std::vector<std::int64_t> rows = {0, 1, 2, 3};
  const DeepEPStages s = deepep_stages(deepep, topo, rows, 0);
  using T = std::vector<RowTransfer>;
  EXPECT_EQ(s.dispatch_from_owner, (T{{0, 0, 2}, {0, 0, 1}, {1, 0, 2}, {2, 1, 0}, {3, 1, 3}}));
  EXPECT_EQ(s.dispatch_forward, (T{{0, 2, 3}, {1, 2, 3}}));
  EXPECT_EQ(s.combine_to_relay, (T{{0, 3, 2}, {1, 3, 2}}));
  EXPECT_EQ(s.combine_to_owner, (T{{0, 2, 0}, {0, 1, 0}, {1, 2, 0}, {2, 0, 1}, {3, 3, 1}}));

  // Rows are a step's: row 0 holding token 3 numbers its transfers 0.
  const std::vector<std::int64_t> one = {3};
  EXPECT_EQ(deepep_stages(deepep, topo, one, 0).dispatch_from_owner, (T{{0, 1, 3}}));
  EXPECT_EQ(parse_parallel_mode("deepep"), ParallelMode::kDeepEP);
  EXPECT_EQ(to_string(ParallelMode::kDeepEP), "deepep");
  EXPECT_THROW(parse_parallel_mode("deepep-ll"), UsageError);
  EXPECT_THROW(
      deepep_stages(plan_routes(routes, c, w, p, topo, ParallelMode::kExflow), topo, rows, 0),
      UsageError);
}

// The transfers the engines make from a route plan, counted from the plan alone: [L, 2, G, G]
// as the evaluator's Metrics::traffic. Exflow: from layer 1 on the attention GPU dispatches to
// every other GPU serving the token, and every GPU serving it but the home sends its outputs to
// the home. Baseline: the owner dispatches to every other serving GPU, which sends back.
std::vector<std::int64_t> plan_traffic(const RoutePlan& plan) {
  const std::size_t G = static_cast<std::size_t>(plan.gpus);
  std::vector<std::int64_t> traffic(static_cast<std::size_t>(plan.layers) * 2 * G * G, 0);
  auto add = [&](int l, int phase, int src, int dst) {
    ++traffic[((static_cast<std::size_t>(l) * 2 + static_cast<std::size_t>(phase)) * G +
               static_cast<std::size_t>(src)) *
                  G +
              static_cast<std::size_t>(dst)];
  };
  for (std::int64_t t = 0; t < plan.tokens; ++t) {
    for (int l = 0; l < plan.layers; ++l) {
      std::vector<int> serving;
      for (int c = 0; c < plan.k; ++c) serving.push_back(plan.gpu(t, l, c));
      std::sort(serving.begin(), serving.end());
      serving.erase(std::unique(serving.begin(), serving.end()), serving.end());
      const int attention = plan.attention_gpu(t, l);
      const int home = plan.home_gpu(t, l);
      for (int g : serving) {
        if (attention != kEveryGpu && g != attention) add(l, 0, attention, g);
        if (g != home) add(l, 1, g, home);
      }
    }
  }
  return traffic;
}

// DeepEP mode's transfers, every token a row of one step: the four stages of every layer.
std::vector<std::int64_t> deepep_plan_traffic(const RoutePlan& plan, const Topology& topo) {
  const std::size_t G = static_cast<std::size_t>(plan.gpus);
  std::vector<std::int64_t> traffic(static_cast<std::size_t>(plan.layers) * 2 * G * G, 0);
  std::vector<std::int64_t> rows(static_cast<std::size_t>(plan.tokens));
  std::iota(rows.begin(), rows.end(), 0);
  for (int l = 0; l < plan.layers; ++l) {
    const DeepEPStages s = deepep_stages(plan, topo, rows, l);
    auto add = [&](const std::vector<RowTransfer>& stage, int phase) {
      for (const RowTransfer& tr : stage) {
        ++traffic[((static_cast<std::size_t>(l) * 2 + static_cast<std::size_t>(phase)) * G +
                   static_cast<std::size_t>(tr.src)) *
                      G +
                  static_cast<std::size_t>(tr.dst)];
      }
    };
    add(s.dispatch_from_owner, 0);
    add(s.dispatch_forward, 0);
    add(s.combine_to_relay, 1);
    add(s.combine_to_owner, 1);
  }
  return traffic;
}

TEST(RoutePlan, TrafficEqualsTheEvaluatorsOnRandomPlacements) {
  // Random placements with replicas on 2 nodes x 2 GPUs, top-1 to top-3, tokens dealt singly or
  // by sequences, hop costs that make the copy choice depend on the node.
  const Topology topo(2, 2, 1.0, 3.0);
  for (int k = 1; k <= 3; ++k) {
    for (int seq_len : {1, 3}) {
      for (std::uint64_t seed = 1; seed <= 4; ++seed) {
        ModelConfig c = small_config();
        c.layers = 3;
        c.experts = 8;
        c.k = k;
        Workload w;
        w.batch = 4;
        w.seq_len = seq_len * 5;
        const Trace trace = random_trace(w.tokens(), c.layers, k, c.experts, seed * 31 + k);
        SplitMix64 rng(seed);
        Placement p(c.layers, c.experts, topo.gpus());
        for (int l = 0; l < c.layers; ++l) {
          std::vector<int> order(static_cast<std::size_t>(c.experts));
          std::iota(order.begin(), order.end(), 0);
          for (int i = c.experts - 1; i > 0; --i) {
            std::swap(order[static_cast<std::size_t>(i)],
                      order[static_cast<std::size_t>(rng.below(i + 1))]);
          }
          const int per_gpu = c.experts / topo.gpus();
          for (int i = 0; i < c.experts; ++i)
            p.set(l, order[static_cast<std::size_t>(i)], i / per_gpu);
        }
        for (int r = 0; r < 6; ++r) {
          const int l = rng.below(c.layers);
          const int e = rng.below(c.experts);
          const int g = rng.below(topo.gpus());
          const std::vector<int> copies = p.copies(l, e);
          if (std::find(copies.begin(), copies.end(), g) == copies.end()) p.add_replica(l, e, g);
        }
        const std::vector<std::int32_t> routes = workload_routes(trace, c, w);
        EvalOptions eo;
        eo.traffic = true;
        eo.sequence_length = w.seq_len;
        for (ParallelMode mode :
             {ParallelMode::kExflow, ParallelMode::kBaseline, ParallelMode::kDeepEP}) {
          eo.scheme = mode == ParallelMode::kExflow     ? Scheme::kContextCoherent
                      : mode == ParallelMode::kBaseline ? Scheme::kBaseline
                                                        : Scheme::kDeepEP;
          const Metrics m = evaluate(trace, p, topo, eo);
          const RoutePlan plan = plan_routes(routes, c, w, p, topo, mode);
          EXPECT_EQ(
              mode == ParallelMode::kDeepEP ? deepep_plan_traffic(plan, topo) : plan_traffic(plan),
              m.traffic)
              << to_string(mode) << " k=" << k << " seq_len=" << w.seq_len << " seed=" << seed;
        }
      }
    }
  }
}

TEST(RuntimeWorkload, KvCacheRowsOfASequenceAreContiguous) {
  KvCache cache(2, 3, 4, 2);
  cache.key(1, 2, 0)[0] = 1;
  cache.key(1, 2, 1)[1] = 2;
  cache.value(1, 2, 2)[0] = 3;
  EXPECT_EQ(std::vector<float>(cache.keys(1, 2, 2).begin(), cache.keys(1, 2, 2).end()),
            (std::vector<float>{1, 0, 0, 2}));
  EXPECT_EQ(cache.values(1, 2, 3)[4], 3);
  EXPECT_EQ(cache.keys(0, 2, 4)[0], 0);
}

// ---------------------------------------------------------------------------------------------
// Reference run

Workload workload(int batch, int seq_len, std::optional<int> prefill = std::nullopt) {
  Workload w;
  w.batch = batch;
  w.seq_len = seq_len;
  w.prefill = prefill;
  return w;
}

std::span<const float> token_row(const ReferenceResult& r, std::int64_t t, int hidden) {
  return std::span<const float>(r.final_hidden)
      .subspan(static_cast<std::size_t>(t * hidden), static_cast<std::size_t>(hidden));
}

TEST(RuntimeReference, DeterministicAndChecksummed) {
  const Trace trace = random_trace(40, 3, 2, 4, 3);
  const ModelConfig c = small_config();
  const ReferenceResult a = run_reference(trace, c, workload(3, 8));
  const ReferenceResult b = run_reference(trace, c, workload(3, 8));
  EXPECT_EQ(a.tokens, 24);
  EXPECT_EQ(a.steps, 5);
  EXPECT_EQ(a.expert_rows, 24 * 3 * 2);
  EXPECT_EQ(a.final_hidden.size(), 24u * 8u);
  EXPECT_EQ(a.checksum, b.checksum);
  EXPECT_TRUE(same_bits(a.final_hidden, b.final_hidden));
  EXPECT_EQ(a.checksum, checksum(a.final_hidden));
  for (float v : a.final_hidden) EXPECT_TRUE(std::isfinite(v));

  ModelConfig other = c;
  other.seed = 8;
  EXPECT_NE(run_reference(trace, other, workload(3, 8)).checksum, a.checksum);
  other = c;
  other.combine = Combine::kUniform;
  EXPECT_NE(run_reference(trace, other, workload(3, 8)).checksum, a.checksum);
  other = c;
  other.activation = Activation::kGELU;
  EXPECT_NE(run_reference(trace, other, workload(3, 8)).checksum, a.checksum);
}

TEST(RuntimeReference, OneRoutingChangeReachesOnlyThatTokenAndLaterPositions) {
  const int L = 3, K = 2, E = 4, B = 3, S = 8;
  const Trace trace = random_trace(B * S, L, K, E, 4);
  std::vector<std::int32_t> ids;
  for (std::int64_t t = 0; t < B * S; ++t) {
    for (int l = 0; l < L; ++l) {
      for (int c = 0; c < K; ++c) ids.push_back(trace.at(t, l, c));
    }
  }
  // Token (sequence 1, position 5) at layer 1, column 1: another expert.
  const std::int64_t changed = 1 * S + 5;
  std::int32_t& id = ids[(changed * L + 1) * K + 1];
  id = (id + 1) % E;
  if (id == ids[(changed * L + 1) * K]) id = (id + 1) % E;
  const Trace edited = Trace::from_ids(ids, B * S, L, K, E);

  const ModelConfig c = small_config();
  const ReferenceResult a = run_reference(trace, c, workload(B, S));
  const ReferenceResult b = run_reference(edited, c, workload(B, S));
  EXPECT_NE(a.checksum, b.checksum);
  for (int s = 0; s < B; ++s) {
    for (int p = 0; p < S; ++p) {
      const std::int64_t t = s * S + p;
      const bool same = same_bits(token_row(a, t, c.hidden), token_row(b, t, c.hidden));
      EXPECT_EQ(same, s != 1 || p < 5) << "sequence " << s << " position " << p;
    }
  }
}

TEST(RuntimeReference, PrefillSizeAndBatchDoNotChangeATokensBits) {
  const Trace trace = random_trace(40, 3, 2, 4, 5);
  const ModelConfig c = small_config();
  const ReferenceResult base = run_reference(trace, c, workload(3, 8));
  for (int prefill : {0, 1, 7, 8}) {
    const ReferenceResult r = run_reference(trace, c, workload(3, 8, prefill));
    EXPECT_EQ(r.checksum, base.checksum) << prefill;
    EXPECT_EQ(r.steps, prefill == 0 ? 8 : 1 + 8 - prefill);
  }
  const ReferenceResult two = run_reference(trace, c, workload(2, 8));
  EXPECT_TRUE(same_bits(two.final_hidden,
                        std::span<const float>(base.final_hidden).first(two.final_hidden.size())));
}

TEST(RuntimeReference, ActivationsStayOrderOneThroughManyLayers) {
  ModelConfig c;
  c.layers = 58;
  c.experts = 8;
  c.k = 4;
  c.hidden = 32;
  c.heads = 4;
  c.ffn = 48;
  const Trace trace = random_trace(16, 58, 4, 8, 6);
  const ReferenceResult r = run_reference(trace, c, workload(2, 8));
  EXPECT_GT(r.final_rms, 0.5);
  EXPECT_LT(r.final_rms, 20.0);
}

TEST(RuntimeReference, ChecksumIsFnv1aOverBitPatterns) {
  EXPECT_EQ(checksum({}), 0xcbf29ce484222325ULL);
  const std::vector<float> zero = {0.0f}, neg = {-0.0f};
  EXPECT_NE(checksum(zero), checksum(neg));
  // FNV-1a of the bytes 00 00 80 3f (1.0f, least significant first).
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char byte : {0x00, 0x00, 0x80, 0x3f}) {
    h ^= byte;
    h *= 0x100000001b3ULL;
  }
  EXPECT_EQ(checksum(std::vector<float>{1.0f}), h);
  EXPECT_EQ(checksum_hex(0x1234), "0000000000001234");
}

}  // namespace
}  // namespace exflow::runtime
