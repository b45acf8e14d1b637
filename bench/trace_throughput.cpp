// Trace throughput: token transitions per second of one pass over a trace file by
//   profile       exflow::AffinityGraph::from_trace
//   eval_vanilla  exflow::evaluate, context-coherent, vanilla placement on 2 nodes x 4 GPUs
//   eval_random   the same with a random balanced placement
// with the library's `threads` set to 1 and 2. The trace is synthetic: 2 000 000 tokens x 58
// layers, 256 experts, top-1, '<i2', with inter-layer affinity (a token's next expert is a
// fixed successor of its current one with probability 0.6, else uniform), written once in
// chunks. items_per_second counts tokens x (layers - 1) transitions per iteration.
//
// Memory counters: peak_rss_MiB is getrusage's ru_maxrss for the whole process, base_MiB the
// same before the trace is written or opened (binary, libraries, benchmark framework),
// matrix_MiB the size of one (layers - 1) x E x E int64 affinity matrix and bound_MiB the trace
// file size plus one such matrix per worker.
//
// Environment: EXFLOW_BENCH_TRACE=PATH writes the trace there and keeps it; a file already
// there with the expected size is reused instead. Without it the trace goes to a temporary
// directory that is removed at exit. EXFLOW_BENCH_TOKENS=N changes the token count.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/splitmix64.hpp"
#include "exflow/affinity.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "synthetic_trace.hpp"

namespace {

constexpr std::int64_t kDefaultTokens = 2'000'000;
constexpr int kLayers = 58;
constexpr int kExperts = 256;
constexpr double kSuccessorProbability = 0.6;
constexpr std::uint64_t kSeed = 20240611;
constexpr int kIterations = 5;
constexpr double kMiB = 1024.0 * 1024.0;

using Rng = exflow::SplitMix64;

exflow::bench::SyntheticTraceSpec trace_spec(std::int64_t tokens) {
  exflow::bench::SyntheticTraceSpec spec;
  spec.tokens = tokens;
  spec.layers = kLayers;
  spec.experts = kExperts;
  spec.follow = kSuccessorProbability;
  spec.seed = kSeed;
  return spec;
}

// A balanced placement: every layer's vanilla GPU list, shuffled.
exflow::Placement random_placement(const exflow::Topology& topology) {
  exflow::Placement p = exflow::vanilla_placement(kLayers, kExperts, topology);
  Rng rng(kSeed + 1);
  for (int l = 0; l < kLayers; ++l) {
    for (int e = kExperts - 1; e > 0; --e) {
      int j = rng.below(e + 1);
      int g = p.gpu(l, e);
      p.set(l, e, p.gpu(l, j));
      p.set(l, j, g);
    }
  }
  exflow::validate(p, topology, exflow::Balance::kExact, "random placement");
  return p;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0 / kMiB;  // ru_maxrss is in KiB
}

struct Memory {
  double base_mib = 0;     // peak RSS before the trace is written or opened
  double trace_bytes = 0;  // size of the .npy file
};

void report(benchmark::State& state, const exflow::Trace& trace, const Memory& memory,
            int threads) {
  const std::int64_t transitions = trace.tokens() * (trace.layers() - 1);
  state.SetItemsProcessed(state.iterations() * transitions);
  const double matrix_bytes = static_cast<double>(trace.layers() - 1) * trace.experts() *
                              trace.experts() * sizeof(std::int64_t);
  state.counters["peak_rss_MiB"] = peak_rss_mib();
  state.counters["base_MiB"] = memory.base_mib;
  state.counters["trace_MiB"] = memory.trace_bytes / kMiB;
  state.counters["matrix_MiB"] = matrix_bytes / kMiB;
  state.counters["bound_MiB"] = (memory.trace_bytes + trace.workers(threads) * matrix_bytes) / kMiB;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  Memory memory;
  memory.base_mib = peak_rss_mib();
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  std::int64_t tokens = kDefaultTokens;
  if (const char* v = std::getenv("EXFLOW_BENCH_TOKENS")) tokens = std::stoll(v);
  std::filesystem::path temp_dir;
  std::string path;
  if (const char* v = std::getenv("EXFLOW_BENCH_TRACE")) {
    path = v;
  } else {
    std::string pattern = (std::filesystem::temp_directory_path() / "exflow-bench-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    temp_dir = pattern;
    path = (temp_dir / "trace.npy").string();
  }

  int status = 0;
  try {
    std::error_code ec;
    if (std::filesystem::file_size(path, ec) !=
        exflow::bench::synthetic_trace_bytes(trace_spec(tokens))) {
      std::fprintf(stderr, "writing %lld x %d trace to %s\n", static_cast<long long>(tokens),
                   kLayers, path.c_str());
      exflow::bench::write_synthetic_trace(path, trace_spec(tokens));
    } else {
      std::fprintf(stderr, "reusing %s\n", path.c_str());
    }
    memory.trace_bytes = static_cast<double>(std::filesystem::file_size(path));
    exflow::TraceOpenOptions open_options;
    open_options.experts = kExperts;
    const exflow::Trace trace = exflow::Trace::open(path, open_options);
    const exflow::Topology topology(2, 4);
    const exflow::Placement vanilla = exflow::vanilla_placement(kLayers, kExperts, topology);
    const exflow::Placement shuffled = random_placement(topology);

    auto profile = [&](benchmark::State& state) {
      const int threads = static_cast<int>(state.range(0));
      for (auto _ : state) {
        exflow::AffinityGraph graph = exflow::AffinityGraph::from_trace(trace, threads);
        benchmark::DoNotOptimize(graph.transitions().data());
      }
      report(state, trace, memory, threads);
    };
    auto eval = [&](benchmark::State& state, const exflow::Placement* placement) {
      const int threads = static_cast<int>(state.range(0));
      exflow::EvalOptions options;
      options.threads = threads;
      for (auto _ : state) {
        exflow::Metrics m = exflow::evaluate(trace, *placement, topology, options);
        benchmark::DoNotOptimize(m.cost);
      }
      report(state, trace, memory, threads);
    };
    for (auto* b : {benchmark::RegisterBenchmark("profile", profile),
                    benchmark::RegisterBenchmark("eval_vanilla", eval, &vanilla),
                    benchmark::RegisterBenchmark("eval_random", eval, &shuffled)}) {
      b->ArgName("threads")
          ->Arg(1)
          ->Arg(2)
          ->Iterations(kIterations)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    benchmark::RunSpecifiedBenchmarks();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trace_throughput: %s\n", e.what());
    status = 1;
  }
  benchmark::Shutdown();
  if (!temp_dir.empty()) std::filesystem::remove_all(temp_dir);
  return status;
}
