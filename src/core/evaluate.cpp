// The one evaluator (see include/exflow/evaluate.hpp for the cost model).
//
// One pass over the trace, split into contiguous token ranges, one per worker. Each worker
// counts, per layer, the transfers by hop class and the tokens that needed none, plus the
// token-expert assignments each GPU serves; integer counts merged in worker order make the
// result independent of the thread count. Every routing rule comes from the rulebook
// (src/core/routing.hpp). Top-1 context-coherent traces without replicas take a streamlined
// path, the rulebook's rules with one copy per expert and one expert per token (H_l is one GPU,
// which is the home; one move when it changes); top-k, replicas and the baseline scheme walk
// each token's expert set through the rulebook.
#include "exflow/evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/routing.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow {
namespace {

// Per-worker counts, in units of `unit` (1, or kEvenUnit for the expected counts of copy choice
// even). transfers[(l * 2 + phase) * 3 + hop] counts transfers of that phase and hop class at
// layer l (index [l * 2 * 3 + kLocal] counts tokens that needed no transfer into layer l). Loads
// are counted per expert and mapped to GPUs once, at the end: incrementing one of only G GPU
// counters per token makes many tokens wait for an earlier token's store to the same counter.
struct Counts {
  std::vector<std::int64_t> transfers;    // [L, 2, 3]
  std::vector<std::int64_t> expert_load;  // [L, E] (top-1 path: mapped to GPUs at the end)
  std::vector<std::int64_t> gpu_load;     // [L, G] (general path: counted on the copy used)
  std::vector<std::int64_t> traffic;      // [L, 2, G, G] when requested, else empty
  std::vector<std::int64_t> gpu_traffic;  // [L, 2, G, 4] when requested, else empty
  std::int64_t replica_assignments = 0;   // token-expert assignments served by a replica
  Counts(int layers, int experts, int gpus, const EvalOptions& options)
      : transfers(static_cast<std::size_t>(layers) * 6, 0),
        expert_load(static_cast<std::size_t>(layers) * experts, 0),
        gpu_load(static_cast<std::size_t>(layers) * gpus, 0),
        traffic(options.traffic ? static_cast<std::size_t>(layers) * 2 * gpus * gpus : 0, 0),
        gpu_traffic(options.gpu_traffic ? static_cast<std::size_t>(layers) * 2 * gpus * 4 : 0, 0) {}
};

using routing::kInter;
using routing::kIntra;
using routing::kLocal;

// The unit of the expected counts of copy choice even: a probability p counts round(p · 2^20).
// Integer sums keep the result independent of the thread count.
constexpr std::int64_t kEvenUnit = std::int64_t{1} << 20;

class BlockEvaluator {
 public:
  BlockEvaluator(const Placement& placement, const Topology& topology, const EvalOptions& options)
      : placement_(placement),
        scheme_(options.scheme),
        sequence_length_(options.sequence_length),
        traffic_(options.traffic),
        gpu_traffic_(options.gpu_traffic),
        even_(options.replica_choice == ReplicaChoice::kEven && placement.has_replicas()),
        experts_(placement.experts()),
        gpus_(topology.gpus()),
        hops_(topology),
        copies_(placement) {}

  void operator()(const TraceBlock& block, Counts& counts) {
    if (block.k == 1 && scheme_ == Scheme::kContextCoherent && !placement_.has_replicas() &&
        !traffic_ && !gpu_traffic_) {
      top1_coherent(block, counts);
    } else if (even_) {
      general_even(block, counts);
    } else {
      general(block, counts);
    }
  }

 private:
  // `weight` transfers src -> dst (src != dst) at layer l in `phase` (0 dispatch, 1 combine).
  void count(Counts& counts, int l, int phase, int src, int dst, std::int64_t weight = 1) const {
    const int h = hops_.hop(src, dst);
    const std::size_t lp = static_cast<std::size_t>(l) * 2 + static_cast<std::size_t>(phase);
    counts.transfers[lp * 3 + static_cast<std::size_t>(h)] += weight;
    if (gpu_traffic_) {
      const std::size_t base = lp * static_cast<std::size_t>(gpus_);
      const std::size_t inter = h == kInter ? 1 : 0;
      counts.gpu_traffic[(base + static_cast<std::size_t>(src)) * 4 + inter] += weight;
      counts.gpu_traffic[(base + static_cast<std::size_t>(dst)) * 4 + 2 + inter] += weight;
    }
    if (traffic_) {
      counts.traffic[(lp * static_cast<std::size_t>(gpus_) + static_cast<std::size_t>(src)) *
                         static_cast<std::size_t>(gpus_) +
                     static_cast<std::size_t>(dst)] += weight;
    }
  }
  std::int64_t* locals(Counts& counts, int l) const {
    return counts.transfers.data() + static_cast<std::size_t>(l) * 6 + kLocal;
  }
  const int* layer_map(int l) const {
    return placement_.gpu_of().data() + static_cast<std::size_t>(l) * experts_;
  }
  void top1_coherent(const TraceBlock& block, Counts& counts) {
    const std::int64_t n = block.tokens;
    prev_.resize(static_cast<std::size_t>(n));
    for (int l = 0; l < block.layers; ++l) {
      const int* gpu_of = layer_map(l);
      const std::int32_t* ids = block.column(l, 0);
      std::int64_t* load = counts.expert_load.data() + static_cast<std::size_t>(l) * experts_;
      if (l == 0) {
        for (std::int64_t i = 0; i < n; ++i) {
          ++load[ids[i]];
          prev_[static_cast<std::size_t>(i)] = copies_.start(ids[i]);
        }
        continue;
      }
      // Moves are counted in registers (an array of hop counters in memory would chain most
      // tokens through store-to-load forwarding): `moved` tokens change GPU, `crossed` of
      // them change node.
      std::int64_t moved = 0;
      std::int64_t crossed = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        ++load[ids[i]];
        const auto from = static_cast<std::size_t>(prev_[static_cast<std::size_t>(i)]);
        const auto to = static_cast<std::size_t>(gpu_of[ids[i]]);
        moved += from != to;
        crossed += hops_.node_of(static_cast<int>(from)) != hops_.node_of(static_cast<int>(to));
        prev_[static_cast<std::size_t>(i)] = static_cast<int>(to);
      }
      // Top-1: H_l is the home, so the move into layer l is the token's only transfer, a dispatch.
      std::int64_t* transfers = counts.transfers.data() + static_cast<std::size_t>(l) * 6;
      transfers[kLocal] += n - moved;
      transfers[kIntra] += moved - crossed;
      transfers[kInter] += crossed;
    }
  }

  void general(const TraceBlock& block, Counts& counts) {
    const std::int64_t n = block.tokens;
    const int k = block.k;
    prev_.resize(static_cast<std::size_t>(n));
    routing::TokenGpus h(k);
    for (int l = 0; l < block.layers; ++l) {
      const int* gpu_of = layer_map(l);
      std::int64_t* load = counts.gpu_load.data() + static_cast<std::size_t>(l) * gpus_;
      std::int64_t* local = locals(counts, l);
      for (std::int64_t i = 0; i < n; ++i) {
        // Where the token is when it picks its experts' copies: its owner (standard schemes),
        // its home at the previous layer, or at layer 0 its start.
        const int at = scheme_ != Scheme::kContextCoherent
                           ? routing::owner(block.first_token + i, sequence_length_, gpus_)
                           : (l > 0 ? prev_[static_cast<std::size_t>(i)]
                                    : copies_.start(block.column(0, 0)[i]));
        h.clear();
        for (int c = 0; c < k; ++c) {
          const std::int32_t e = block.column(l, c)[i];
          const int g = copies_.choose(l, e, at, hops_);
          ++load[g];
          counts.replica_assignments += g != gpu_of[e];
          h.add(g);
        }
        auto visit = [&](int phase, int src, int dst) { count(counts, l, phase, src, dst); };
        if (scheme_ == Scheme::kBaseline) {
          *local += routing::baseline_transfers(h, at, visit) ? 1 : 0;
          continue;
        }
        if (scheme_ == Scheme::kDeepEP) {
          *local += routing::deepep_transfers(h, at, hops_, visit) ? 1 : 0;
          continue;
        }
        if (scheme_ == Scheme::kDeepEPLowLatency) {
          *local += routing::deepep_low_latency_transfers(h, at, visit) ? 1 : 0;
          continue;
        }
        const int home = h.home();
        const bool stays = routing::coherent_transfers(h, l > 0 ? at : -1, home, visit);
        if (l > 0) *local += stays ? 1 : 0;
        prev_[static_cast<std::size_t>(i)] = home;
      }
    }
  }

  // Copy choice even (a standard scheme, replicas present): the expected loads and transfers.
  void general_even(const TraceBlock& block, Counts& counts) {
    const std::int64_t n = block.tokens;
    routing::SpreadGpus h;
    auto units = [](double p) { return static_cast<std::int64_t>(std::llround(p * kEvenUnit)); };
    for (int l = 0; l < block.layers; ++l) {
      const int* gpu_of = layer_map(l);
      std::int64_t* load = counts.gpu_load.data() + static_cast<std::size_t>(l) * gpus_;
      std::int64_t* local = locals(counts, l);
      for (std::int64_t i = 0; i < n; ++i) {
        const int owner = routing::owner(block.first_token + i, sequence_length_, gpus_);
        h.clear();
        for (int c = 0; c < block.k; ++c) {
          const std::int32_t e = block.column(l, c)[i];
          h.add_column(copies_.copies(l, e), owner, hops_, [&](int g, double p) {
            const std::int64_t w = units(p);
            load[g] += w;
            if (g != gpu_of[e]) counts.replica_assignments += w;
          });
        }
        const double stays = routing::expected_transfers(
            scheme_, h, owner, hops_, [&](int phase, int src, int dst, double expected) {
              count(counts, l, phase, src, dst, units(expected));
            });
        *local += units(stays);
      }
    }
  }

  const Placement& placement_;
  Scheme scheme_;
  std::int64_t sequence_length_;
  bool traffic_;
  bool gpu_traffic_;
  bool even_;  // copy choice even with replicas: expected counts in units of kEvenUnit
  int experts_;
  int gpus_;
  routing::HopTable hops_;
  routing::CopyTable copies_;
  std::vector<int> prev_;  // per token of the block: its GPU (home) at the previous layer
};

// Turns merged counts (in units of `unit`) into per-token metrics.
Metrics summarize(const Counts& total, std::int64_t unit, const Trace& trace,
                  const Placement& placement, const Topology& topology, Scheme scheme) {
  const int L = trace.layers();
  const int G = topology.gpus();
  Metrics m;
  m.scheme = scheme;
  m.tokens = trace.tokens();
  m.layers = L;
  m.k = trace.k();
  m.gpus = G;
  const auto T = static_cast<double>(trace.tokens());
  const double per_token = 1.0 / (T * static_cast<double>(unit));
  const auto whole = [unit](std::int64_t v) { return (v + unit / 2) / unit; };
  const int first_layer = scheme == Scheme::kContextCoherent ? 1 : 0;
  std::int64_t intra_units = 0;
  std::int64_t inter_units = 0;
  std::int64_t local = 0;
  for (int l = 0; l < L; ++l) {
    double layer_cost = 0;
    for (int phase = 0; phase < 2; ++phase) {
      PhaseMetrics& pm = phase == routing::kDispatch ? m.dispatch : m.combine;
      const std::int64_t* t =
          total.transfers.data() + (static_cast<std::size_t>(l) * 2 + phase) * 3;
      intra_units += t[kIntra];
      inter_units += t[kInter];
      const double intra = static_cast<double>(t[kIntra]) * per_token;
      const double inter = static_cast<double>(t[kInter]) * per_token;
      const double cost = intra * topology.intra_cost() + inter * topology.inter_cost();
      pm.intra_per_layer.push_back(intra);
      pm.inter_per_layer.push_back(inter);
      pm.cost_per_layer.push_back(cost);
      pm.intra += intra;
      pm.inter += inter;
      pm.cost += cost;
      layer_cost += cost;
    }
    m.cost_per_layer.push_back(layer_cost);
    if (l >= first_layer) {
      const std::int64_t stays = total.transfers[static_cast<std::size_t>(l) * 6 + kLocal];
      local += stays;
      m.local_fraction_per_layer.push_back(static_cast<double>(stays) * per_token);
    }
  }
  m.intra_transfers = whole(intra_units);
  m.inter_transfers = whole(inter_units);
  m.intra = static_cast<double>(intra_units) * per_token;
  m.inter = static_cast<double>(inter_units) * per_token;
  m.cost = m.intra * topology.intra_cost() + m.inter * topology.inter_cost();
  const int P = topology.gpus_per_node();
  const int N = topology.nodes();
  m.cintra = P > 1 ? m.intra / (P - 1) : 0.0;
  m.cinter = N > 1 ? m.inter / (static_cast<double>(P) * (N - 1)) : 0.0;
  m.local_fraction = m.local_fraction_per_layer.empty()
                         ? 1.0
                         : static_cast<double>(local) * per_token /
                               static_cast<double>(m.local_fraction_per_layer.size());

  m.gpu_load = total.gpu_load;
  for (std::int64_t& v : m.gpu_load) v = whole(v);
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < placement.experts(); ++e) {
      m.gpu_load[static_cast<std::size_t>(l) * G + placement.gpu(l, e)] +=
          total.expert_load[static_cast<std::size_t>(l) * placement.experts() + e];
    }
  }
  const double mean_load = T * trace.k() / G;
  for (int l = 0; l < L; ++l) {
    const std::int64_t* load = total.gpu_load.data() + static_cast<std::size_t>(l) * G;
    const std::int64_t* served = m.gpu_load.data() + static_cast<std::size_t>(l) * G;
    // The ratio from the unrounded counts (each expert's top-1 load is whole).
    double busiest = 0;
    for (int g = 0; g < G; ++g) {
      const double v = static_cast<double>(load[g]) / static_cast<double>(unit) +
                       static_cast<double>(served[g] - whole(load[g]));
      busiest = std::max(busiest, v);
    }
    const double ratio = busiest / mean_load;
    m.load_ratio_per_layer.push_back(ratio);
    m.load_ratio_max = std::max(m.load_ratio_max, ratio);
    m.load_ratio_mean += ratio / L;
  }
  m.traffic = total.traffic;
  for (std::int64_t& v : m.traffic) v = whole(v);
  m.gpu_traffic = total.gpu_traffic;
  for (std::int64_t& v : m.gpu_traffic) v = whole(v);
  m.replicas = static_cast<std::int64_t>(placement.replicas().size());
  m.replica_assignments = whole(total.replica_assignments);
  m.replica_share = static_cast<double>(total.replica_assignments) /
                    (static_cast<double>(unit) * T * trace.k() * L);
  return m;
}

}  // namespace

const char* to_string(Scheme scheme) {
  switch (scheme) {
    case Scheme::kContextCoherent:
      return "context-coherent";
    case Scheme::kBaseline:
      return "baseline";
    case Scheme::kDeepEP:
      return "deepep";
    case Scheme::kDeepEPLowLatency:
      return "deepep-ll";
  }
  return "?";
}

Scheme parse_scheme(const std::string& name) {
  if (name == "coherent" || name == "context-coherent") return Scheme::kContextCoherent;
  if (name == "standard" || name == "baseline") return Scheme::kBaseline;
  if (name == "deepep") return Scheme::kDeepEP;
  if (name == "deepep-ll") return Scheme::kDeepEPLowLatency;
  throw UsageError("unknown scheme '" + name + "' (coherent, standard, deepep, deepep-ll)");
}

const char* to_string(ReplicaChoice choice) {
  return choice == ReplicaChoice::kEven ? "even" : "nearest";
}

ReplicaChoice parse_replica_choice(const std::string& name) {
  if (name == "nearest") return ReplicaChoice::kNearest;
  if (name == "even") return ReplicaChoice::kEven;
  throw UsageError("unknown replica choice '" + name + "' (nearest, even)");
}

std::vector<Metrics> evaluate_all(const Trace& trace,
                                  const std::vector<const Placement*>& placements,
                                  const Topology& topology, const EvalOptions& options) {
  if (options.sequence_length < 1) {
    throw UsageError("sequence length must be at least 1, got " +
                     std::to_string(options.sequence_length));
  }
  if (options.replica_choice == ReplicaChoice::kEven &&
      options.scheme == Scheme::kContextCoherent) {
    throw UsageError(
        "replica choice even spreads tokens over copies from their owner: it applies to the "
        "standard schemes (standard, deepep, deepep-ll), not coherent");
  }
  for (const Placement* placement : placements) {
    if (placement->layers() != trace.layers() || placement->experts() != trace.experts()) {
      throw InputError("placement has " + std::to_string(placement->layers()) + " layers x " +
                       std::to_string(placement->experts()) + " experts, the trace " +
                       std::to_string(trace.layers()) + " x " + std::to_string(trace.experts()));
    }
    if (placement->gpus() != topology.gpus()) {
      throw InputError("placement is for " + std::to_string(placement->gpus()) +
                       " GPUs, the topology has " + std::to_string(topology.gpus()));
    }
    for (int g : placement->gpu_of()) {
      if (g < 0 || g >= topology.gpus()) {
        throw InputError("placement names GPU " + std::to_string(g) + ", outside 0.." +
                         std::to_string(topology.gpus() - 1));
      }
    }
    validate(*placement, topology, Balance::kNone);
  }
  const int L = trace.layers();
  const int E = trace.experts();
  const std::size_t P = placements.size();
  const int workers = trace.workers(options.threads);
  // partial[w * P + p]: worker w's counts for placement p.
  std::vector<Counts> partial(static_cast<std::size_t>(workers) * P,
                              Counts(L, E, topology.gpus(), options));
  std::vector<BlockEvaluator> evaluators;
  for (int w = 0; w < workers; ++w) {
    for (const Placement* placement : placements) {
      evaluators.emplace_back(*placement, topology, options);
    }
  }
  trace.for_each_block(
      options.threads,
      [&](int w, const TraceBlock& block) {
        for (std::size_t p = 0; p < P; ++p) {
          std::size_t i = static_cast<std::size_t>(w) * P + p;
          evaluators[i](block, partial[i]);
        }
      },
      options.progress, "evaluating placement");

  std::vector<Metrics> results;
  for (std::size_t p = 0; p < P; ++p) {
    Counts total = std::move(partial[p]);
    for (int w = 1; w < workers; ++w) {
      const Counts& c = partial[static_cast<std::size_t>(w) * P + p];
      for (std::size_t i = 0; i < total.transfers.size(); ++i) total.transfers[i] += c.transfers[i];
      for (std::size_t i = 0; i < total.expert_load.size(); ++i) {
        total.expert_load[i] += c.expert_load[i];
      }
      for (std::size_t i = 0; i < total.gpu_load.size(); ++i) total.gpu_load[i] += c.gpu_load[i];
      for (std::size_t i = 0; i < total.traffic.size(); ++i) total.traffic[i] += c.traffic[i];
      for (std::size_t i = 0; i < total.gpu_traffic.size(); ++i) {
        total.gpu_traffic[i] += c.gpu_traffic[i];
      }
      total.replica_assignments += c.replica_assignments;
    }
    const bool even =
        options.replica_choice == ReplicaChoice::kEven && placements[p]->has_replicas();
    results.push_back(
        summarize(total, even ? kEvenUnit : 1, trace, *placements[p], topology, options.scheme));
  }
  return results;
}

Metrics evaluate(const Trace& trace, const Placement& placement, const Topology& topology,
                 const EvalOptions& options) {
  return evaluate_all(trace, {&placement}, topology, options).front();
}

}  // namespace exflow
