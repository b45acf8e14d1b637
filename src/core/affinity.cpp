#include "exflow/affinity.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <mutex>
#include <string>
#include <thread>

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

AffinityGraph::AffinityGraph(int layers, int experts, std::int64_t tokens,
                             std::vector<std::int64_t> transitions, std::vector<std::int64_t> loads)
    : AffinityGraph(layers, experts) {
  if (transitions.size() != transitions_.size() || loads.size() != loads_.size() || tokens < 0) {
    throw UsageError("affinity graph: counts do not match " + std::to_string(layers) +
                     " layers x " + std::to_string(experts) + " experts");
  }
  for (std::int64_t c : transitions) {
    if (c < 0) throw UsageError("affinity graph: negative transition count");
  }
  for (std::int64_t c : loads) {
    if (c < 0) throw UsageError("affinity graph: negative load");
  }
  // The solvers add counts up per GPU (pair) and per layer: every such sum must fit int64.
  const std::size_t EE = static_cast<std::size_t>(experts) * experts;
  for (int l = 0; l + 1 < layers; ++l) {
    std::int64_t total = 0;
    for (std::size_t c = 0; c < EE; ++c) {
      if (__builtin_add_overflow(total, transitions[l * EE + c], &total)) {
        throw InputError("affinity graph: the transition counts of layer pair " +
                         std::to_string(l) + " sum past the int64 range");
      }
    }
  }
  for (int l = 0; l < layers; ++l) {
    std::int64_t total = 0;
    for (int e = 0; e < experts; ++e) {
      if (__builtin_add_overflow(total, loads[static_cast<std::size_t>(l) * experts + e], &total)) {
        throw InputError("affinity graph: the loads of layer " + std::to_string(l) +
                         " sum past the int64 range");
      }
    }
  }
  transitions_ = std::move(transitions);
  loads_ = std::move(loads);
  tokens_ = tokens;
}

void AffinityGraph::add(const AffinityGraph& more) {
  if (more.layers_ != layers_ || more.experts_ != experts_) {
    throw UsageError("affinity graph: cannot add " + std::to_string(more.layers_) + " layers x " +
                     std::to_string(more.experts_) + " experts to " + std::to_string(layers_) +
                     " x " + std::to_string(experts_));
  }
  auto sum = [](const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b) {
    std::vector<std::int64_t> out(a.size());
    for (std::size_t c = 0; c < a.size(); ++c) {
      if (__builtin_add_overflow(a[c], b[c], &out[c])) {
        throw InputError("affinity graph: a count passes the int64 range when graphs are added");
      }
    }
    return out;
  };
  std::int64_t tokens = 0;
  if (__builtin_add_overflow(tokens_, more.tokens_, &tokens)) {
    throw InputError(
        "affinity graph: the token count passes the int64 range when graphs are added");
  }
  *this = AffinityGraph(layers_, experts_, tokens, sum(transitions_, more.transitions_),
                        sum(loads_, more.loads_));
}

namespace {

// Largest count a staging cell holds.
constexpr std::int64_t kStageLimit = std::numeric_limits<std::uint16_t>::max();

// Tokens a worker gathers before it counts them, and the bytes their ids may take (16 bits an
// id, L x k ids a token). Counting layer pair by layer pair over many tokens lets one pair's
// stage (E x E 16-bit cells, 128 KiB for E = 256) be read in order into the core's cache once,
// then take tens of thousands of increments there; counting each decoded block of
// kTraceBlockTokens instead pulls every pair's stage back line by line at random for a few
// thousand increments.
constexpr std::int64_t kPendingTokens = 32768;
constexpr std::int64_t kPendingBytes = std::int64_t{4} << 20;
static_assert(kPendingTokens <= kStageLimit,
              "one column pair of the pending tokens must fit a stage");
static_assert(kTraceBlockTokens <= kPendingTokens, "a decoded block must fit the pending tokens");

// One worker's transition counts, staged in 16-bit cells: a quarter of the int64 size (7.5 MB
// for 58 layers and 256 experts), which stays in the last-level cache while the trace streams
// through, where random increments of (L-1) x E x E int64 cells mostly miss it. The worker
// gathers decoded tokens (their ids narrowed to 16 bits: ids are below 65 536) and counts them
// a layer pair at a time. Before n more tokens are counted into a column pair, a bound on the
// pair's cells (its largest cell, read in order first, which also brings the stage into cache)
// must stay within kStageLimit once n is added, or the stage is added into the int64 totals
// and cleared.
struct Stage {
  std::vector<std::uint16_t> transitions;  // [L-1, E, E]
  std::vector<std::uint16_t> ids;          // [L, k, capacity]: the first `pending` of each run
  std::int64_t capacity = 0;
  std::int64_t pending = 0;
  int k = 1;

  // No worker gets more than the trace's tokens, nor a block more than kTraceBlockTokens.
  Stage(int layers, int experts, int k, std::int64_t tokens)
      : transitions(static_cast<std::size_t>(layers - 1) * experts * experts, 0),
        capacity(std::min(tokens,
                          std::clamp<std::int64_t>(kPendingBytes / (2 * std::int64_t{layers} * k),
                                                   kTraceBlockTokens, kPendingTokens))),
        k(k) {
    ids.resize(static_cast<std::size_t>(capacity) * layers * k);
  }
  std::uint16_t* column(int layer, int col) {
    return ids.data() + (static_cast<std::int64_t>(layer) * k + col) * capacity;
  }
};

// The dense counts [L-1, E, E] from_trace may build: 1 GiB of int64 (e.g. 58 layers of 1 024
// experts, or 2 layers of 11 585). Its 16-bit stages take a quarter of that per worker, and the
// workers are cut so that they stay within the same budget.
constexpr double kMaxTransitionBytes = double(std::int64_t{1} << 30);
// Above this size the ids are checked against E before the counts are built: when the largest id
// implies an E over 16 times the distinct ids used, the counts would be mostly zeros made by one
// stray id.
constexpr double kCheckedTransitionBytes = double(std::int64_t{64} << 20);
constexpr int kStrayIdFactor = 16;

std::string bytes_text(double bytes) {
  char buf[32];
  if (bytes >= double(std::int64_t{1} << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(std::int64_t{1} << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.0f MiB", bytes / double(std::int64_t{1} << 20));
  }
  return buf;
}

double transition_bytes(const Trace& trace) {
  return 8.0 * (trace.layers() - 1) * trace.experts() * static_cast<double>(trace.experts());
}

// Kept out of line: inlined into the block loop, it ran short of registers and kept its index on
// the stack.
[[gnu::noinline]] void count_pairs(const std::uint16_t* from, const std::uint16_t* to,
                                   std::int64_t n, int experts, std::uint16_t* counts) {
  for (std::int64_t i = 0; i < n; ++i) {
    ++counts[static_cast<std::size_t>(from[i]) * experts + to[i]];
  }
}

// The largest of n cells, read in order (a loop the compiler vectorises).
std::uint16_t largest_cell(const std::uint16_t* cells, std::size_t n) {
  std::uint16_t largest = 0;
  for (std::size_t c = 0; c < n; ++c) largest = std::max(largest, cells[c]);
  return largest;
}

}  // namespace

// One pass over the ids (distinct ids, the largest and where it first occurs), only for counts
// above kCheckedTransitionBytes.
void AffinityGraph::check_counts_size(const Trace& trace) {
  const double bytes = transition_bytes(trace);
  if (bytes <= kCheckedTransitionBytes) return;
  const int L = trace.layers();
  const int E = trace.experts();
  std::vector<char> used(static_cast<std::size_t>(E), 0);
  std::int32_t max_id = -1;
  std::int64_t at_token = 0;
  int at_layer = 0, at_col = 0;
  trace.for_each_block(1, [&](int, const TraceBlock& block) {
    for (int l = 0; l < block.layers; ++l) {
      for (int c = 0; c < block.k; ++c) {
        const std::int32_t* ids = block.column(l, c);
        for (std::int64_t i = 0; i < block.tokens; ++i) {
          used[static_cast<std::size_t>(ids[i])] = 1;
          const std::int64_t t = block.first_token + i;
          if (ids[i] > max_id || (ids[i] == max_id && t < at_token)) {
            max_id = ids[i];
            at_token = t;
            at_layer = l;
            at_col = c;
          }
        }
      }
    }
  });
  const auto distinct = std::count(used.begin(), used.end(), char{1});
  const bool too_large = bytes > kMaxTransitionBytes;
  const bool stray = max_id + 1 == E && distinct * kStrayIdFactor < E;
  if (!too_large && !stray) return;
  const std::string counts = "the inter-layer counts [" + std::to_string(L - 1) + ", " +
                             std::to_string(E) + ", " + std::to_string(E) + "] would take " +
                             bytes_text(bytes);
  const std::string limit =
      too_large ? ", more than the " + bytes_text(kMaxTransitionBytes) + " allowed" : "";
  const std::string use = "the trace uses " + std::to_string(distinct) + " distinct ids";
  if (max_id + 1 < E) {
    throw UsageError(trace.source() + ": experts = " + std::to_string(E) + " (largest id " +
                         std::to_string(max_id) + "): " + counts + limit + "; " + use,
                     {"experts"});
  }
  throw InputError(trace.source() + ": expert id " + std::to_string(max_id) + " at token " +
                   std::to_string(at_token) + ", layer " + std::to_string(at_layer) +
                   (trace.k() > 1 ? ", column " + std::to_string(at_col) : std::string()) +
                   " makes " + std::to_string(E) + " experts per layer, but " + use + ": " +
                   counts + limit);
}

AffinityGraph AffinityGraph::from_trace(const Trace& trace, int threads, Progress* progress) {
  const int L = trace.layers();
  const int E = trace.experts();
  const int k = trace.k();
  check_counts_size(trace);
  AffinityGraph result(L, E);
  if (L == 1) {  // no layer pairs: count the loads directly, on one thread
    trace.for_each_block(
        1,
        [&](int, const TraceBlock& block) {
          for (int c = 0; c < k; ++c) {
            const std::int32_t* a = block.column(0, c);
            for (std::int64_t i = 0; i < block.tokens; ++i) ++result.loads_[a[i]];
          }
        },
        progress, "profiling affinity");
    result.tokens_ = trace.tokens();
    return result;
  }

  const int memory_workers = static_cast<int>(
      std::max(1.0, std::floor(4 * kMaxTransitionBytes / transition_bytes(trace))));
  threads = std::min(resolve_threads(threads), memory_workers);
  const std::size_t EE = static_cast<std::size_t>(E) * E;
  std::vector<Stage> stages;
  const int workers = trace.workers(threads);
  stages.reserve(static_cast<std::size_t>(workers));
  for (int w = 0; w < workers; ++w) stages.emplace_back(L, E, k, trace.tokens());
  std::mutex totals_mutex;
  auto flush = [&](Stage& stage, int l) {
    std::uint16_t* staged = stage.transitions.data() + l * EE;
    {
      std::lock_guard<std::mutex> lock(totals_mutex);
      std::int64_t* total = result.transitions_.data() + l * EE;
      for (std::size_t c = 0; c < EE; ++c) total[c] += staged[c];
    }
    std::fill(staged, staged + EE, std::uint16_t{0});
  };
  // Counts the stage's pending tokens, layer pair by layer pair.
  auto count_pending = [&](Stage& stage) {
    const std::int64_t n = stage.pending;
    if (n == 0) return;
    for (int l = 0; l + 1 < L; ++l) {
      std::uint16_t* staged = stage.transitions.data() + l * EE;
      std::int64_t bound = largest_cell(staged, EE);
      for (int ca = 0; ca < k; ++ca) {
        for (int cb = 0; cb < k; ++cb) {
          if (bound + n > kStageLimit) {
            bound = largest_cell(staged, EE);
            if (bound + n > kStageLimit) {
              flush(stage, l);
              bound = 0;
            }
          }
          bound += n;
          count_pairs(stage.column(l, ca), stage.column(l + 1, cb), n, E, staged);
        }
      }
    }
    stage.pending = 0;
  };

  trace.for_each_block(
      threads,
      [&](int worker, const TraceBlock& block) {
        Stage& stage = stages[static_cast<std::size_t>(worker)];
        if (stage.pending + block.tokens > stage.capacity) count_pending(stage);
        for (int l = 0; l < L; ++l) {
          for (int c = 0; c < k; ++c) {
            const std::int32_t* from = block.column(l, c);
            std::uint16_t* to = stage.column(l, c) + stage.pending;
            for (std::int64_t i = 0; i < block.tokens; ++i) {
              to[i] = static_cast<std::uint16_t>(from[i]);
            }
          }
        }
        stage.pending += block.tokens;
      },
      progress, "profiling affinity");
  // The tokens each worker still holds, counted on the workers' threads.
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) {
    pool.emplace_back(count_pending, std::ref(stages[static_cast<std::size_t>(w)]));
  }
  count_pending(stages[0]);
  for (std::thread& t : pool) t.join();
  for (Stage& stage : stages) {
    for (int l = 0; l + 1 < L; ++l) flush(stage, l);
  }

  // Each of a token's k experts at layer l pairs once with each of its k experts at layer
  // l + 1, so the row sums of pair l, and for the last layer the column sums of pair L - 2,
  // are k times the loads.
  for (int l = 0; l + 1 < L; ++l) {
    for (int i = 0; i < E; ++i) {
      std::int64_t sum = 0;
      for (int j = 0; j < E; ++j) sum += result.transition(l, i, j);
      result.loads_[static_cast<std::size_t>(l) * E + i] = sum / k;
    }
  }
  for (int i = 0; i < E; ++i) {
    for (int j = 0; j < E; ++j) {
      result.loads_[static_cast<std::size_t>(L - 1) * E + j] += result.transition(L - 2, i, j);
    }
  }
  for (int j = 0; j < E; ++j) result.loads_[static_cast<std::size_t>(L - 1) * E + j] /= k;
  result.tokens_ = trace.tokens();
  return result;
}

namespace {

// x log2 x (0 for x = 0), from a table for the small counts most cells of a profile hold.
class XLog2X {
 public:
  static const XLog2X& table() {
    static const XLog2X instance;
    return instance;
  }
  double of(std::int64_t x) const {
    return x < kSize ? values_[static_cast<std::size_t>(x)] : of(static_cast<double>(x));
  }
  double of(double x) const { return x > 0 ? x * std::log2(x) : 0.0; }

 private:
  static constexpr std::int64_t kSize = 4096;
  XLog2X() : values_(kSize) {
    for (std::int64_t x = 0; x < kSize; ++x) values_[static_cast<std::size_t>(x)] = of(double(x));
  }
  std::vector<double> values_;
};

}  // namespace

AffinityProfile profile(const AffinityGraph& graph) {
  const int L = graph.layers();
  const int E = graph.experts();
  const std::size_t EE = static_cast<std::size_t>(E) * E;
  const XLog2X& xlog2x = XLog2X::table();
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
      // I = sum_ij (w_ij / T) log2(w_ij T / (r_i c_j))
      //   = (sum_ij w_ij log2 w_ij - sum_i r_i log2 r_i - sum_j c_j log2 c_j) / T + log2 T,
      // with r and c the row and column sums of w and T their total.
      double terms = 0;
      for (std::size_t c = 0; c < EE; ++c) terms += xlog2x.of(graph.transitions()[l * EE + c]);
      for (int e = 0; e < E; ++e) {
        terms -= xlog2x.of(row[static_cast<std::size_t>(e)]) +
                 xlog2x.of(col[static_cast<std::size_t>(e)]);
      }
      const double mi = terms / total + std::log2(total);
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
