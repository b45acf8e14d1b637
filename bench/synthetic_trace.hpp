// Synthetic routing traces with inter-layer affinity, streamed to .npy.
//
// Each layer pair has a fixed random permutation `successor`. A token's column-0 expert is
// uniform at layer 0; at each next layer it moves to the successor of its current expert with
// probability `follow`, else to a uniform expert. Columns 1..k-1 do the same along their own
// chains (a uniform expert at layer 0), redrawn uniformly where they would repeat an expert of
// the token's layer. Deterministic for a seed on every platform.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace exflow::bench {

struct SyntheticTraceSpec {
  std::int64_t tokens = 0;
  int layers = 0;
  int experts = 0;
  int k = 1;
  double follow = 0.6;
  std::uint64_t seed = 1;
};

// Writes a C-order '<i2' array [tokens, layers] (k = 1) or [tokens, layers, k]. Memory is
// O(layers * experts), whatever the token count. Throws std::runtime_error on I/O failure.
void write_synthetic_trace(const std::string& path, const SyntheticTraceSpec& spec);

// The trace's successor permutations, [layers - 1, experts]: successor[l * E + e] is the
// expert of layer l + 1 that follows expert e of layer l.
std::vector<int> synthetic_successors(const SyntheticTraceSpec& spec);

// The planted placement: layer 0 contiguous, and at every next layer the successor of each
// expert on that expert's GPU, so that every token following its chain never moves.
// `gpus` must divide `experts`.
std::vector<int> planted_placement(const SyntheticTraceSpec& spec, int gpus);

// Size in bytes of the file write_synthetic_trace produces.
std::uint64_t synthetic_trace_bytes(const SyntheticTraceSpec& spec);

}  // namespace exflow::bench
