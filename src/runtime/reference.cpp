// The single-process reference run and the output checksum.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "exflow/runtime.hpp"
#include "exflow/trace.hpp"

namespace exflow::runtime {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::size_t sz(std::int64_t n) {
  return static_cast<std::size_t>(n);
}

}  // namespace

std::uint64_t checksum(std::span<const float> values) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64 offset basis
  for (float v : values) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    for (int b = 0; b < 4; ++b) {
      h ^= (bits >> (8 * b)) & 0xffu;
      h *= 0x100000001b3ULL;  // FNV prime
    }
  }
  return h;
}

std::string checksum_hex(std::uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

double root_mean_square(std::span<const float> values) {
  double ss = 0;
  for (float v : values) ss += static_cast<double>(v) * v;
  return values.empty() ? 0.0 : std::sqrt(ss / static_cast<double>(values.size()));
}

ReferenceResult run_reference(const Trace& trace, const ModelConfig& config,
                              const Workload& workload) {
  const std::vector<std::int32_t> routes = workload_routes(trace, config, workload);
  const int L = config.layers;
  const int E = config.experts;
  const int K = config.k;
  const std::size_t H = sz(config.hidden);

  // Only the experts some token of the workload is routed to: the rest cannot change an output.
  const auto setup_start = Clock::now();
  std::vector<char> hosted(sz(L) * sz(E), 0);
  for (std::size_t i = 0; i < routes.size(); ++i) {
    const std::size_t layer = (i / sz(K)) % sz(L);
    hosted[layer * sz(E) + sz(routes[i])] = 1;
  }
  const ModelWeights weights(config, hosted);
  const std::vector<float> mix = combine_weights(config.combine, K);

  ReferenceResult result;
  result.setup_seconds = since(setup_start);
  result.tokens = workload.tokens();
  result.hosted_experts = weights.hosted_experts();
  result.final_hidden.assign(sz(result.tokens) * H, 0.0f);

  const auto start = Clock::now();
  KvCache cache(L, workload.batch, workload.seq_len, config.hidden);
  std::vector<std::vector<std::size_t>> by_expert(sz(E));  // slots r·K + c routed to expert e
  for (const Step& step : schedule(workload)) {
    const int rows = workload.batch * step.positions;
    auto seq_of = [&](int r) { return r / step.positions; };
    auto pos_of = [&](int r) { return step.first_position + r % step.positions; };
    auto row = [&](std::vector<float>& v, std::size_t r) {
      return std::span<float>(v.data() + r * H, H);
    };

    std::vector<float> h(sz(rows) * H), q(h.size()), key(h.size()), value(h.size()),
        attended(h.size()), m(h.size()), y(h.size() * sz(K));
    for (int r = 0; r < rows; ++r) {
      const std::vector<float> input = make_input(config, workload.token(seq_of(r), pos_of(r)));
      std::copy(input.begin(), input.end(), row(h, sz(r)).begin());
    }
    for (int l = 0; l < L; ++l) {
      const LayerWeights& lw = weights.layer(l);
      // Every row's key and value goes into the cache before any row attends: in the prefill
      // step, position p attends over positions 0..p of the same step.
      attention_qkv(lw, h, rows, q, key, value);
      for (int r = 0; r < rows; ++r) {
        std::copy_n(key.begin() + static_cast<std::ptrdiff_t>(sz(r) * H), H,
                    cache.key(l, seq_of(r), pos_of(r)).begin());
        std::copy_n(value.begin() + static_cast<std::ptrdiff_t>(sz(r) * H), H,
                    cache.value(l, seq_of(r), pos_of(r)).begin());
      }
      for (int r = 0; r < rows; ++r) {
        const int count = pos_of(r) + 1;
        attend(row(q, sz(r)), cache.keys(l, seq_of(r), count), cache.values(l, seq_of(r), count),
               count, config.heads, row(attended, sz(r)));
      }
      attention_output(lw, attended, rows, h);
      ffn_input(lw, h, rows, m);

      // Experts grouped: each hosted expert runs once over the rows routed to it.
      for (auto& slots : by_expert) slots.clear();
      for (int r = 0; r < rows; ++r) {
        const std::int64_t t = workload.token(seq_of(r), pos_of(r));
        const std::int32_t* ids = routes.data() + (sz(t) * sz(L) + sz(l)) * sz(K);
        for (int c = 0; c < K; ++c) by_expert[sz(ids[c])].push_back(sz(r) * sz(K) + sz(c));
      }
      std::vector<float> in, out;
      for (int e = 0; e < E; ++e) {
        const std::vector<std::size_t>& slots = by_expert[sz(e)];
        if (slots.empty()) continue;
        in.resize(slots.size() * H);
        out.resize(in.size());
        for (std::size_t i = 0; i < slots.size(); ++i) {
          const std::size_t r = slots[i] / sz(K);
          std::copy_n(m.begin() + static_cast<std::ptrdiff_t>(r * H), H,
                      in.begin() + static_cast<std::ptrdiff_t>(i * H));
        }
        expert_ffn(weights.expert(l, e), config.activation, in, static_cast<int>(slots.size()),
                   out);
        for (std::size_t i = 0; i < slots.size(); ++i) {
          std::copy_n(out.begin() + static_cast<std::ptrdiff_t>(i * H), H,
                      y.begin() + static_cast<std::ptrdiff_t>(slots[i] * H));
        }
      }
      for (int r = 0; r < rows; ++r) {
        combine(std::span<const float>(y.data() + sz(r) * sz(K) * H, sz(K) * H), mix,
                row(h, sz(r)));
      }
    }
    for (int r = 0; r < rows; ++r) {
      const std::int64_t t = workload.token(seq_of(r), pos_of(r));
      std::copy_n(h.begin() + static_cast<std::ptrdiff_t>(sz(r) * H), H,
                  result.final_hidden.begin() + static_cast<std::ptrdiff_t>(sz(t) * H));
    }
    ++result.steps;
  }
  result.seconds = since(start);
  result.expert_rows = result.tokens * L * K;
  result.checksum = checksum(result.final_hidden);
  result.final_rms = root_mean_square(result.final_hidden);
  return result;
}

}  // namespace exflow::runtime
