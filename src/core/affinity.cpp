#include "exflow/affinity.hpp"

#include <algorithm>
#include <cmath>

#include "exflow/error.hpp"
#include "exflow/trace.hpp"

namespace exflow {

AffinityGraph::AffinityGraph(int layers, int experts)
    : layers_(layers),
      experts_(experts),
      transitions_(static_cast<std::size_t>(std::max(layers - 1, 0)) * experts * experts, 0),
      loads_(static_cast<std::size_t>(layers) * experts, 0) {
  if (layers < 1 || experts < 1) {
    throw UsageError("affinity graph: layers and experts must be positive");
  }
}

AffinityGraph AffinityGraph::from_trace(const Trace& trace, int threads, Progress* progress) {
  const int L = trace.layers();
  const int E = trace.experts();
  const std::size_t EE = static_cast<std::size_t>(E) * E;
  std::vector<AffinityGraph> partial;
  const int workers = trace.workers(threads);
  partial.reserve(static_cast<std::size_t>(workers));
  for (int w = 0; w < workers; ++w) partial.emplace_back(L, E);

  trace.for_each_block(
      threads,
      [&](int worker, const TraceBlock& block) {
        AffinityGraph& g = partial[static_cast<std::size_t>(worker)];
        const std::int64_t n = block.tokens;
        // Layer-pair-major: the E x E matrix of one pair stays in cache for the whole block.
        for (int l = 0; l + 1 < L; ++l) {
          std::int64_t* w = g.transitions_.data() + l * EE;
          for (int ca = 0; ca < block.k; ++ca) {
            const std::int32_t* a = block.column(l, ca);
            for (int cb = 0; cb < block.k; ++cb) {
              const std::int32_t* b = block.column(l + 1, cb);
              for (std::int64_t i = 0; i < n; ++i) ++w[static_cast<std::size_t>(a[i]) * E + b[i]];
            }
          }
        }
        for (int l = 0; l < L; ++l) {
          std::int64_t* load = g.loads_.data() + static_cast<std::size_t>(l) * E;
          for (int c = 0; c < block.k; ++c) {
            const std::int32_t* a = block.column(l, c);
            for (std::int64_t i = 0; i < n; ++i) ++load[a[i]];
          }
        }
      },
      progress, "profiling affinity");

  AffinityGraph result = std::move(partial[0]);
  for (std::size_t w = 1; w < partial.size(); ++w) {
    for (std::size_t i = 0; i < result.transitions_.size(); ++i) {
      result.transitions_[i] += partial[w].transitions_[i];
    }
    for (std::size_t i = 0; i < result.loads_.size(); ++i) result.loads_[i] += partial[w].loads_[i];
  }
  result.tokens_ = trace.tokens();
  return result;
}

AffinityProfile profile(const AffinityGraph& graph) {
  const int L = graph.layers();
  const int E = graph.experts();
  AffinityProfile p;
  p.uniform_share = 1.0 / E;
  std::vector<double> col(static_cast<std::size_t>(E));
  for (int l = 0; l + 1 < L; ++l) {
    LayerPairAffinity a;
    std::fill(col.begin(), col.end(), 0.0);
    std::vector<double> row(static_cast<std::size_t>(E), 0.0);
    double total = 0;
    double best_sum = 0;
    for (int i = 0; i < E; ++i) {
      std::int64_t best = 0;
      for (int j = 0; j < E; ++j) {
        std::int64_t w = graph.transition(l, i, j);
        row[static_cast<std::size_t>(i)] += static_cast<double>(w);
        col[static_cast<std::size_t>(j)] += static_cast<double>(w);
        best = std::max(best, w);
      }
      best_sum += static_cast<double>(best);
      total += row[static_cast<std::size_t>(i)];
    }
    if (total > 0) {
      a.top_successor_share = best_sum / total;
      double mi = 0;
      for (int i = 0; i < E; ++i) {
        for (int j = 0; j < E; ++j) {
          auto w = static_cast<double>(graph.transition(l, i, j));
          if (w == 0) continue;
          mi += w / total *
                std::log2(w * total / (row[static_cast<std::size_t>(i)] * col[static_cast<std::size_t>(j)]));
        }
      }
      a.mutual_information_bits = std::max(0.0, mi);
    }
    p.pairs.push_back(a);
    p.mean_top_successor_share += a.top_successor_share / (L - 1);
    p.mean_mutual_information_bits += a.mutual_information_bits / (L - 1);
  }
  for (int l = 0; l < L; ++l) {
    LayerExpertLoad s;
    double sum = 0, sq = 0;
    s.min = graph.load(l, 0);
    for (int e = 0; e < E; ++e) {
      std::int64_t v = graph.load(l, e);
      s.max = std::max(s.max, v);
      s.min = std::min(s.min, v);
      sum += static_cast<double>(v);
      sq += static_cast<double>(v) * static_cast<double>(v);
    }
    double mean = sum / E;
    if (mean > 0) {
      s.max_over_mean = static_cast<double>(s.max) / mean;
      s.cv = std::sqrt(std::max(0.0, sq / E - mean * mean)) / mean;
    }
    p.loads.push_back(s);
  }
  return p;
}

}  // namespace exflow
