// The solver back ends behind exflow::solve (include/exflow/solve.hpp).
#pragma once

#include <string>

#include "exflow/affinity.hpp"
#include "exflow/solve.hpp"
#include "exflow/topology.hpp"

namespace exflow::solvers {

// One solve: the graph, the topology and the per-GPU expert limits of every layer.
struct Instance {
  const AffinityGraph& graph;
  const Topology& topology;
  int min_per_gpu;  // every GPU hosts at least this many experts of every layer
  int max_per_gpu;  // and at most this many (E/G for hard balance, else E - (G-1) * min)
  bool hard() const { return min_per_gpu == max_per_gpu; }
  int layers() const { return graph.layers(); }
  int experts() const { return graph.experts(); }
  int gpus() const { return topology.gpus(); }
};

// Why `exact` cannot prove this instance, or an empty string if it can.
std::string exact_refusal(const Instance& instance);

// exact's running time on this machine class, in seconds, estimated from the instance's shape
// (src/solve/exact.cpp explains the model). For instances exact does not refuse.
double exact_seconds_estimate(const Instance& instance);

// Each returns placement, method, optimal, objective, lower_bound (if it has one of its own),
// and detail; the dispatcher fills seconds and tightens the bound.
SolveResult solve_exact(const Instance& instance, const SolveOptions& options);
SolveResult solve_ilp(const Instance& instance, const SolveOptions& options);
SolveResult solve_fast(const Instance& instance, const SolveOptions& options);
SolveResult solve_bcd(const Instance& instance, const SolveOptions& options);

// Recursive partitioning by the smallest prime factor (options.bipart), each split into k parts
// solved by exflow::solve with options.method on a k-GPU topology.
SolveResult solve_bipart(const AffinityGraph& graph, const Topology& topology,
                         const SolveOptions& options);

}  // namespace exflow::solvers
