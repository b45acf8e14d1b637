// DeepSeek's expert-parallelism load balancer (EPLB, github.com/deepseek-ai/EPLB, eplb.py) as a
// placement method: per layer, replicate the hottest experts into the redundant slots and pack
// the copies onto GPUs so that every GPU serves about the same load, with expert groups kept on
// one node where the groups divide over the nodes. No affinity between layers is used.
//
// Shapes (C order):
//   weight   [layers, experts]        load of each logical expert
//   phy2log  [layers, num_replicas]   logical expert of each physical slot, GPU-major: GPU g owns
//                                     slots g*S ... (g+1)*S - 1, S = num_replicas / num_gpus
//   log2phy  [layers, experts, X]     slots of each logical expert in replica-rank order, padded
//                                     with -1; X = the most copies of any expert of any layer
//   logcnt   [layers, experts]        copies of each logical expert
//
// The result is upstream's rebalance_experts on the same input, ties included (upstream computes
// in float32: the loads are rounded to float, and group sums agree whenever they are exact in
// float, as integer loads below 2^24 are).
#pragma once

#include <cstdint>
#include <vector>

#include "exflow/formats.hpp"

namespace exflow {

// The policy upstream picks: hierarchical (groups packed onto nodes, then replicas within each
// node, then copies onto the node's GPUs) when num_nodes divides num_groups, else global (the
// hierarchical policy with one group and one node).
bool eplb_is_hierarchical(int num_groups, int num_nodes);

// num_replicas: physical slots per layer (experts + redundant), a multiple of num_gpus;
// num_gpus a multiple of num_nodes; num_groups >= 1 dividing `experts` for the hierarchical
// policy. Throws UsageError (one line) for shapes upstream would refuse, a weight of the wrong
// size or a load that is negative or not finite.
EplbMaps rebalance_experts(const std::vector<double>& weight, int layers, int experts,
                           int num_replicas, int num_groups, int num_nodes, int num_gpus);
EplbMaps rebalance_experts(const std::vector<std::int64_t>& weight, int layers, int experts,
                           int num_replicas, int num_groups, int num_nodes, int num_gpus);

}  // namespace exflow
