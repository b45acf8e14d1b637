// Human-readable and JSON renderings of traces, topologies and metrics.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow::cli {

nlohmann::json trace_json(const Trace& trace);
nlohmann::json topology_json(const Topology& topology);
// The metric keys shared by eval and solve (cost, cintra, cinter, intra, inter,
// local_fraction, load_ratio_max, load_ratio_mean, ...) plus per-layer arrays.
nlohmann::json metrics_json(const Metrics& metrics);
nlohmann::json profile_json(const AffinityProfile& profile);

std::string describe(const Trace& trace);
std::string describe(const Topology& topology);

// "0.042 s", "12.3 s".
std::string format_seconds(double seconds);

// v with `digits` decimals ("%.*f").
std::string format_fixed(double v, int digits);

// A table comparing metrics column by column; the last column is the reference and a
// "change" column gives the first column's relative change against it. `baseline` (empty or
// one per column) adds the same placements' costs under the two-all-to-all baseline scheme.
std::string compare_metrics(const std::vector<std::string>& names,
                            const std::vector<const Metrics*>& metrics,
                            const std::vector<const Metrics*>& baseline = {});

// The lines a user reads first after a solve: method and time, cost against vanilla, both of
// ExFlow's savings (one all-to-all instead of two; the placement), the bound, load, replicas,
// and (incremental, bipart) the steps.
std::string solve_summary(const SolveResult& result, const Metrics& solved, const Metrics& vanilla,
                          const Metrics& vanilla_baseline, std::optional<double> lower_bound,
                          double seconds, std::int64_t tokens_used, std::int64_t tokens);

std::string profile_table(const AffinityProfile& profile, int experts);

}  // namespace exflow::cli
