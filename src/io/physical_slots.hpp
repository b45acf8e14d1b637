// Physical slots of a placement, the layout the serving engines' maps share (SGLang's
// physical_to_logical_map, EPLB's phy2log, vllm-ascend's device lists): G GPUs of S slots each,
// numbered GPU-major (GPU g owns slots g*S ... (g+1)*S - 1).
#pragma once

#include <string>
#include <vector>

#include "exflow/placement.hpp"

namespace exflow::io {

// slots[l][g] = GPU g's logical experts of layer l, ascending (an expert with two slots on the
// GPU twice). Throws UsageError for a GPU id out of range, unless every GPU of every layer holds
// the same number of copies.
std::vector<std::vector<std::vector<int>>> physical_layout(const Placement& p);

// The placement of phy2log [layers, slots] (logical expert of each slot). `where` prefixes
// messages (e.g. "file.json: "). experts 0: the largest id + 1. The slots must divide among the
// GPUs and every expert 0..E-1 have a slot in every layer; an expert's lowest slot becomes its
// gpu_of entry, its others copies (two on one GPU kept as they are). Throws InputError naming the
// layer and slot or expert at fault.
Placement placement_from_phy2log(const std::vector<int>& phy2log, int layers, int slots, int gpus,
                                 int experts, const std::string& where);

}  // namespace exflow::io
