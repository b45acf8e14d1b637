#include "synthetic_trace.hpp"

#include <algorithm>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "core/splitmix64.hpp"
#include "io/npy.hpp"

namespace exflow::bench {
namespace {

using Rng = SplitMix64;

std::vector<std::int64_t> shape_of(const SyntheticTraceSpec& s) {
  if (s.k == 1) return {s.tokens, s.layers};
  return {s.tokens, s.layers, s.k};
}

// The header encode_npy writes for this shape (its data part is empty here).
std::string header_of(const SyntheticTraceSpec& s) {
  std::string bytes = io::encode_npy({}, shape_of(s), "<i2");
  return bytes;
}

// Draws the successor permutations; the generator then continues with the tokens.
std::vector<int> draw_successors(Rng& rng, const SyntheticTraceSpec& s) {
  const int E = s.experts;
  std::vector<int> successor(static_cast<std::size_t>(std::max(0, s.layers - 1)) * E);
  for (int l = 0; l + 1 < s.layers; ++l) {
    int* perm = successor.data() + static_cast<std::size_t>(l) * E;
    std::iota(perm, perm + E, 0);
    for (int i = E - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
  }
  return successor;
}

}  // namespace

std::vector<int> synthetic_successors(const SyntheticTraceSpec& spec) {
  Rng rng(spec.seed);
  return draw_successors(rng, spec);
}

std::vector<int> planted_placement(const SyntheticTraceSpec& spec, int gpus) {
  const int E = spec.experts;
  if (gpus < 1 || E % gpus != 0)
    throw std::runtime_error("planted placement: GPUs must divide experts");
  const std::vector<int> successor = synthetic_successors(spec);
  std::vector<int> gpu_of(static_cast<std::size_t>(spec.layers) * E);
  for (int e = 0; e < E; ++e) gpu_of[static_cast<std::size_t>(e)] = e / (E / gpus);
  for (int l = 0; l + 1 < spec.layers; ++l) {
    for (int e = 0; e < E; ++e) {
      const int next = successor[static_cast<std::size_t>(l) * E + e];
      gpu_of[static_cast<std::size_t>(l + 1) * E + next] =
          gpu_of[static_cast<std::size_t>(l) * E + e];
    }
  }
  return gpu_of;
}

std::uint64_t synthetic_trace_bytes(const SyntheticTraceSpec& s) {
  return header_of(s).size() + static_cast<std::uint64_t>(s.tokens) * s.layers * s.k * 2;
}

void write_synthetic_trace(const std::string& path, const SyntheticTraceSpec& s) {
  if (s.tokens < 1 || s.layers < 1 || s.experts < s.k || s.k < 1 || s.experts > 32767) {
    throw std::runtime_error("synthetic trace: bad shape");
  }
  Rng rng(s.seed);
  const int E = s.experts;
  const std::vector<int> successor = draw_successors(rng, s);
  const auto threshold = static_cast<std::uint64_t>(s.follow * 4294967296.0);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot create");
  const std::string header = header_of(s);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  constexpr std::int64_t kChunkTokens = 16384;
  std::vector<char> chunk(static_cast<std::size_t>(kChunkTokens) * s.layers * s.k * 2);
  std::vector<int> row(static_cast<std::size_t>(s.k));
  for (std::int64_t begin = 0; begin < s.tokens; begin += kChunkTokens) {
    const std::int64_t n = std::min(kChunkTokens, s.tokens - begin);
    char* p = chunk.data();
    for (std::int64_t t = 0; t < n; ++t) {
      int e = rng.below(E);
      for (int l = 0; l < s.layers; ++l) {
        if (l > 0) {
          const std::uint64_t r = rng.next();
          e = (r & 0xffffffffULL) < threshold ? successor[static_cast<std::size_t>(l - 1) * E + e]
                                              : static_cast<int>(((r >> 32) * E) >> 32);
        }
        row[0] = e;
        // Further columns follow their own chains (the successor of the column's expert at the
        // previous layer) with the same probability, else a random expert, always distinct.
        for (int c = 1; c < s.k; ++c) {
          int x = -1;
          if (l > 0) {
            const std::uint64_t r = rng.next();
            if ((r & 0xffffffffULL) < threshold) {
              x = successor[static_cast<std::size_t>(l - 1) * E + row[static_cast<std::size_t>(c)]];
            }
          }
          while (x < 0 || std::find(row.begin(), row.begin() + c, x) != row.begin() + c) {
            x = rng.below(E);
          }
          row[static_cast<std::size_t>(c)] = x;
        }
        for (int x : row) {
          *p++ = static_cast<char>(x & 0xff);
          *p++ = static_cast<char>(x >> 8);
        }
      }
    }
    out.write(chunk.data(), p - chunk.data());
  }
  out.close();
  if (!out) throw std::runtime_error(path + ": write failed");
}

}  // namespace exflow::bench
