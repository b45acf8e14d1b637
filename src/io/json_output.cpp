// JSON forms of the library's results (include/exflow/json.hpp).
#include <string>

#include "exflow/json.hpp"

namespace exflow {

void to_json(nlohmann::json& j, const Trace& trace) {
  j = {{"path", trace.source()},
       {"tokens", trace.tokens()},
       {"layers", trace.layers()},
       {"experts", trace.experts()},
       {"k", trace.k()}};
}

void to_json(nlohmann::json& j, const Topology& topology) {
  j = {{"nodes", topology.nodes()},
       {"gpus_per_node", topology.gpus_per_node()},
       {"gpus", topology.gpus()},
       {"intra_cost", topology.intra_cost()},
       {"inter_cost", topology.inter_cost()}};
}

void to_json(nlohmann::json& j, const PhaseMetrics& p) {
  j = {{"cost", p.cost},
       {"intra", p.intra},
       {"inter", p.inter},
       {"per_layer",
        {{"cost", p.cost_per_layer}, {"intra", p.intra_per_layer}, {"inter", p.inter_per_layer}}}};
}

void to_json(nlohmann::json& j, const Metrics& m) {
  j = {{"scheme", to_string(m.scheme)},
       {"cost", m.cost},
       {"cintra", m.cintra},
       {"cinter", m.cinter},
       {"intra", m.intra},
       {"inter", m.inter},
       {"intra_transfers", m.intra_transfers},
       {"inter_transfers", m.inter_transfers},
       {"local_fraction", m.local_fraction},
       {"load_ratio_max", m.load_ratio_max},
       {"load_ratio_mean", m.load_ratio_mean},
       {"replicas", m.replicas},
       {"replica_assignments", m.replica_assignments},
       {"replica_share", m.replica_share},
       {"dispatch", m.dispatch},
       {"combine", m.combine},
       {"per_layer",
        {{"local_fraction", m.local_fraction_per_layer},
         {"cost", m.cost_per_layer},
         {"load_ratio", m.load_ratio_per_layer}}}};
}

void to_json(nlohmann::json& j, const Comparison& c) {
  const SchemeMetrics* primary = nullptr;
  for (const SchemeMetrics& s : c.schemes) {
    if (s.scheme == c.primary) primary = &s;
  }
  j = primary ? primary->placement : c.placement;
  j["baseline"] = c.placement_baseline;
  j["vanilla"] = primary ? primary->vanilla : c.vanilla;
  j["vanilla"]["baseline"] = c.vanilla_baseline;
  // Every scheme's totals for the placement and vanilla, side by side.
  const auto totals = [](const Metrics& m) {
    return nlohmann::json{{"cost", m.cost},
                          {"intra", m.intra},
                          {"inter", m.inter},
                          {"intra_transfers", m.intra_transfers},
                          {"inter_transfers", m.inter_transfers},
                          {"local_fraction", m.local_fraction},
                          {"load_ratio_max", m.load_ratio_max}};
  };
  nlohmann::json schemes = nlohmann::json::object();
  for (const SchemeMetrics& s : c.schemes) {
    schemes[to_string(s.scheme)] = {{"placement", totals(s.placement)},
                                    {"vanilla", totals(s.vanilla)}};
  }
  j["schemes"] = std::move(schemes);
}

void to_json(nlohmann::json& j, const PlanResult& r) {
  j = r.metrics ? nlohmann::json(*r.metrics) : nlohmann::json::object();
  auto optional = [](std::optional<double> v) { return v ? nlohmann::json(*v) : nullptr; };
  j["method"] = to_string(r.method);
  j["status"] = to_string(r.status);
  j["optimal"] = r.optimal;
  j["objective"] = r.objective;
  j["lower_bound"] = optional(r.lower_bound);
  j["gap"] = optional(r.gap);
  j["layers_over_load_limit"] = r.layers_over_load_limit;
  j["detail"] = r.detail;
  j["steps"] = r.steps;
  j["tokens_used"] = r.tokens_used;
  j["solve_seconds"] = r.solve_seconds;
  if (!r.moves_trajectory.empty() || !r.moves.empty()) {
    nlohmann::json moves = nlohmann::json::array();
    for (const SlotMove& m : r.moves) {
      moves.push_back(
          {{"layer", m.layer}, {"gpu", m.gpu}, {"removed", m.removed}, {"added", m.added}});
    }
    j["moved_slots"] = r.moves.size();
    j["moves"] = std::move(moves);
  }
}

void to_json(nlohmann::json& j, const AffinityProfile& p) {
  nlohmann::json pairs = nlohmann::json::array();
  for (std::size_t l = 0; l < p.pairs.size(); ++l) {
    pairs.push_back({{"layer", l},
                     {"top_successor_share", p.pairs[l].top_successor_share},
                     {"mutual_information_bits", p.pairs[l].mutual_information_bits}});
  }
  nlohmann::json loads = nlohmann::json::array();
  for (std::size_t l = 0; l < p.loads.size(); ++l) {
    loads.push_back({{"layer", l},
                     {"max_over_mean", p.loads[l].max_over_mean},
                     {"cv", p.loads[l].cv},
                     {"max", p.loads[l].max},
                     {"min", p.loads[l].min}});
  }
  j = {{"uniform_share", p.uniform_share},
       {"mean_top_successor_share", p.mean_top_successor_share},
       {"mean_mutual_information_bits", p.mean_mutual_information_bits},
       {"layer_pairs", pairs},
       {"expert_load", loads}};
}

nlohmann::json option_value_json(const PlanOptionSpec& spec, const PlanOptions& options) {
  const std::string text = spec.value(options);
  switch (spec.type) {
    case OptionType::kInt:
      if (!text.empty() && text[0] == '-') return std::stoll(text);
      return std::stoull(text);
    case OptionType::kFloat:
      return std::stod(text);
    case OptionType::kBool:
      return text == "true";
    case OptionType::kText:
    case OptionType::kWordOrNumber:
      return text;
  }
  return text;
}

nlohmann::json plan_options_json(const PlanOptions& options) {
  nlohmann::json j = nlohmann::json::object();
  for (const PlanOptionSpec& spec : plan_option_specs()) {
    j[spec.name] = option_value_json(spec, options);
  }
  return j;
}

}  // namespace exflow
