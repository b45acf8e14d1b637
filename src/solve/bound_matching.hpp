// Degree-bounded matchings and group capacities, the building blocks of the lower bounds
// (src/solve/objective.cpp, src/solve/bound_topk.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace exflow {
class Topology;
}

namespace exflow::solvers {

// A weighted pair (row, column) of a bipartite graph; weight > 0.
struct WeightedPair {
  int row = 0;
  int col = 0;
  std::int64_t weight = 0;
};

// Solves the degree-bounded bipartite matching: the largest total weight W* of a subset of
// `pairs` (distinct (row, col), rows and columns in [0, side)) in which every row and every
// column has at most `degree` pairs. The transportation LP is integral, and successive shortest
// paths on the sparse pairs solve it exactly (a min-cost flow, source -> row -> column -> sink).
// Returns a value B with min(W*, enough) <= B: `enough` as soon as a matching reaches it, else
// W*; and `enough` without searching when the search's worst case (one Dijkstra over every arc
// per unit of flow) passes `work` arc scans.
std::int64_t degree_bounded_weight(int side, const std::vector<WeightedPair>& pairs, int degree,
                                   std::int64_t enough, std::int64_t work);

// The arc scans one matching may take: the sparse pair graphs of real traces (64 experts, a
// few hundred pairs per layer pair) fit many times over; on dense graphs of hundreds of
// experts the bounds fall back to what needs no matching.
inline constexpr std::int64_t kBoundWork = 4'000'000;

// The most experts of one layer a GPU and a node may hold in any placement with at least
// `min_experts_per_gpu` experts per GPU (-1: exactly E/G).
struct GroupCapacity {
  int gpu = 0;
  int node = 0;
};
GroupCapacity group_capacity(int experts, const Topology& topology, int min_experts_per_gpu);

}  // namespace exflow::solvers
