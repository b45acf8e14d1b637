// Interchange with MoE serving stacks (SGLang, DeepSeek EPLB, vllm-ascend) and their routing logs.
//
// Physical slots. A serving framework with expert parallelism holds S expert copies ("physical
// experts") per GPU, G*S = E + R (R redundant slots in all, so the slots, not the experts, divide
// over the GPUs), and numbers them GPU-major: GPU g owns physical slots g*S ... (g+1)*S - 1.
// exflow lists one GPU's logical experts in ascending id order within its slots. Every layer has
// the same number of slots G*S. An expert may fill two slots of one GPU (upstream EPLB does).
//
// Decoder layers. The engines index their maps by decoder layer (SGLang: one row per
// config.num_hidden_layers), exflow's placements by MoE layer. DecoderLayers says which decoder
// layers are dense (no routed experts): writers add a complete row for each (the trivial map,
// slot s -> expert s mod E), readers drop them.
//
// Every reader throws InputError (one line: file, where, which value) for malformed contents,
// IoError for a file it cannot open, UsageError for inconsistent arguments; writers write
// atomically (the old file or the complete new one) and throw UsageError for a placement the
// format cannot express. The exact file layouts are in docs/formats.md.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/placement.hpp"

namespace exflow {

// The decoder layers of a model, given by its dense ones (ascending, distinct, >= 0). Empty: every
// decoder layer is a MoE layer.
struct DecoderLayers {
  std::vector<int> dense;

  // moe_layers + the dense layers. Throws UsageError if a dense layer is not below that.
  int total(int moe_layers) const;
  // The decoder layer of each MoE layer: [moe_layers], ascending.
  std::vector<int> moe_layer_ids(int moe_layers) const;
  bool empty() const { return dense.empty(); }
};

// `--dense-layers`: "N" (the first N decoder layers, as DeepSeek's first_k_dense_replace), a list
// "a,b,c" of decoder layers (one layer: "a,"), or a model preset's name (deepseek-v2-lite: 1,
// deepseek-v3: 3, the others 0). Throws UsageError naming the text.
DecoderLayers parse_dense_layers(const std::string& text);

// Width of EPLB's log2phy: the most copies any expert has (SGLang, deepseek-ai/EPLB), or the
// redundant slots + 1 (vLLM's EPLB policies).
enum class EplbPadding { kMaxCopies, kRedundantPlusOne };

// ---------------------------------------------------------------------------------------------
// SGLang --init-expert-location: {"physical_to_logical_map": [[logical id of each slot], ...]},
// one list per layer.

// Throws UsageError unless every GPU of a layer holds the same number of copies and every
// layer the same number of slots.
void write_sglang_expert_location(const std::string& path, const Placement& placement,
                                  const DecoderLayers& layers = {});

// A placement file in any format exflow reads, by extension: .json holds SGLang's expert location
// (physical_to_logical_map), vllm-ascend's expert map (moe_layer_count or layer_list) or EPLB's
// maps (phy2log), anything else the original tool's CSV.
// `decoder` maps the JSON formats' rows to MoE layers. Throws InputError if its layers or experts
// differ from `layers` and `experts`.
Placement read_placement_file(const std::string& path, int layers, int experts, int gpus,
                              const DecoderLayers& decoder = {});

// `gpus`: the EP size G. `experts`: E, or 0 for the largest id in the file + 1. Every layer must
// have the same number of slots, a multiple of G; every expert 0..E-1 at least one slot per
// layer; no GPU two slots of one expert. An expert's first slot becomes its gpu_of entry,
// further slots replicas.
Placement read_sglang_expert_location(const std::string& path, int gpus, int experts = 0,
                                      const DecoderLayers& layers = {});

// ---------------------------------------------------------------------------------------------
// DeepSeek EPLB's maps, physical slots numbered as above:
//   phy2log [L, slots]            logical expert of each slot
//   log2phy [L, E, max_replicas]  slots of each logical expert, ascending, padded with -1
//   logcnt  [L, E]                copies of each logical expert
struct EplbMaps {
  int layers = 0;
  int experts = 0;
  int slots = 0;         // physical slots per layer, G * S
  int max_replicas = 0;  // most copies of any expert of any layer (>= 1)
  std::vector<int> phy2log;
  std::vector<int> log2phy;
  std::vector<int> logcnt;
};

// Throws UsageError as write_sglang_expert_location does.
EplbMaps eplb_maps(const Placement& placement, const DecoderLayers& layers = {},
                   EplbPadding padding = EplbPadding::kMaxCopies);

// The inverse: builds the placement from phy2log and checks log2phy and logcnt against it
// (either may be left empty to skip its check; log2phy's width may be any max_replicas at least
// the largest copy count, its valid entries in any order). experts 0: the largest id in phy2log
// + 1. Throws InputError naming `what`, the layer and the slot or expert at fault.
Placement placement_from_eplb_maps(const EplbMaps& maps, int gpus,
                                   const std::string& what = "EPLB maps",
                                   const DecoderLayers& layers = {});

// JSON {"phy2log": ..., "log2phy": ..., "logcnt": ...}.
void write_eplb_maps(const std::string& path, const Placement& placement,
                     const DecoderLayers& layers = {},
                     EplbPadding padding = EplbPadding::kMaxCopies);

// Reads phy2log (required) and checks log2phy and logcnt when present. E is the width of logcnt,
// else of log2phy, else the largest id in phy2log + 1.
Placement read_eplb_maps(const std::string& path, int gpus, const DecoderLayers& layers = {});

// ---------------------------------------------------------------------------------------------
// vllm-ascend's static expert map (eplb_config.expert_map_path): {"moe_layer_count": L,
// "layer_list": [{"layer_id": l, "device_count": G, "device_list": [{"device_id": g,
// "device_expert": [logical expert of each local slot]}, ...]}, ...]}. Layers are MoE layers
// (vllm-ascend counts its MoE layers, dense decoder layers have no entry), so `layers` only has
// its dense ids checked (UsageError if one is not below the decoder layer count).

// Throws UsageError as write_sglang_expert_location does, and for an expert with two slots on one
// GPU (vllm-ascend maps an expert to at most one local slot per device).
void write_vllm_ascend_expert_map(const std::string& path, const Placement& placement,
                                  const DecoderLayers& layers = {});

// `gpus`: the devices every layer must list. `experts`: E, or 0 for the largest id + 1. The
// devices' lists, concatenated in device order, are read as SGLang's physical_to_logical_map
// rows; every device of every layer must list the same number of experts, none twice.
Placement read_vllm_ascend_expert_map(const std::string& path, int gpus, int experts = 0,
                                      const DecoderLayers& layers = {});

// ---------------------------------------------------------------------------------------------
// Per-layer expert load counts (for load-only balancing).
struct ExpertLoads {
  int layers = 0;
  int experts = 0;
  std::vector<std::int64_t> counts;  // [layers, experts]
  std::int64_t count(int layer, int expert) const {
    return counts[static_cast<std::size_t>(layer) * experts + expert];
  }
};

// By extension (case-insensitive): .json holds {"logical_count": A} (SGLang's recorder) or a bare
// A; .npy holds an integer array A. A is [layers][experts], or [steps][layers][experts] summed
// over steps. Counts must be non-negative integers. Any other extension: UsageError.
ExpertLoads read_expert_loads(const std::string& path);

// The rows of `loads` that are MoE layers, for loads counted per decoder layer as SGLang counts
// them. Throws InputError naming `what` unless loads has layers.total(moe layers) rows.
ExpertLoads moe_rows(const ExpertLoads& loads, const DecoderLayers& layers,
                     const std::string& what);

// ---------------------------------------------------------------------------------------------
// Inter-layer affinity from an integer .npy count tensor [L-1, E, E]: entry [l][i][j] counts
// (expert i at layer l, expert j at layer l+1) pairs of a top-k trace, k*k pairs per token and
// layer pair. Every layer pair must hold the same total. Loads are the row sums / k (layers
// 0..L-2) and the last matrix's column sums / k (layer L-1); tokens = total / (k*k), all by
// integer division (a count tensor not made from a top-k trace is still accepted).
AffinityGraph read_affinity_counts(const std::string& path, int k = 1);

// ---------------------------------------------------------------------------------------------
// JSONL routing log -> trace .npy. One JSON object per line:
//   {"layer": l, "topk_ids": [e0, e1, ...], "token": t}
// "token" is optional: without it, the i-th row of layer l is token i. Blank lines are skipped.
// Layers must be 0..L-1 with none missing, every layer the same number of rows (tokens), each
// token exactly once per layer, every row the same k (1..64), ids 0 <= id < 65536 (-1, SGLang's
// padding, is rejected). Writes int16 ("<i2") when every id < 32768, else int32, shape [T, L]
// for k = 1 and [T, L, k] otherwise, C order, atomically. Errors name the line.
struct ConvertResult {
  std::int64_t tokens = 0;
  int layers = 0;
  int k = 0;
  std::string dtype;  // "<i2" or "<i4"
};

// in_path "-" reads standard input.
ConvertResult convert_jsonl_to_npy(const std::string& in_path, const std::string& out_path);
// From a stream; `name` names it in messages.
ConvertResult convert_jsonl_to_npy(std::istream& in, const std::string& name,
                                   const std::string& out_path);

}  // namespace exflow
