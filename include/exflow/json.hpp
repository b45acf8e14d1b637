// JSON forms of the library's results (nlohmann::json's to_json convention, so `json j = metrics`
// works). The keys are those of `exflow profile|eval|solve --json` and of the Python module's
// dictionaries; docs/cost-model.md defines each metric.
#pragma once

#include <nlohmann/json.hpp>

#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace exflow {

// {path, tokens, layers, experts, k}
void to_json(nlohmann::json& j, const Trace& trace);
// {nodes, gpus_per_node, gpus, intra_cost, inter_cost}
void to_json(nlohmann::json& j, const Topology& topology);
// {scheme, cost, cintra, cinter, intra, inter, intra_transfers, inter_transfers, local_fraction,
//  load_ratio_max, load_ratio_mean, replicas, replica_assignments, replica_share,
//  dispatch: PHASE, combine: PHASE, per_layer: {local_fraction, cost, load_ratio}}
// PHASE = {cost, intra, inter, per_layer: {cost, intra, inter}} (per token; [L] per layer)
void to_json(nlohmann::json& j, const Metrics& metrics);
// The placement's metrics under the primary scheme with "baseline" (its baseline-scheme
// metrics), "vanilla" (vanilla's, with its own "baseline") and "schemes" (every scheme's totals
// for the placement and vanilla).
void to_json(nlohmann::json& j, const Comparison& comparison);
// What plan() found: the Comparison's keys when there is one (trace input), plus method, status,
// optimal, objective, lower_bound and gap (null where no bound holds), layers_over_load_limit,
// detail, steps, tokens_used, solve_seconds.
void to_json(nlohmann::json& j, const PlanResult& result);
// {uniform_share, mean_top_successor_share, mean_mutual_information_bits, layer_pairs: [...],
//  expert_load: [...]}
void to_json(nlohmann::json& j, const AffinityProfile& profile);

// {"key": value} for every row of plan_option_specs(), typed by the row's OptionType.
nlohmann::json plan_options_json(const PlanOptions& options);
// One row's value, typed.
nlohmann::json option_value_json(const PlanOptionSpec& spec, const PlanOptions& options);

}  // namespace exflow
