// Places the experts of a tiny synthetic top-1 trace on 2 nodes x 2 GPUs with the installed
// exflow library: the contiguous (vanilla) placement against the solver's, both scored by the
// evaluator. Prints one line, "vanilla cost X solved cost Y", and exits 0 if the solved
// placement is no worse.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/solve.hpp"
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

  const exflow::Placement vanilla = exflow::vanilla_placement(kLayers, kExperts, topology);
  const exflow::AffinityGraph graph = exflow::AffinityGraph::from_trace(trace, 1);
  exflow::SolveOptions options;
  options.threads = 1;
  const exflow::SolveResult solved = exflow::solve(graph, topology, options);

  const double before = exflow::evaluate(trace, vanilla, topology).cost;
  const double after = exflow::evaluate(trace, solved.placement, topology).cost;
  std::printf("vanilla cost %.4f solved cost %.4f (%s)\n", before, after,
              exflow::to_string(solved.method));
  return after <= before ? 0 : 1;
}
