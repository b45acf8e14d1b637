// Model configuration and deterministic weights: every tensor from its own SplitMix64 stream.
#include <algorithm>
#include <cmath>
#include <string>

#include "core/splitmix64.hpp"
#include "exflow/error.hpp"
#include "exflow/runtime.hpp"

namespace exflow::runtime {
namespace {

std::uint64_t mix(std::uint64_t x) {
  return SplitMix64(x).next();
}

// Uniform weights with variance 1/fan_in: U(±sqrt(3/fan_in)).
float unit_gain(int fan_in) {
  return std::sqrt(3.0f / static_cast<float>(fan_in));
}

std::vector<float> uniform(const ModelConfig& c, TensorKind kind, int layer, std::int64_t index,
                           std::size_t n, float scale) {
  std::vector<float> out(n);
  fill_uniform(tensor_stream(c.seed, kind, layer, index), scale, out);
  return out;
}

// 1 + U(-1/8, 1/8): RMSNorm gains near one.
std::vector<float> gains(const ModelConfig& c, TensorKind kind, int layer) {
  std::vector<float> g = uniform(c, kind, layer, 0, static_cast<std::size_t>(c.hidden), 0.125f);
  for (float& v : g) v += 1.0f;
  return g;
}

}  // namespace

void validate(const ModelConfig& c) {
  auto positive = [](int v, const char* name) {
    if (v < 1)
      throw UsageError(std::string(name) + " must be at least 1, got " + std::to_string(v));
  };
  positive(c.layers, "layers");
  positive(c.experts, "experts");
  positive(c.k, "k");
  positive(c.hidden, "hidden");
  positive(c.heads, "heads");
  positive(c.ffn, "ffn");
  if (c.hidden % c.heads != 0) {
    throw UsageError("hidden " + std::to_string(c.hidden) + " is not divisible by heads " +
                     std::to_string(c.heads));
  }
}

std::string to_string(Activation a) {
  return a == Activation::kSwiGLU ? "swiglu" : "gelu";
}
std::string to_string(Combine c) {
  return c == Combine::kTraceOrder ? "trace" : "uniform";
}

Activation parse_activation(const std::string& name) {
  if (name == "swiglu") return Activation::kSwiGLU;
  if (name == "gelu") return Activation::kGELU;
  throw UsageError("unknown activation '" + name + "' (swiglu or gelu)");
}

Combine parse_combine(const std::string& name) {
  if (name == "trace") return Combine::kTraceOrder;
  if (name == "uniform") return Combine::kUniform;
  throw UsageError("unknown combine rule '" + name + "' (trace or uniform)");
}

std::uint64_t tensor_stream(std::uint64_t seed, TensorKind kind, int layer, std::int64_t index) {
  std::uint64_t h = mix(seed);
  h = mix(h + static_cast<std::uint64_t>(kind));
  h = mix(h + static_cast<std::uint64_t>(static_cast<std::int64_t>(layer)));
  return mix(h + static_cast<std::uint64_t>(index));
}

void fill_uniform(std::uint64_t stream, float scale, std::span<float> out) {
  SplitMix64 rng(stream);
  for (float& v : out) {
    // The top 24 bits as an integer in [-2^23, 2^23), times 2^-23: exact in float.
    const auto i = static_cast<std::int32_t>(rng.next() >> 40) - (1 << 23);
    v = (static_cast<float>(i) * 0x1p-23f) * scale;
  }
}

LayerWeights make_layer_weights(const ModelConfig& c, int layer) {
  const std::size_t hh = static_cast<std::size_t>(c.hidden) * static_cast<std::size_t>(c.hidden);
  const float g = unit_gain(c.hidden);
  LayerWeights w;
  w.hidden = c.hidden;
  w.attn_norm = gains(c, TensorKind::kAttnNorm, layer);
  w.wq = uniform(c, TensorKind::kWq, layer, 0, hh, g);
  w.wk = uniform(c, TensorKind::kWk, layer, 0, hh, g);
  w.wv = uniform(c, TensorKind::kWv, layer, 0, hh, g);
  w.wo = uniform(c, TensorKind::kWo, layer, 0, hh, g);
  w.ffn_norm = gains(c, TensorKind::kFfnNorm, layer);
  return w;
}

ExpertWeights make_expert_weights(const ModelConfig& c, int layer, int expert) {
  const std::size_t hf = static_cast<std::size_t>(c.hidden) * static_cast<std::size_t>(c.ffn);
  ExpertWeights w;
  w.hidden = c.hidden;
  w.ffn = c.ffn;
  w.w1 = uniform(c, TensorKind::kW1, layer, expert, hf, unit_gain(c.hidden));
  if (c.activation == Activation::kSwiGLU) {
    w.w3 = uniform(c, TensorKind::kW3, layer, expert, hf, unit_gain(c.hidden));
  }
  w.w2 = uniform(c, TensorKind::kW2, layer, expert, hf, unit_gain(c.ffn));
  return w;
}

std::vector<float> make_input(const ModelConfig& c, std::int64_t token) {
  return uniform(c, TensorKind::kInput, 0, token, static_cast<std::size_t>(c.hidden),
                 std::sqrt(3.0f));
}

ModelWeights::ModelWeights(const ModelConfig& config, const std::vector<char>& hosted)
    : config_(config), hosted_(hosted) {
  validate(config);
  const std::size_t total =
      static_cast<std::size_t>(config.layers) * static_cast<std::size_t>(config.experts);
  if (hosted_.size() != total) {
    throw UsageError("hosted experts: " + std::to_string(hosted_.size()) + " flags for " +
                     std::to_string(config.layers) + " layers x " + std::to_string(config.experts) +
                     " experts");
  }
  layers_.reserve(static_cast<std::size_t>(config.layers));
  for (int l = 0; l < config.layers; ++l) layers_.push_back(make_layer_weights(config, l));
  experts_.resize(total);
  for (int l = 0; l < config.layers; ++l) {
    for (int e = 0; e < config.experts; ++e) {
      const std::size_t i = static_cast<std::size_t>(l) * config.experts + e;
      if (!hosted_[i]) continue;
      experts_[i] = make_expert_weights(config, l, e);
      ++hosted_count_;
    }
  }
}

ModelWeights::ModelWeights(const ModelConfig& config)
    : ModelWeights(config,
                   std::vector<char>(static_cast<std::size_t>(std::max(config.layers, 0)) *
                                         static_cast<std::size_t>(std::max(config.experts, 0)),
                                     1)) {}

bool ModelWeights::hosts(int l, int e) const {
  return l >= 0 && l < config_.layers && e >= 0 && e < config_.experts &&
         hosted_[static_cast<std::size_t>(l) * config_.experts + e];
}

const ExpertWeights& ModelWeights::expert(int l, int e) const {
  if (!hosts(l, e)) {
    throw UsageError("expert " + std::to_string(e) + " of layer " + std::to_string(l) +
                     " is not hosted by this process");
  }
  return experts_[static_cast<std::size_t>(l) * config_.experts + e];
}

}  // namespace exflow::runtime
