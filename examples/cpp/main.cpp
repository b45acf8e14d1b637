// Places the experts of a tiny synthetic top-1 trace on 2 nodes x 2 GPUs with the installed
// exflow library, through its front door exflow::plan: the placement, vanilla's and both costs
// from the one evaluator. Prints "vanilla cost X solved cost Y (method, status)" and the
// placement's metrics as JSON; exits 0 if the solved placement is no worse than vanilla.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "exflow/json.hpp"
#include "exflow/plan.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

int main() {
  constexpr int kTokens = 64, kLayers = 4, kExperts = 8;
  // Token t keeps to one "path": its expert at layer l is a fixed shuffle of (t % 8), so
  // expert affinity between layers is perfect but invisible to the contiguous placement.
  std::vector<std::int32_t> ids;
  for (int t = 0; t < kTokens; ++t) {
    for (int l = 0; l < kLayers; ++l) ids.push_back(((t % kExperts) * (2 * l + 3) + l) % kExperts);
  }
  const exflow::Trace trace = exflow::Trace::from_ids(ids, kTokens, kLayers, 1, kExperts);
  const exflow::Topology topology(2, 2);  // 2 nodes of 2 GPUs; hop costs 1 and 2

  exflow::PlanOptions options;  // exflow solve's defaults
  options.threads = 1;
  const exflow::PlanResult r = exflow::plan(trace, topology, options);

  const double before = r.metrics->vanilla.cost;
  const double after = r.metrics->placement.cost;
  std::printf("vanilla cost %.4f solved cost %.4f (%s, %s)\n", before, after,
              exflow::to_string(r.method), exflow::to_string(r.status));
  std::printf("%s\n", nlohmann::json(r.metrics->placement).dump().c_str());
  return after <= before ? 0 : 1;
}
