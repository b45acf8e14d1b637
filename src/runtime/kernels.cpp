// The per-token kernels of the runtime model. Every result is a fixed sequence of IEEE-754
// basic operations (+, -, *, /, sqrt, floor, scaling by a power of two): no library exp or
// tanh, no reassociation (no -ffast-math) and no contraction into FMA (-ffp-contract=off for this
// library), so a token's bits do not depend on the process, the rows batched with it or the
// machine. Loops that vectorise do so across independent output elements only.
#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "exflow/error.hpp"
#include "exflow/runtime.hpp"

static_assert(FLT_EVAL_METHOD == 0,
              "the runtime kernels need float arithmetic without excess "
              "precision (SSE, not x87)");
static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559);

namespace exflow::runtime {
namespace {

void require(bool ok, const char* kernel, const std::string& what) {
  if (!ok) throw UsageError(std::string(kernel) + ": " + what);
}

std::size_t sz(std::int64_t n) {
  return static_cast<std::size_t>(n);
}

}  // namespace

double exp_det(double x) {
  if (std::isnan(x)) return x;
  if (x > 709.782712893384) return std::numeric_limits<double>::infinity();
  if (x < -745.1332191019412) return 0.0;
  // x = n·ln2 + r, |r| <= ln2/2; ln2 split so that n·ln2_hi is exact (fdlibm's constants).
  constexpr double kInvLn2 = 1.44269504088896338700e+00;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const double n = std::floor(x * kInvLn2 + 0.5);
  const double r = (x - n * kLn2Hi) - n * kLn2Lo;
  // e^r by its Taylor series to degree 12: truncation below 2e-16 relative for |r| <= 0.347.
  constexpr double kC[] = {1.0 / 479001600.0,
                           1.0 / 39916800.0,
                           1.0 / 3628800.0,
                           1.0 / 362880.0,
                           1.0 / 40320.0,
                           1.0 / 5040.0,
                           1.0 / 720.0,
                           1.0 / 120.0,
                           1.0 / 24.0,
                           1.0 / 6.0,
                           1.0 / 2.0,
                           1.0,
                           1.0};
  double p = kC[0];
  for (int i = 1; i < 13; ++i) p = p * r + kC[i];
  const int e = static_cast<int>(n);
  if (e >= -1022 && e <= 1023) {
    return p * std::bit_cast<double>(static_cast<std::uint64_t>(e + 1023) << 52);
  }
  return std::ldexp(p, e);  // exact scaling, correctly rounded into the subnormals
}

float silu(float x) {
  const double xd = x;
  return static_cast<float>(xd / (1.0 + exp_det(-xd)));
}

float gelu(float x) {
  const double xd = x;
  const double u = 0.7978845608028654 * (xd + 0.044715 * (xd * xd * xd));
  const double t = 1.0 - 2.0 / (exp_det(2.0 * u) + 1.0);  // tanh(u)
  return static_cast<float>(0.5 * xd * (1.0 + t));
}

void rmsnorm(std::span<const float> x, std::span<const float> gain, int rows, std::span<float> y) {
  const std::size_t n = gain.size();
  require(rows >= 0 && x.size() == n * sz(rows) && y.size() == x.size(), "rmsnorm",
          "x and y must be [rows, gain.size()]");
  for (int r = 0; r < rows; ++r) {
    const float* xr = x.data() + n * sz(r);
    float* yr = y.data() + n * sz(r);
    float ss = 0.0f;
    for (std::size_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + kRmsNormEps);
    for (std::size_t i = 0; i < n; ++i) yr[i] = (xr[i] * inv) * gain[i];
  }
}

namespace {

// Four-lane float vectors (GCC and Clang vector extensions: SSE on x86-64, NEON on ARM). Each
// lane is an ordinary IEEE single-precision multiply or add, so a lane computes what the scalar
// loop computes.
typedef float Lanes __attribute__((vector_size(16)));
constexpr int kLanes = 4;

// Columns [j0, j0 + J) of R consecutive rows, accumulators in registers. Every y[r][j] is
// 0 + x[r][0]·w[0][j] + x[r][1]·w[1][j] + ... in this order, as in every other path below.
template <int R, int J>
void matmul_tile(const float* x, const float* w, int in, int out, int j0, float* y) {
  constexpr int V = J / kLanes;
  Lanes acc[R][V] = {};
  for (int i = 0; i < in; ++i) {
    const float* wi = w + sz(i) * sz(out) + sz(j0);
    Lanes wv[V];
    std::memcpy(wv, wi, sizeof wv);
    for (int r = 0; r < R; ++r) {
      const float xi = x[sz(r) * sz(in) + sz(i)];
      const Lanes xv = {xi, xi, xi, xi};
      for (int v = 0; v < V; ++v) acc[r][v] += xv * wv[v];
    }
  }
  for (int r = 0; r < R; ++r) std::memcpy(y + sz(r) * sz(out) + sz(j0), acc[r], sizeof acc[r]);
}

// Columns [j0, out) of one row.
void matmul_columns(const float* x, const float* w, int in, int out, int j0, float* y) {
  std::fill(y + j0, y + out, 0.0f);
  for (int i = 0; i < in; ++i) {
    const float xi = x[i];
    const float* wi = w + sz(i) * sz(out);
    for (int j = j0; j < out; ++j) y[j] += xi * wi[j];
  }
}

}  // namespace

void matmul(std::span<const float> x, std::span<const float> w, int rows, int in, int out,
            std::span<float> y) {
  require(rows >= 0 && in >= 1 && out >= 1 && x.size() == sz(rows) * sz(in) &&
              w.size() == sz(in) * sz(out) && y.size() == sz(rows) * sz(out),
          "matmul", "x [rows, in], w [in, out] and y [rows, out] do not match");
  // Four rows at a time share each load of W; the rest one at a time. Which path a row takes
  // changes the speed only: each output element is accumulated over i = 0..in-1 in order.
  constexpr int kRows = 4, kCols = 16, kRowCols = 32;
  int r = 0;
  for (; r + kRows <= rows; r += kRows) {
    const float* xr = x.data() + sz(r) * sz(in);
    float* yr = y.data() + sz(r) * sz(out);
    int j = 0;
    for (; j + kCols <= out; j += kCols) matmul_tile<kRows, kCols>(xr, w.data(), in, out, j, yr);
    if (j < out) {
      for (int rr = 0; rr < kRows; ++rr) {
        matmul_columns(xr + sz(rr) * sz(in), w.data(), in, out, j, yr + sz(rr) * sz(out));
      }
    }
  }
  for (; r < rows; ++r) {
    const float* xr = x.data() + sz(r) * sz(in);
    float* yr = y.data() + sz(r) * sz(out);
    int j = 0;
    for (; j + kRowCols <= out; j += kRowCols) {
      matmul_tile<1, kRowCols>(xr, w.data(), in, out, j, yr);
    }
    if (j < out) matmul_columns(xr, w.data(), in, out, j, yr);
  }
}

void attend(std::span<const float> q, std::span<const float> keys, std::span<const float> values,
            int positions, int heads, std::span<float> out) {
  const std::size_t hidden = q.size();
  require(positions >= 1 && heads >= 1 && hidden % sz(heads) == 0 && out.size() == hidden &&
              keys.size() == hidden * sz(positions) && values.size() == keys.size(),
          "attend", "q, out [H] and keys, values [positions, H] with H divisible by heads");
  const std::size_t d = hidden / sz(heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<float> p(sz(positions));
  for (std::size_t h = 0; h < sz(heads); ++h) {
    const float* qh = q.data() + h * d;
    float max = -std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < sz(positions); ++j) {
      const float* kj = keys.data() + j * hidden + h * d;
      float s = 0.0f;
      for (std::size_t i = 0; i < d; ++i) s += qh[i] * kj[i];
      s *= scale;
      p[j] = s;
      max = std::max(max, s);
    }
    float sum = 0.0f;
    for (std::size_t j = 0; j < sz(positions); ++j) {
      p[j] = static_cast<float>(exp_det(static_cast<double>(p[j] - max)));
      sum += p[j];
    }
    const float inv = 1.0f / sum;
    float* oh = out.data() + h * d;
    std::fill(oh, oh + d, 0.0f);
    for (std::size_t j = 0; j < sz(positions); ++j) {
      const float pj = p[j] * inv;
      const float* vj = values.data() + j * hidden + h * d;
      for (std::size_t i = 0; i < d; ++i) oh[i] += pj * vj[i];
    }
  }
}

void attention_qkv(const LayerWeights& w, std::span<const float> h, int rows, std::span<float> q,
                   std::span<float> key, std::span<float> value) {
  std::vector<float> a(h.size());
  rmsnorm(h, w.attn_norm, rows, a);
  matmul(a, w.wq, rows, w.hidden, w.hidden, q);
  matmul(a, w.wk, rows, w.hidden, w.hidden, key);
  matmul(a, w.wv, rows, w.hidden, w.hidden, value);
}

void attention_output(const LayerWeights& w, std::span<const float> attended, int rows,
                      std::span<float> h) {
  std::vector<float> o(attended.size());
  matmul(attended, w.wo, rows, w.hidden, w.hidden, o);
  require(h.size() == o.size(), "attention_output", "h must be [rows, H]");
  for (std::size_t i = 0; i < o.size(); ++i) h[i] += o[i];
}

void ffn_input(const LayerWeights& w, std::span<const float> h, int rows, std::span<float> m) {
  rmsnorm(h, w.ffn_norm, rows, m);
}

void expert_ffn(const ExpertWeights& w, Activation activation, std::span<const float> m, int rows,
                std::span<float> y) {
  const std::size_t inner = sz(rows) * sz(w.ffn);
  std::vector<float> g(inner);
  matmul(m, w.w1, rows, w.hidden, w.ffn, g);
  if (activation == Activation::kSwiGLU) {
    require(!w.w3.empty(), "expert_ffn", "SwiGLU needs W3");
    std::vector<float> u(inner);
    matmul(m, w.w3, rows, w.hidden, w.ffn, u);
    for (std::size_t i = 0; i < inner; ++i) g[i] = silu(g[i]) * u[i];
  } else {
    for (std::size_t i = 0; i < inner; ++i) g[i] = gelu(g[i]);
  }
  matmul(g, w.w2, rows, w.ffn, w.hidden, y);
}

std::vector<float> combine_weights(Combine rule, int k) {
  require(k >= 1, "combine_weights", "k must be at least 1, got " + std::to_string(k));
  std::vector<float> w(sz(k));
  if (rule == Combine::kUniform) {
    std::fill(w.begin(), w.end(), 1.0f / static_cast<float>(k));
  } else {
    const double total = 2.0 - std::ldexp(1.0, 1 - k);  // Σ_{c<k} 2^-c
    for (int c = 0; c < k; ++c) w[sz(c)] = static_cast<float>(std::ldexp(1.0, -c) / total);
  }
  return w;
}

void accumulate_expert_output(std::span<const float> y, float weight, int k,
                              std::span<std::int64_t> acc) {
  require(y.size() == acc.size(), "accumulate_expert_output", "y and acc must both be [H]");
  require(k >= 1, "accumulate_expert_output", "k must be at least 1, got " + std::to_string(k));
  // |term| <= (2^31 - 1) / k: any partial sum of at most k terms fits the int32 wire format.
  const double limit = std::floor(2147483647.0 / k);
  const double w = weight;
  for (std::size_t i = 0; i < y.size(); ++i) {
    // w·y is exact in double (24 + 24 significant bits); the scaling by 2^S is exact; then one
    // rounding to the nearest integer, ties to even (the default rounding mode).
    const double term = std::nearbyint(w * y[i] * kCombineScale);
    if (!(std::fabs(term) <= limit)) {
      throw InputError(
          "combine: weighted expert output " + std::to_string(w * y[i]) +
          " is outside the fixed-point range +-" + std::to_string(limit / kCombineScale) + " (2^" +
          std::to_string(31 - kCombineFractionBits) + " / k for k = " + std::to_string(k) + ")");
    }
    acc[i] += static_cast<std::int64_t>(term);
  }
}

void narrow_partial(std::span<const std::int64_t> acc, std::span<std::int32_t> out) {
  require(acc.size() == out.size(), "narrow_partial", "acc and out must have the same size");
  for (std::size_t i = 0; i < acc.size(); ++i) {
    require(acc[i] >= std::numeric_limits<std::int32_t>::min() &&
                acc[i] <= std::numeric_limits<std::int32_t>::max(),
            "narrow_partial", "a partial sum of more than k terms overflows int32");
    out[i] = static_cast<std::int32_t>(acc[i]);
  }
}

void apply_combined(std::span<const std::int64_t> total, std::span<float> h) {
  require(total.size() == h.size(), "apply_combined", "total and h must both be [H]");
  for (std::size_t i = 0; i < h.size(); ++i) {
    h[i] = static_cast<float>(static_cast<double>(h[i]) +
                              static_cast<double>(total[i]) / kCombineScale);
  }
}

void combine(std::span<const float> outputs, std::span<const float> weights, std::span<float> h) {
  const std::size_t hidden = h.size();
  require(outputs.size() == weights.size() * hidden, "combine",
          "outputs must be [k, H] for k weights and h [H]");
  const int k = static_cast<int>(weights.size());
  std::vector<std::int64_t> acc(hidden, 0);
  for (std::size_t c = 0; c < weights.size(); ++c) {
    accumulate_expert_output(outputs.subspan(c * hidden, hidden), weights[c], k, acc);
  }
  apply_combined(acc, h);
}

}  // namespace exflow::runtime
