#include "text_report.hpp"

#include <cmath>
#include <cstdio>
#include <functional>

namespace exflow::cli {
namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string pad_left(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

std::string pad_right(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

}  // namespace

std::string describe(const Trace& trace) {
  return trace.source() + ": " + std::to_string(trace.tokens()) + " tokens x " +
         std::to_string(trace.layers()) + " layers, " + std::to_string(trace.experts()) +
         " experts, top-" + std::to_string(trace.k());
}

std::string describe(const Topology& t) {
  return std::to_string(t.nodes()) + (t.nodes() == 1 ? " node" : " nodes") + " x " +
         std::to_string(t.gpus_per_node()) + " GPUs (hop cost " + fmt("%g", t.intra_cost()) +
         " within a node, " + fmt("%g", t.inter_cost()) + " across nodes)";
}

std::string format_fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string format_seconds(double seconds) {
  return fmt(seconds < 10 ? "%.3f s" : "%.1f s", seconds);
}

std::string scheme_table(const Comparison& c) {
  std::string out = pad_right("scheme", 18) + pad_left("cost", 12) + pad_left("vanilla", 12) +
                    pad_left("change", 10) + pad_left("inter/token", 14) + pad_left("vanilla", 12) +
                    "\n";
  for (const SchemeMetrics& s : c.schemes) {
    const double change =
        s.vanilla.cost > 0 ? 100.0 * (s.placement.cost - s.vanilla.cost) / s.vanilla.cost : 0.0;
    out += pad_right(std::string(to_string(s.scheme)) + (s.scheme == c.primary ? " *" : ""), 18) +
           pad_left(fmt("%.4f", s.placement.cost), 12) + pad_left(fmt("%.4f", s.vanilla.cost), 12) +
           pad_left(fmt("%+.1f%%", change), 10) + pad_left(fmt("%.4f", s.placement.inter), 14) +
           pad_left(fmt("%.4f", s.vanilla.inter), 12) + "\n";
  }
  return out;
}

std::string compare_metrics(const std::vector<std::string>& names,
                            const std::vector<const Metrics*>& metrics,
                            const std::vector<const Metrics*>& baseline) {
  struct Row {
    std::string label;
    std::function<double(const Metrics&)> get;
    const char* format;
    bool percent;
  };
  std::vector<Row> rows = {
      {"cost (weighted transfers per token)", [](const Metrics& m) { return m.cost; }, "%.4f",
       false},
      {"cross-GPU transfers per token", [](const Metrics& m) { return m.intra + m.inter; }, "%.4f",
       false},
      {"  within a node (intra)", [](const Metrics& m) { return m.intra; }, "%.4f", false},
      {"  across nodes (inter)", [](const Metrics& m) { return m.inter; }, "%.4f", false},
      {"cintra", [](const Metrics& m) { return m.cintra; }, "%.4f", false},
      {"cinter", [](const Metrics& m) { return m.cinter; }, "%.4f", false},
      {"transitions staying on their GPU", [](const Metrics& m) { return m.local_fraction; },
       "%.2f%%", true},
      {"GPU load ratio, worst layer", [](const Metrics& m) { return m.load_ratio_max; }, "%.3f",
       false},
      {"GPU load ratio, mean over layers", [](const Metrics& m) { return m.load_ratio_mean; },
       "%.3f", false},
      {"replica slots", [](const Metrics& m) { return static_cast<double>(m.replicas); }, "%.0f",
       false},
      {"assignments served by a replica", [](const Metrics& m) { return m.replica_share; },
       "%.2f%%", true},
  };
  const std::size_t coherent_rows = rows.size();
  if (!baseline.empty()) {
    rows.push_back(
        {"baseline (2 all-to-alls): cost", [](const Metrics& m) { return m.cost; }, "%.4f", false});
    rows.push_back({"baseline: cross-GPU transfers/token",
                    [](const Metrics& m) { return m.intra + m.inter; }, "%.4f", false});
    rows.push_back({"baseline: cross-node transfers/token",
                    [](const Metrics& m) { return m.inter; }, "%.4f", false});
  }
  constexpr std::size_t kLabel = 36, kCol = 14;
  std::string out = pad_right("", kLabel);
  for (const auto& n : names) out += pad_left(n, kCol);
  const bool change = metrics.size() > 1;
  if (change) out += pad_left("change", kCol);
  out += "\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const Row& row = rows[r];
    const auto& source = r < coherent_rows ? metrics : baseline;
    out += pad_right(row.label, kLabel);
    for (const Metrics* m : source) {
      double v = row.get(*m);
      out += pad_left(fmt(row.format, row.percent ? 100.0 * v : v), kCol);
    }
    if (change) {
      double a = row.get(*source.front());
      double b = row.get(*source.back());
      out += pad_left(b != 0 ? fmt("%+.1f%%", 100.0 * (a - b) / b) : (a == 0 ? "0" : "n/a"), kCol);
    }
    out += "\n";
  }
  return out;
}

std::string solve_summary(const PlanResult& r, double seconds, std::int64_t tokens) {
  const Metrics& solved = r.metrics->placement;
  const Metrics& vanilla = r.metrics->vanilla;
  const Metrics& vanilla_baseline = r.metrics->vanilla_baseline;
  const std::optional<double>& lower_bound = r.lower_bound;
  const std::int64_t tokens_used = r.tokens_used;
  auto fewer = [](double a, double b) {
    return b > 0 ? fmt("%.1f%%", 100.0 * (b - a) / b) : std::string("n/a");
  };
  std::string out = std::string(to_string(r.method)) + " placement in " + format_seconds(seconds) +
                    (r.optimal && lower_bound ? " (proven optimal)" : "") + ": " + r.detail + "\n";
  out += "  cost " + fmt("%.4f", solved.cost) + " vs vanilla " + fmt("%.4f", vanilla.cost) + ": " +
         fewer(solved.cost, vanilla.cost) + " lower\n";
  out += "  cross-GPU transfers per token " + fmt("%.4f", solved.intra + solved.inter) + " vs " +
         fmt("%.4f", vanilla.intra + vanilla.inter) + " (" +
         fewer(solved.intra + solved.inter, vanilla.intra + vanilla.inter) + " fewer)";
  if (solved.inter > 0 || vanilla.inter > 0) {
    out += "; cross-node " + fmt("%.4f", solved.inter) + " vs " + fmt("%.4f", vanilla.inter) +
           " (" + fewer(solved.inter, vanilla.inter) + " fewer)";
  }
  out += "\n";
  if (lower_bound) {
    out +=
        "  lower bound " + fmt("%.4f", *lower_bound) + ", gap " +
        fmt("%.2f%%", solved.cost > 0 ? 100.0 * (solved.cost - *lower_bound) / solved.cost : 0.0) +
        "\n";
  } else {
    out +=
        "  lower bound: not available (top-k trace or replicas; the bound is on pairwise "
        "transitions)\n";
  }
  out += "  DeepSpeed-MoE baseline (2 all-to-alls, vanilla) " + fmt("%.4f", vanilla_baseline.cost) +
         " -> context-coherent vanilla " + fmt("%.4f", vanilla.cost) + " (" +
         fewer(vanilla.cost, vanilla_baseline.cost) + " lower) -> with this placement " +
         fmt("%.4f", solved.cost) + " (" + fewer(solved.cost, vanilla_baseline.cost) +
         " lower in all)\n";
  out += "  GPU load ratio worst layer " + fmt("%.3f", solved.load_ratio_max) + " (vanilla " +
         fmt("%.3f", vanilla.load_ratio_max) + "), mean " + fmt("%.3f", solved.load_ratio_mean) +
         " (vanilla " + fmt("%.3f", vanilla.load_ratio_mean) + ")\n";
  if (r.layers_over_load_limit > 0) {
    out += "  warning: the load limit is exceeded on " + std::to_string(r.layers_over_load_limit) +
           " layers (see above)\n";
  }
  if (solved.replicas > 0) {
    out += "  " + std::to_string(solved.replicas) + " replica slots serve " +
           fmt("%.2f%%", 100.0 * solved.replica_share) + " of token-expert assignments\n";
  }
  if (tokens_used < tokens) {
    out += "  profiled on the first " + std::to_string(tokens_used) + " of " +
           std::to_string(tokens) + " tokens\n";
  }
  for (const auto& step : r.steps) out += "  step: " + step + "\n";
  return out;
}

std::string profile_table(const AffinityProfile& p, int experts) {
  std::string out =
      "layer pair   top-successor share   (no affinity: " + fmt("%.4f", p.uniform_share) +
      ")   mutual information (bits, max " + fmt("%.2f", std::log2(static_cast<double>(experts))) +
      ")\n";
  for (std::size_t l = 0; l < p.pairs.size(); ++l) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%4zu -> %-4zu %12.4f  (%5.1fx chance) %24.3f\n", l, l + 1,
                  p.pairs[l].top_successor_share, p.pairs[l].top_successor_share / p.uniform_share,
                  p.pairs[l].mutual_information_bits);
    out += buf;
  }
  out += "mean         " + fmt("%12.4f", p.mean_top_successor_share) + "  (" +
         fmt("%5.1f", p.mean_top_successor_share / p.uniform_share) + "x chance) " +
         fmt("%24.3f", p.mean_mutual_information_bits) + "\n\n";
  out += "layer   hottest expert / mean load   load CV   max tokens   min tokens\n";
  for (std::size_t l = 0; l < p.loads.size(); ++l) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%5zu %28.3f %9.3f %12lld %12lld\n", l, p.loads[l].max_over_mean,
                  p.loads[l].cv, static_cast<long long>(p.loads[l].max),
                  static_cast<long long>(p.loads[l].min));
    out += buf;
  }
  return out;
}

}  // namespace exflow::cli
