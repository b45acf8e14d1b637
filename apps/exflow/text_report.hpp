// Human-readable renderings of traces, topologies, metrics and plans (the JSON forms are the
// library's, include/exflow/json.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow::cli {

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

// Every scheme's cost and cross-node transfers per token for the placement and vanilla, one row
// per scheme: what the placement buys in each engine.
std::string scheme_table(const Comparison& comparison);

// The lines a user reads first after a solve of a trace: method and time, cost against vanilla,
// both of ExFlow's savings (one all-to-all instead of two; the placement), the bound, load,
// replicas, and (incremental, bipart) the steps.
std::string solve_summary(const PlanResult& result, double seconds, std::int64_t tokens);

std::string profile_table(const AffinityProfile& profile, int experts);

}  // namespace exflow::cli
