// Inter-layer expert affinity, aggregated from a trace.
//
// For a top-1 trace the placement objective depends on the tokens only through these counts:
//   transitions[l][i][j]  (shape [L-1, E, E]) tokens routed to expert i at layer l and to
//                         expert j at layer l+1; for top-k, every (i in S_l, j in S_{l+1})
//                         pair of a token counts once (k*k pairs per token and layer pair).
//   loads[l][e]           (shape [L, E]) token-expert assignments of expert e at layer l.
#pragma once

#include <cstdint>
#include <vector>

namespace exflow {

class Progress;
class Trace;

class AffinityGraph {
 public:
  AffinityGraph(int layers, int experts);
  // From counts: transitions [L-1, E, E] and loads [L, E] as described above. Throws
  // UsageError if a size does not match or a count is negative.
  AffinityGraph(int layers, int experts, std::int64_t tokens, std::vector<std::int64_t> transitions,
                std::vector<std::int64_t> loads);

  // One pass over the trace, multi-threaded over tokens (threads 0 = hardware concurrency).
  // Throws as check_counts_size does before counting.
  static AffinityGraph from_trace(const Trace& trace, int threads = 0,
                                  Progress* progress = nullptr);
  // The transitions of a trace take (L-1) E^2 int64 counts. Throws InputError naming the largest
  // id and where it first occurs if they would pass 1 GiB, or 64 MiB with an E (the largest id +
  // 1) over 16 times the distinct ids the trace uses; UsageError naming experts if an E above the
  // largest id + 1 would pass 1 GiB. A strategy that counts prefixes checks the whole trace first.
  static void check_counts_size(const Trace& trace);

  // Adds the counts and tokens of `more` (the graph of other tokens of the same model): the
  // graph of two token ranges is the sum of their graphs. Throws UsageError if the layer or
  // expert counts differ, InputError as the constructor does if a sum passes the int64 range.
  void add(const AffinityGraph& more);

  int layers() const { return layers_; }
  int experts() const { return experts_; }
  std::int64_t tokens() const { return tokens_; }

  std::int64_t transition(int layer, int from, int to) const {
    return transitions_[(static_cast<std::size_t>(layer) * experts_ + from) * experts_ + to];
  }
  std::int64_t load(int layer, int expert) const {
    return loads_[static_cast<std::size_t>(layer) * experts_ + expert];
  }
  const std::vector<std::int64_t>& transitions() const { return transitions_; }  // [L-1, E, E]
  const std::vector<std::int64_t>& loads() const { return loads_; }              // [L, E]

 private:
  int layers_;
  int experts_;
  std::int64_t tokens_ = 0;
  std::vector<std::int64_t> transitions_;
  std::vector<std::int64_t> loads_;
};

// How predictable layer l+1's expert is from layer l's.
struct LayerPairAffinity {
  // Share of transitions that go to their source expert's most frequent successor:
  // sum_i max_j w[i][j] / sum w. Equals 1/E-ish without affinity, 1 for a deterministic chain.
  double top_successor_share = 0;
  // Mutual information between the expert at l and at l+1 over the transitions, in bits
  // (0 = independent, log2(E) = deterministic and uniform).
  double mutual_information_bits = 0;
};

// How unevenly a layer's tokens spread over its experts.
struct LayerExpertLoad {
  double max_over_mean = 0;  // hottest expert's load over the mean load
  double cv = 0;             // coefficient of variation of the expert loads
  std::int64_t max = 0;
  std::int64_t min = 0;
};

struct AffinityProfile {
  std::vector<LayerPairAffinity> pairs;  // [L-1]
  std::vector<LayerExpertLoad> loads;    // [L]
  double mean_top_successor_share = 0;
  double mean_mutual_information_bits = 0;
  double uniform_share = 0;  // 1/E: top_successor_share of a trace without affinity
};

AffinityProfile profile(const AffinityGraph& graph);

}  // namespace exflow
