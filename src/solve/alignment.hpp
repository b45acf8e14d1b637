// Exact alignment of two consecutive layers' GPU groups under hierarchical hop costs.
//
// Relabelling GPUs by a topology automorphism (permuting nodes, and GPUs within a node) in
// every layer from l + 1 on changes only the cost between layers l and l + 1. So for fixed
// groupings of two consecutive layers, the best relative labelling can be chosen per layer
// pair: with flow[a][b] the tokens from group a of layer l to group b of layer l + 1, the
// pair costs c2 * total - (c2 - c1) * (tokens kept on a node) - c1 * (tokens kept on a GPU).
// The best labelling is a node-level assignment whose weights fold in the best GPU matching
// within each node pair.
#pragma once

#include <vector>

namespace exflow::solvers {

struct GroupLayout {
  int nodes = 1;
  int gpus_per_node = 1;
  double intra_cost = 1;
  double inter_cost = 2;
  int gpus() const { return nodes * gpus_per_node; }
};

struct Alignment {
  std::vector<int> gpu_of_group;  // [G]: the GPU label given to each group of layer l + 1
  double saved = 0;               // (c2 - c1) * node-kept + c1 * GPU-kept tokens
};

// flow is [G, G] row-major: flow[a * G + b] tokens from the group on GPU a (layer l, already
// labelled) to group b of layer l + 1 (groups b are numbered node-major: group b belongs to
// node-slot b / P). Returns the labelling of layer l + 1's groups that maximises `saved`;
// the pair's cost is inter_cost * total_flow - saved.
Alignment align_groups(const std::vector<double>& flow, const GroupLayout& layout);

}  // namespace exflow::solvers
