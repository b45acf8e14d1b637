#include "solve/alignment.hpp"

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

}  // namespace exflow::solvers
