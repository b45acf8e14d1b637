// The workload: sequences cut from the trace, the step schedule, routing and the KV cache.
#include <algorithm>
#include <string>

#include "exflow/error.hpp"
#include "exflow/runtime.hpp"
#include "exflow/trace.hpp"

namespace exflow::runtime {

void validate(const Workload& w) {
  if (w.batch < 1) throw UsageError("batch must be at least 1, got " + std::to_string(w.batch));
  if (w.seq_len < 1) {
    throw UsageError("seq-len must be at least 1, got " + std::to_string(w.seq_len));
  }
  const int p = w.prefill_positions();
  if (p < 0 || p > w.seq_len) {
    throw UsageError("prefill " + std::to_string(p) + " is outside [0, seq-len " +
                     std::to_string(w.seq_len) + "]");
  }
}

void check_fits(const Trace& trace, const ModelConfig& c, const Workload& w) {
  validate(c);
  validate(w);
  if (c.layers > trace.layers()) {
    throw UsageError("the model has " + std::to_string(c.layers) + " layers, the trace " +
                     trace.source() + " only " + std::to_string(trace.layers()));
  }
  if (c.k > trace.k()) {
    throw UsageError("the model routes each token to k = " + std::to_string(c.k) +
                     " experts, the trace " + trace.source() + " has " + std::to_string(trace.k()) +
                     " column(s)");
  }
  if (c.experts < trace.experts()) {
    throw UsageError("the model has " + std::to_string(c.experts) +
                     " experts per layer, the trace " + trace.source() + " needs " +
                     std::to_string(trace.experts()));
  }
  if (trace.tokens() < w.tokens()) {
    throw InputError(trace.source() + ": the workload needs " + std::to_string(w.tokens()) +
                     " tokens (batch " + std::to_string(w.batch) + " x seq-len " +
                     std::to_string(w.seq_len) + "), the trace has " +
                     std::to_string(trace.tokens()));
  }
}

std::vector<Step> schedule(const Workload& w) {
  validate(w);
  std::vector<Step> steps;
  const int prefill = w.prefill_positions();
  if (prefill > 0) steps.push_back({0, prefill});
  for (int p = prefill; p < w.seq_len; ++p) steps.push_back({p, 1});
  return steps;
}

std::vector<std::int32_t> workload_routes(const Trace& trace, const ModelConfig& c,
                                          const Workload& w) {
  check_fits(trace, c, w);
  const std::int64_t tokens = w.tokens();
  std::vector<std::int32_t> routes(static_cast<std::size_t>(tokens) *
                                   static_cast<std::size_t>(c.layers) *
                                   static_cast<std::size_t>(c.k));
  std::vector<std::int32_t> buffer;
  std::size_t i = 0;
  for (std::int64_t begin = 0; begin < tokens; begin += kTraceBlockTokens) {
    const std::int64_t end = std::min(tokens, begin + kTraceBlockTokens);
    TraceBlock block = trace.decode(begin, end, buffer);
    for (std::int64_t t = 0; t < block.tokens; ++t) {
      for (int l = 0; l < c.layers; ++l) {
        for (int col = 0; col < c.k; ++col) routes[i++] = block.column(l, col)[t];
      }
    }
  }
  return routes;
}

KvCache::KvCache(int layers, int sequences, int positions, int hidden)
    : sequences_(sequences), positions_(positions), n_(static_cast<std::size_t>(hidden)) {
  if (layers < 1 || sequences < 1 || positions < 1 || hidden < 1) {
    throw UsageError("KV cache: layers, sequences, positions and hidden must be positive");
  }
  const std::size_t total = static_cast<std::size_t>(layers) * static_cast<std::size_t>(sequences) *
                            static_cast<std::size_t>(positions) * n_;
  keys_.assign(total, 0.0f);
  values_.assign(total, 0.0f);
}

}  // namespace exflow::runtime
