// Seeded mutation tests, one per reader: valid inputs with bits flipped, bytes inserted, ranges
// cut or duplicated and deep nesting spliced in. Every read must either succeed or throw an
// exflow::Error whose message is one non-empty line of printable ASCII; any other exception, a
// crash or a hang fails. The seed is fixed and the iterations bounded (about a second each in
// Release).
#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/splitmix64.hpp"
#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/placement.hpp"
#include "exflow/trace.hpp"
#include "io/npy.hpp"
#include "support/test_support.hpp"

namespace exflow {
namespace {

using test::TempDir;
using test::write_bytes;

constexpr int kIterations = 250;

// One to three random edits of `seed`.
std::string mutate(const std::string& seed, SplitMix64& rng) {
  std::string s = seed;
  static const std::string kInteresting = "0123456789-+.eE,[]{}\"':\r\n\t \x00\xff\x80\\";
  const int edits = 1 + rng.below(3);
  for (int i = 0; i < edits; ++i) {
    const int n = static_cast<int>(s.size());
    const int at = n == 0 ? 0 : rng.below(n);
    switch (rng.below(8)) {
      case 0:  // flip a bit
        if (n > 0) s[static_cast<std::size_t>(at)] ^= static_cast<char>(1 << rng.below(8));
        break;
      case 1:  // truncate
        s.resize(static_cast<std::size_t>(at));
        break;
      case 2:  // insert a random byte
        s.insert(s.begin() + at, static_cast<char>(rng.below(256)));
        break;
      case 3:  // insert a byte parsers care about
        s.insert(s.begin() + at, kInteresting[static_cast<std::size_t>(
                                     rng.below(static_cast<int>(kInteresting.size())))]);
        break;
      case 4: {  // duplicate a chunk
        const int len = 1 + rng.below(std::max(1, std::min(64, n - at)));
        if (n > 0)
          s.insert(static_cast<std::size_t>(at),
                   s.substr(static_cast<std::size_t>(at), static_cast<std::size_t>(len)));
        break;
      }
      case 5: {  // delete a chunk
        const int len = 1 + rng.below(16);
        if (n > 0) s.erase(static_cast<std::size_t>(at), static_cast<std::size_t>(len));
        break;
      }
      case 6: {  // deep nesting
        const std::size_t depth = 1 + static_cast<std::size_t>(rng.below(100000));
        const char open = rng.below(2) == 0 ? '[' : '{';
        s.insert(static_cast<std::size_t>(at), std::string(depth, open));
        break;
      }
      default:  // overwrite with a digit run (sizes, ids, counts out of range)
        s.replace(static_cast<std::size_t>(at), 1, std::string(1 + rng.below(24), '9'));
        break;
    }
  }
  return s;
}

// Reads `seed`, then kIterations mutations of it, written to `path`, with `read`.
void fuzz(const std::string& path, const std::string& seed, std::uint64_t stream,
          const std::function<void()>& read) {
  write_bytes(path, seed);
  ASSERT_NO_THROW(read()) << "the unmutated input must read";
  SplitMix64 rng(0x5eed0000 + stream);
  int refused = 0;
  for (int i = 0; i < kIterations; ++i) {
    const std::string input = mutate(seed, rng);
    write_bytes(path, input);
    try {
      read();
    } catch (const Error& e) {
      ++refused;
      const std::string m = e.what();
      ASSERT_FALSE(m.empty()) << "iteration " << i;
      for (char c : m) {
        const auto u = static_cast<unsigned char>(c);
        ASSERT_TRUE(u >= 0x20 && u < 0x7f)
            << "iteration " << i << ": byte " << static_cast<int>(u) << " in " << m;
      }
      ASSERT_LE(m.size(), 600u) << "iteration " << i << ": " << m.substr(0, 300);
    } catch (const std::exception& e) {
      FAIL() << "iteration " << i << ": not an exflow::Error: " << e.what();
    }
  }
  EXPECT_GT(refused, 0);
}

std::string trace_npy(const std::string& descr, bool fortran) {
  std::vector<std::int64_t> ids;
  for (int t = 0; t < 12; ++t) {
    for (int l = 0; l < 3; ++l) {
      for (int c = 0; c < 2; ++c) ids.push_back((t + l + 3 * c) % 8);
    }
  }
  return io::encode_npy(ids, {12, 3, 2}, descr, fortran);
}

TEST(ReadersFuzz, TraceNpy) {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  fuzz(path, trace_npy("<i2", false), 1, [&] { Trace::open(path); });
  fuzz(path, trace_npy(">u4", true), 2, [&] { Trace::open(path); });
}

TEST(ReadersFuzz, PlacementCsv) {
  TempDir dir;
  const std::string path = dir.file("p.csv");
  std::string csv = "Expert,Node\r\n";
  for (int i = 0; i < 16; ++i) csv += std::to_string(i) + "," + std::to_string(i % 4 / 2) + "\r\n";
  csv += "3,1\n";
  fuzz(path, csv, 3, [&] { read_placement_csv(path, 2, 8, 2); });
}

// A 2-layer, 8-expert placement on 2 GPUs with one replica per GPU.
Placement small_placement() {
  Placement p(2, 8, 2, {0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 0});
  p.add_copy(0, 4, 0);
  p.add_copy(0, 0, 1);
  p.add_copy(1, 1, 1);
  p.add_copy(1, 0, 0);
  return p;
}

TEST(ReadersFuzz, PlacementJsonFormats) {
  TempDir dir;
  const std::string path = dir.file("p.json");
  const Placement p = small_placement();
  write_sglang_expert_location(path, p);
  const std::string sglang = test::read_bytes(path);
  write_vllm_ascend_expert_map(path, p);
  const std::string vllm = test::read_bytes(path);
  write_eplb_maps(path, p);
  const std::string eplb = test::read_bytes(path);
  const auto read_any = [&] { read_placement_file(path, 2, 8, 2); };
  fuzz(path, sglang, 4, read_any);
  fuzz(path, vllm, 5, read_any);
  fuzz(path, eplb, 6, read_any);
}

TEST(ReadersFuzz, EplbAndExpertLocationJson) {
  TempDir dir;
  const std::string path = dir.file("m.json");
  const Placement p = small_placement();
  write_eplb_maps(path, p);
  fuzz(path, test::read_bytes(path), 7, [&] { read_eplb_maps(path, 2); });
  write_sglang_expert_location(path, p);
  fuzz(path, test::read_bytes(path), 8, [&] { read_sglang_expert_location(path, 2); });
  write_vllm_ascend_expert_map(path, p);
  fuzz(path, test::read_bytes(path), 9, [&] { read_vllm_ascend_expert_map(path, 2); });
}

TEST(ReadersFuzz, ConvertJsonl) {
  TempDir dir;
  const std::string path = dir.file("log.jsonl");
  std::string jsonl;
  for (int t = 0; t < 6; ++t) {
    for (int l = 0; l < 2; ++l) {
      jsonl += "{\"layer\": " + std::to_string(l) + ", \"topk_ids\": [" +
               std::to_string((t + l) % 8) + ", " + std::to_string((t + l + 3) % 8) +
               "], \"token\": " + std::to_string(t) + "}\n";
    }
  }
  fuzz(path, jsonl, 10, [&] { convert_jsonl_to_npy(path, dir.file("t.npy")); });
}

TEST(ReadersFuzz, CountAndLoadFiles) {
  TempDir dir;
  const std::string json = dir.file("loads.json");
  fuzz(json, "{\"logical_count\": [[[3, 0, 5, 1], [2, 2, 2, 2]], [[1, 1, 1, 1], [0, 0, 9, 7]]]}",
       11, [&] { read_expert_loads(json); });
  const std::string npy = dir.file("loads.npy");
  fuzz(npy, io::encode_npy({3, 0, 5, 1, 2, 2, 2, 2}, {2, 4}, "<i8"), 12,
       [&] { read_expert_loads(npy); });
  // Affinity counts [L-1, E, E] of a top-1 trace: every layer pair totals the same.
  const std::string counts = dir.file("counts.npy");
  fuzz(counts, io::encode_npy({1, 2, 0, 3, 2, 1, 1, 2}, {2, 2, 2}, "<u2", true), 13,
       [&] { read_affinity_counts(counts, 1); });
}

}  // namespace
}  // namespace exflow
