// A small Mixture-of-Experts transformer whose router replays a trace, and its single-process
// reference run: the ground truth that the expert-parallel modes of exflow-run must reproduce
// bit for bit.
//
// Model (docs/runtime.md): `layers` pre-norm blocks over a residual stream of `hidden` floats,
//   a = rmsnorm(h; attn_norm);  q, k, v = a·Wq, a·Wk, a·Wv;  h += attend(q, KV cache)·Wo
//   m = rmsnorm(h; ffn_norm);   h += Σ_c w_c · expert_{e_c}(m)      (c = 0..k-1, fixed point)
// where e_c = trace.at(t, layer, c). Every weight comes from its own SplitMix64 stream derived
// from (seed, kind, layer, index), so a process can generate just the experts it hosts and get
// the values everyone else gets. Token t's input vector is generated from (seed, t).
//
// Bitwise reproducibility: every kernel below computes each token's row with the same sequence
// of IEEE-754 single-precision operations (plus double-precision ones inside exp), in a fixed
// order, whatever other rows share the call, and uses no library transcendental function. The
// library is compiled with -ffp-contract=off. A distributed engine that calls these kernels on
// the same inputs, attends over the same KV cache contents in position order and combines the
// k expert outputs in fixed point (accumulate_expert_output, apply_combined: exact integer sums,
// so any grouping of the columns gives the same bits) produces the same bits as run_reference().
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace exflow {

class Trace;

namespace runtime {

enum class Activation {
  kSwiGLU,  // y = (silu(m·W1) ⊙ (m·W3))·W2
  kGELU,    // y = gelu(m·W1)·W2, tanh approximation
};

enum class Combine {
  kTraceOrder,  // w_c ∝ 2^-c (column 0, the router's first choice, weighs most), Σ w_c = 1
  kUniform,     // w_c = 1/k
};

struct ModelConfig {
  int layers = 0;
  int experts = 0;
  int k = 1;
  int hidden = 256;  // H
  int heads = 4;     // H must be divisible by heads
  int ffn = 512;     // F, each expert's inner width
  std::uint64_t seed = 1;
  Activation activation = Activation::kSwiGLU;
  Combine combine = Combine::kTraceOrder;

  int head_dim() const { return hidden / heads; }
};

// Throws UsageError naming the first field out of range (all counts >= 1, H % heads == 0).
void validate(const ModelConfig& config);

// "swiglu" / "gelu", "trace" / "uniform"; parse_* throw UsageError for anything else.
std::string to_string(Activation activation);
std::string to_string(Combine combine);
Activation parse_activation(const std::string& name);
Combine parse_combine(const std::string& name);

// ---------------------------------------------------------------------------------------------
// Deterministic weights and inputs.

// Which tensor a random stream feeds. The values are part of the stream derivation: changing
// them changes every weight.
enum class TensorKind : std::uint32_t {
  kInput = 1,     // token input vectors, index = token id
  kAttnNorm = 2,  // per layer, index 0
  kWq = 3,
  kWk = 4,
  kWv = 5,
  kWo = 6,
  kFfnNorm = 7,
  kW1 = 8,  // per (layer, expert), index = expert
  kW2 = 9,
  kW3 = 10,
};

// The seed of the SplitMix64 stream of one tensor: a hash of (seed, kind, layer, index).
std::uint64_t tensor_stream(std::uint64_t seed, TensorKind kind, int layer, std::int64_t index);

// out[i] = scale · u_i, u_i the i-th value of the stream mapped to [-1, 1) in steps of 2^-23
// (exactly representable; then one rounding by the multiplication).
void fill_uniform(std::uint64_t stream, float scale, std::span<float> out);

// Dense matrices are row-major [in, out]: y = x·W, y[j] = Σ_i x[i]·W[i·out + j].
struct LayerWeights {
  int hidden = 0;
  std::vector<float> attn_norm;  // [H], 1 + U(-1/8, 1/8)
  std::vector<float> wq;         // [H, H], U(±sqrt(3/H)): unit gain
  std::vector<float> wk;         // [H, H]
  std::vector<float> wv;         // [H, H]
  std::vector<float> wo;         // [H, H]
  std::vector<float> ffn_norm;   // [H]
};

struct ExpertWeights {
  int hidden = 0;
  int ffn = 0;
  std::vector<float> w1;  // [H, F], U(±sqrt(3/H))
  std::vector<float> w3;  // [H, F] (SwiGLU only; empty for GELU)
  std::vector<float> w2;  // [F, H], U(±sqrt(3/F))
};

LayerWeights make_layer_weights(const ModelConfig& config, int layer);
ExpertWeights make_expert_weights(const ModelConfig& config, int layer, int expert);

// Token t's input hidden vector [H]: U(±sqrt(3)) per component (unit variance).
std::vector<float> make_input(const ModelConfig& config, std::int64_t token);

// Every layer's attention weights plus the experts one process hosts.
class ModelWeights {
 public:
  // hosted: [layers * experts], hosted[l * E + e] != 0 when expert e of layer l is generated.
  ModelWeights(const ModelConfig& config, const std::vector<char>& hosted);
  // All experts of every layer.
  explicit ModelWeights(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const LayerWeights& layer(int l) const { return layers_[static_cast<std::size_t>(l)]; }
  bool hosts(int l, int e) const;
  // Throws UsageError if (l, e) is not hosted here.
  const ExpertWeights& expert(int l, int e) const;
  std::int64_t hosted_experts() const { return hosted_count_; }

 private:
  ModelConfig config_;
  std::vector<LayerWeights> layers_;
  std::vector<ExpertWeights> experts_;  // [layers * experts], empty where not hosted
  std::vector<char> hosted_;
  std::int64_t hosted_count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Kernels. `rows` tokens are processed per call where a kernel takes `rows`; spans are row-major
// [rows, width]. Row r's result depends only on row r's inputs and is computed by the same
// operations in the same order for any `rows`, so batching never changes a token's bits.

inline constexpr float kRmsNormEps = 1e-6f;

// y[r] = x[r] / sqrt(mean(x[r]²) + eps) ⊙ gain.
void rmsnorm(std::span<const float> x, std::span<const float> gain, int rows, std::span<float> y);

// y[r] = x[r]·W with W [in, out] row-major; each y[r][j] accumulates i = 0..in-1 in order from 0.
void matmul(std::span<const float> x, std::span<const float> w, int rows, int in, int out,
            std::span<float> y);

// Causal self-attention of one token at position p of its sequence: q [H] against the
// `positions` = p + 1 cached keys and values [positions, H] of positions 0..p (its own last),
// per head: scores s_j = q_h·k_{j,h} / sqrt(d), softmax with the maximum subtracted, out_h =
// Σ_j softmax_j · v_{j,h} accumulated in position order. out [H].
void attend(std::span<const float> q, std::span<const float> keys, std::span<const float> values,
            int positions, int heads, std::span<float> out);

// a = rmsnorm(h; attn_norm), then q = a·Wq, key = a·Wk, value = a·Wv. All [rows, H].
void attention_qkv(const LayerWeights& w, std::span<const float> h, int rows, std::span<float> q,
                   std::span<float> key, std::span<float> value);

// h[r] += attended[r]·Wo (the product first, then one addition per element).
void attention_output(const LayerWeights& w, std::span<const float> attended, int rows,
                      std::span<float> h);

// m = rmsnorm(h; ffn_norm): the input every expert of the token receives.
void ffn_input(const LayerWeights& w, std::span<const float> h, int rows, std::span<float> m);

// y = expert(m) for `rows` tokens routed to this expert; m, y [rows, H].
void expert_ffn(const ExpertWeights& w, Activation activation, std::span<const float> m, int rows,
                std::span<float> y);

// The k combine weights of a rule, in column order.
std::vector<float> combine_weights(Combine rule, int k);

// Combine in fixed point. A token's k expert outputs may be computed on k different processes,
// and a distributed engine sums the outputs of each process's columns before sending them to
// the token's home (one message per process, as the cost model counts). A floating-point sum
// would then depend on the grouping; an integer sum does not. So every weighted component is
// rounded once to a multiple of 2^-S (S = kCombineFractionBits), the terms are summed exactly
// in integers, in any order and any grouping, and the total is added to the residual:
//   term_c[i] = round(w_c · y_c[i] · 2^S)   (w_c·y_c exact in double; ties to even)
//   h[i]      = float(double(h[i]) + double(Σ_c term_c[i]) · 2^-S)
// Partial sums travel as int32 (4 bytes per component, as a float32 would): each term is
// bounded by (2^31 - 1) / k, so any partial sum of at most k terms fits, and |w_c·y_c| must stay
// below 2^(31-S) / k (2048 / k); an output outside that range is an InputError. The rounding
// error is at most 2^-(S+1) ≈ 4.8e-7 per term.
inline constexpr int kCombineFractionBits = 20;
inline constexpr double kCombineScale = 1048576.0;  // 2^kCombineFractionBits
static_assert(kCombineScale == static_cast<double>(1 << kCombineFractionBits));

// acc[i] += term(weight, y[i]) for one expert output y [H]; k bounds the term (see above).
void accumulate_expert_output(std::span<const float> y, float weight, int k,
                              std::span<std::int64_t> acc);
// The int32 wire form of a partial sum of at most k terms (UsageError if one does not fit).
void narrow_partial(std::span<const std::int64_t> acc, std::span<std::int32_t> out);
// h[i] = float(double(h[i]) + double(total[i]) · 2^-S): the residual update of a token.
void apply_combined(std::span<const std::int64_t> total, std::span<float> h);
// All k columns at once: outputs [k, H] in column order, weights [k]. Equal to any split of the
// columns into partial sums accumulated separately and added up.
void combine(std::span<const float> outputs, std::span<const float> weights, std::span<float> h);

// x / (1 + exp(-x)), and 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))), from exp_det.
float silu(float x);
float gelu(float x);
// e^x from IEEE basic operations only (Cody-Waite reduction, a degree-12 polynomial in double,
// an exact power-of-two scaling), so it gives the same bits on every conforming platform, unlike
// libm's exp. Relative error below 1e-15 for x in [-708, 709]; 0 below -745, +inf above 709.78.
double exp_det(double x);

// ---------------------------------------------------------------------------------------------
// Workload: batch sequences of seq_len consecutive trace tokens. Token t = seq·seq_len + pos.
// A prefill step runs positions [0, prefill) of every sequence together, then each decode step
// runs one position of every sequence.

struct Workload {
  int batch = 8;
  int seq_len = 64;
  std::optional<int> prefill;  // default seq_len / 2; 0 = decode only

  int prefill_positions() const { return prefill ? *prefill : seq_len / 2; }
  std::int64_t tokens() const { return static_cast<std::int64_t>(batch) * seq_len; }
  std::int64_t token(int seq, int pos) const {
    return static_cast<std::int64_t>(seq) * seq_len + pos;
  }
};

// Throws UsageError for batch or seq_len < 1 or prefill outside [0, seq_len].
void validate(const Workload& workload);

// Throws UsageError if the model does not fit the trace (layers or k above the trace's, fewer
// experts than its ids need) and InputError, naming both counts, if the trace has fewer than
// workload.tokens() tokens.
void check_fits(const Trace& trace, const ModelConfig& config, const Workload& workload);

// One forward step: every sequence advances over positions [first_position, first_position +
// positions). Its rows are the tokens in token order (sequence-major, then position).
struct Step {
  int first_position = 0;
  int positions = 0;
};

// The prefill step (when prefill > 0), then one decode step per remaining position.
std::vector<Step> schedule(const Workload& workload);

// Routing of the workload's tokens: [tokens, layers, k] C-order, from trace.at(t, l, c).
std::vector<std::int32_t> workload_routes(const Trace& trace, const ModelConfig& config,
                                          const Workload& workload);

// Keys and values of every (layer, sequence, position), [layers, sequences, positions, H].
class KvCache {
 public:
  KvCache(int layers, int sequences, int positions, int hidden);

  std::span<float> key(int layer, int seq, int pos) {
    return {&keys_[offset(layer, seq, pos)], n_};
  }
  std::span<float> value(int layer, int seq, int pos) {
    return {&values_[offset(layer, seq, pos)], n_};
  }
  // Positions [0, count) of one sequence at one layer, contiguous [count, H].
  std::span<const float> keys(int layer, int seq, int count) const {
    return {&keys_[offset(layer, seq, 0)], n_ * static_cast<std::size_t>(count)};
  }
  std::span<const float> values(int layer, int seq, int count) const {
    return {&values_[offset(layer, seq, 0)], n_ * static_cast<std::size_t>(count)};
  }

 private:
  std::size_t offset(int layer, int seq, int pos) const {
    return ((static_cast<std::size_t>(layer) * sequences_ + seq) * positions_ + pos) * n_;
  }
  int sequences_;
  int positions_;
  std::size_t n_;
  std::vector<float> keys_;
  std::vector<float> values_;
};

// ---------------------------------------------------------------------------------------------
// Reference run.

// 64-bit FNV-1a over the IEEE-754 bit patterns of `values` (each as 4 bytes, least significant
// first). No rounding: the modes are bitwise equal by construction, so equal checksums mean
// equal outputs (and -0.0 differs from +0.0).
std::uint64_t checksum(std::span<const float> values);
// 16 lowercase hex digits.
std::string checksum_hex(std::uint64_t value);
// sqrt(mean(v²)) accumulated in double; 0 for no values.
double root_mean_square(std::span<const float> values);

struct ReferenceResult {
  std::vector<float> final_hidden;  // [tokens, H], token order: the residual after the last layer
  std::uint64_t checksum = 0;       // checksum(final_hidden)
  double seconds = 0;               // forward passes (all steps)
  double setup_seconds = 0;         // generating the weights
  std::int64_t tokens = 0;
  int steps = 0;                    // forward steps (schedule(workload).size())
  std::int64_t expert_rows = 0;     // token-expert evaluations: tokens · layers · k
  std::int64_t hosted_experts = 0;  // experts generated: those the workload routes to
  double final_rms = 0;             // root mean square of final_hidden
};

// One process, every step of schedule(workload), experts evaluated grouped by expert. Throws as
// validate() and check_fits() do.
ReferenceResult run_reference(const Trace& trace, const ModelConfig& config,
                              const Workload& workload);

}  // namespace runtime
}  // namespace exflow
