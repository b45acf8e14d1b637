// The communication simulator (include/exflow/simulate.hpp; the model in docs/simulator.md).
#include "exflow/simulate.hpp"

#include <algorithm>
#include <cmath>

#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow {
namespace {

std::size_t sz(std::int64_t n) {
  return static_cast<std::size_t>(n);
}

void require_positive(double v, const char* what) {
  if (!(v > 0) || !std::isfinite(v)) {
    throw UsageError(std::string(what) + " must be a positive number, got " + std::to_string(v));
  }
}

// Bytes per second of a link class from Gbit/s.
double bytes_per_second(double gbps) {
  return gbps * 1e9 / 8;
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  // hidden, KV bytes per token per layer (bf16), MoE layers, routed experts, top-k, bytes per
  // activation value, dense decoder layers before the first MoE layer (first_k_dense_replace).
  static const std::vector<ModelPreset> presets = {
      // 8 KV heads x 128 x (K, V) x 2 bytes.
      {"mixtral-8x7b", 4096, 2 * 8 * 128 * 2, 32, 8, 2, 2, 0},
      {"mixtral-8x22b", 6144, 2 * 8 * 128 * 2, 56, 8, 2, 2, 0},
      // MLA: one 512-wide latent plus a 64-wide RoPE key per token, 61 layers of which the first
      // 3 are dense.
      {"deepseek-v3", 7168, (512 + 64) * 2, 58, 256, 8, 2, 3},
      // MLA as V3; 27 layers, the first dense; 64 routed experts, top-6.
      {"deepseek-v2-lite", 2048, (512 + 64) * 2, 26, 64, 6, 2, 1},
      // 4 KV heads x 128.
      {"qwen3-235b-a22b", 4096, 2 * 4 * 128 * 2, 94, 128, 8, 2, 0},
      // 16 KV heads (full multi-head attention) x 128.
      {"olmoe-1b-7b", 2048, 2 * 16 * 128 * 2, 16, 64, 8, 2, 0},
  };
  return presets;
}

const ModelPreset& find_model_preset(const std::string& name) {
  std::string known;
  for (const ModelPreset& p : model_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  throw UsageError("unknown model preset '" + name + "' (known: " + known + ")");
}

std::vector<ConfigurationResult> simulate(const Trace& trace, const Topology& topology,
                                          const std::vector<Configuration>& configurations,
                                          const SimulationOptions& options) {
  require_positive(options.hidden, "hidden size");
  require_positive(options.dtype_bytes, "bytes per activation value");
  require_positive(static_cast<double>(options.tokens_per_step), "tokens per step");
  require_positive(options.network.intra_gbps, "intra-node bandwidth");
  require_positive(options.network.inter_gbps, "inter-node bandwidth");
  if (!(options.network.latency_us >= 0) || !std::isfinite(options.network.latency_us)) {
    throw UsageError("latency must be a non-negative number, got " +
                     std::to_string(options.network.latency_us));
  }
  if (options.kv_bytes_per_token < 0) {
    throw UsageError("KV bytes per token must not be negative, got " +
                     std::to_string(options.kv_bytes_per_token));
  }
  const int L = trace.layers();
  const int G = topology.gpus();
  const int P = topology.gpus_per_node();
  const double row_bytes = static_cast<double>(options.hidden) * options.dtype_bytes;
  const double per_step =
      static_cast<double>(options.tokens_per_step) / static_cast<double>(trace.tokens());
  const double alpha = options.network.latency_us * 1e-6;
  const double b_intra = bytes_per_second(options.network.intra_gbps);
  const double b_inter = bytes_per_second(options.network.inter_gbps);

  // One evaluator pass per scheme over all of that scheme's placements. Each scheme's transfers
  // (routing.hpp) land in gpu_traffic by link class: DeepEP normal mode's RDMA writes to the
  // relays as inter-node, the relays' NVLink forwards as intra-node; low-latency mode's
  // per-expert sends by where the expert's copy is.
  std::vector<ConfigurationResult> results(configurations.size());
  for (Scheme scheme :
       {Scheme::kBaseline, Scheme::kContextCoherent, Scheme::kDeepEP, Scheme::kDeepEPLowLatency}) {
    std::vector<const Placement*> placements;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < configurations.size(); ++i) {
      if (configurations[i].scheme != scheme) continue;
      placements.push_back(configurations[i].placement);
      index.push_back(i);
    }
    if (placements.empty()) continue;
    EvalOptions eo;
    eo.scheme = scheme;
    eo.sequence_length = options.sequence_length;
    eo.replica_choice =
        scheme == Scheme::kContextCoherent ? ReplicaChoice::kNearest : options.replica_choice;
    eo.gpu_traffic = true;
    eo.traffic = options.matrices;
    eo.threads = options.threads;
    std::vector<Metrics> metrics = evaluate_all(trace, placements, topology, eo);
    for (std::size_t j = 0; j < index.size(); ++j) {
      ConfigurationResult& r = results[index[j]];
      r.name = configurations[index[j]].name;
      r.placement_name = configurations[index[j]].placement_name;
      r.scheme = scheme;
      r.metrics = std::move(metrics[j]);
    }
  }

  // Every scheme's all-to-alls by the one α-β formula (simulate.hpp). For DeepEP normal mode it
  // is the two pipelined stages of csrc/kernels/internode.cu: max over GPUs of the per-GPU max
  // of the two link classes = max(busiest GPU's RDMA time, busiest GPU's NVLink time), the
  // NVLink side holding both the owner's direct sends and the relays' forwards.
  for (ConfigurationResult& r : results) {
    const std::vector<std::int64_t>& v = r.metrics.gpu_traffic;  // [L, 2, G, 4]
    for (int l = 0; l < L; ++l) {
      for (int phase = 0; phase < 2; ++phase) {
        CollectiveTime c;
        double worst = 0;
        for (int g = 0; g < G; ++g) {
          const std::int64_t* t = v.data() + ((sz(l) * 2 + sz(phase)) * sz(G) + sz(g)) * 4;
          c.bytes += static_cast<double>(t[0] + t[1]) * row_bytes * per_step;
          const double intra = static_cast<double>(std::max(t[0], t[2])) * row_bytes * per_step;
          const double inter = static_cast<double>(std::max(t[1], t[3])) * row_bytes * per_step;
          const double time = std::max(intra / b_intra, inter / b_inter);
          if (time > worst) {
            worst = time;
            c.busiest_bytes = intra / b_intra >= inter / b_inter ? intra : inter;
          }
        }
        c.seconds = c.bytes > 0 ? alpha + worst : 0.0;
        (phase == 0 ? r.dispatch : r.combine).push_back(c);
        r.alltoall_bytes_per_step += c.bytes;
        r.alltoall_seconds_per_step += c.seconds;
      }
    }
    if (options.matrices) {
      r.bytes = r.metrics.traffic;
      for (std::int64_t& b : r.bytes) b *= static_cast<std::int64_t>(row_bytes);
    }
    if (r.scheme == Scheme::kContextCoherent && G > 1 && L > 1) {
      // Every token's keys and values of layers 1..L-1 reach the G - 1 other GPUs.
      const double gathered = static_cast<double>(options.tokens_per_step) * (L - 1) *
                              static_cast<double>(options.kv_bytes_per_token);
      r.allgather_bytes_per_step = gathered * (G - 1);
      const double intra = gathered * (P - 1) / G;
      const double inter = gathered * (G - P) / G;
      r.allgather_seconds_per_step =
          gathered > 0 ? alpha + std::max(intra / b_intra, inter / b_inter) : 0.0;
    }
    r.seconds_per_step = r.alltoall_seconds_per_step + r.allgather_seconds_per_step;
    r.seconds_per_token = r.seconds_per_step / static_cast<double>(options.tokens_per_step);
  }
  for (ConfigurationResult& r : results) {
    r.speedup = r.seconds_per_step > 0 ? results.front().seconds_per_step / r.seconds_per_step : 0;
  }
  return results;
}

const char* configuration_prefix(Scheme scheme) {
  return scheme == Scheme::kContextCoherent ? "exflow" : to_string(scheme);
}

std::vector<Configuration> scheme_configurations(const Placement& vanilla,
                                                 const std::vector<NamedPlacement>& placements) {
  std::vector<Configuration> configs;
  auto add = [&](Scheme scheme, const std::string& name, const Placement* p) {
    configs.push_back({std::string(configuration_prefix(scheme)) + "/" + name, scheme, p, name});
  };
  add(Scheme::kBaseline, "vanilla", &vanilla);
  add(Scheme::kContextCoherent, "vanilla", &vanilla);
  for (const NamedPlacement& p : placements) add(Scheme::kContextCoherent, p.name, p.placement);
  for (const NamedPlacement& p : placements) add(Scheme::kBaseline, p.name, p.placement);
  for (Scheme scheme : {Scheme::kDeepEP, Scheme::kDeepEPLowLatency}) {
    add(scheme, "vanilla", &vanilla);
    for (const NamedPlacement& p : placements) add(scheme, p.name, p.placement);
  }
  return configs;
}

std::size_t fastest(const std::vector<ConfigurationResult>& results) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < results.size(); ++i) {
    if (results[i].seconds_per_step < results[best].seconds_per_step) best = i;
  }
  return best;
}

}  // namespace exflow
