// Load-only placement of one layer: spread experts with known token loads over GPUs so that the
// busiest GPU serves as few token-expert assignments as possible (src/solve/load_balance.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace exflow::solvers {

// load: [experts] token-expert assignments of each expert. Returns the GPU of each expert
// ([experts]) with exactly per_gpu experts on each of `gpus` GPUs (experts = gpus * per_gpu).
// Largest-first greedy followed by pairwise swaps that lower the busiest GPU.
std::vector<int> balance_layer(const std::int64_t* load, int experts, int gpus, int per_gpu);
// The same with capacity[g] experts on GPU g ([gpus], summing to experts).
std::vector<int> balance_layer(const std::int64_t* load, int experts,
                               const std::vector<int>& capacity);

// The busiest GPU's load for a layer's assignment gpu_of [experts].
std::int64_t max_gpu_load(const std::int64_t* load, const int* gpu_of, int experts, int gpus);

// Copies of one layer with redundant slots, as DeepSeek's EPLB makes them: `replicas` extra
// copies go one at a time to the expert with the highest load per copy; the copies (each
// carrying load / copies) are then packed largest first onto the GPU with the least load among
// those with a free slot and no copy of that expert. Returns, per GPU, the experts it hosts
// ([gpus] lists of (experts + replicas) / gpus experts; the experts need not divide over the
// GPUs, the slots must).
std::vector<std::vector<int>> balance_layer_with_replicas(const std::int64_t* load, int experts,
                                                          int gpus, int replicas);

}  // namespace exflow::solvers
