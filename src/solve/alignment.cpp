#include "solve/alignment.hpp"

#include <algorithm>
#include <limits>

#include "solve/assignment.hpp"

namespace exflow::solvers {

Alignment align_groups(const std::vector<double>& flow, const GroupLayout& layout) {
  const int N = layout.nodes;
  const int P = layout.gpus_per_node;
  const int G = N * P;
  const double c1 = layout.intra_cost;
  const double c2 = layout.inter_cost;
  // inner[(na * N + nb)]: best GPU matching between node na of layer l and node-slot nb.
  std::vector<Assignment> inner(static_cast<std::size_t>(N) * N);
  std::vector<double> node_weight(static_cast<std::size_t>(N) * N);
  std::vector<double> block(static_cast<std::size_t>(P) * P);
  for (int na = 0; na < N; ++na) {
    for (int nb = 0; nb < N; ++nb) {
      double node_flow = 0;
      for (int p = 0; p < P; ++p) {
        for (int q = 0; q < P; ++q) {
          double f = flow[static_cast<std::size_t>(na * P + p) * G + (nb * P + q)];
          block[static_cast<std::size_t>(p) * P + q] = f;
          node_flow += f;
        }
      }
      Assignment& m = inner[static_cast<std::size_t>(na) * N + nb];
      m = P == 1 ? Assignment{{0}, block[0]} : max_weight_assignment(P, P, block);
      node_weight[static_cast<std::size_t>(na) * N + nb] = (c2 - c1) * node_flow + c1 * m.cost;
    }
  }
  Assignment nodes =
      N == 1 ? Assignment{{0}, node_weight[0]} : max_weight_assignment(N, N, node_weight);
  Alignment a;
  a.saved = nodes.cost;
  a.gpu_of_group.assign(static_cast<std::size_t>(G), -1);
  for (int na = 0; na < N; ++na) {
    const int nb = nodes.column_of_row[static_cast<std::size_t>(na)];
    const Assignment& m = inner[static_cast<std::size_t>(na) * N + nb];
    for (int p = 0; p < P; ++p) {
      const int q = m.column_of_row[static_cast<std::size_t>(p)];
      a.gpu_of_group[static_cast<std::size_t>(nb * P + q)] = na * P + p;
    }
  }
  return a;
}

double alignment_value(const std::vector<double>& flow, const GroupLayout& layout) {
  return align_groups(flow, layout).saved;
}

namespace {

std::vector<std::vector<int>> all_permutations(int n) {
  std::vector<int> p(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) p[static_cast<std::size_t>(i)] = i;
  std::vector<std::vector<int>> out;
  do {
    out.push_back(p);
  } while (std::next_permutation(p.begin(), p.end()));
  return out;
}

}  // namespace

SmallAligner::SmallAligner(const GroupLayout& layout)
    : layout_(layout),
      node_perms_(all_permutations(layout.nodes)),
      gpu_perms_(all_permutations(layout.gpus_per_node)) {}

double SmallAligner::value(const double* flow) const {
  const int N = layout_.nodes;
  const int P = layout_.gpus_per_node;
  const int G = N * P;
  const double c1 = layout_.intra_cost;
  const double c2 = layout_.inter_cost;
  double node_weight[4][4];
  for (int na = 0; na < N; ++na) {
    for (int nb = 0; nb < N; ++nb) {
      double node_flow = 0;
      double best = 0;
      for (int p = 0; p < P; ++p) {
        for (int q = 0; q < P; ++q) node_flow += flow[(na * P + p) * G + nb * P + q];
      }
      for (const auto& perm : gpu_perms_) {
        double kept = 0;
        for (int p = 0; p < P; ++p)
          kept += flow[(na * P + p) * G + nb * P + perm[static_cast<std::size_t>(p)]];
        best = std::max(best, kept);
      }
      node_weight[na][nb] = (c2 - c1) * node_flow + c1 * best;
    }
  }
  double best = -std::numeric_limits<double>::infinity();
  for (const auto& perm : node_perms_) {
    double v = 0;
    for (int na = 0; na < N; ++na) v += node_weight[na][perm[static_cast<std::size_t>(na)]];
    best = std::max(best, v);
  }
  return best;
}

}  // namespace exflow::solvers
