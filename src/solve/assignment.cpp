// Hungarian method with row/column potentials (Kuhn-Munkres in the shortest-augmenting-path
// form): each row is inserted by a Dijkstra-like search over reduced costs, which stay
// non-negative, so the matching of the inserted rows is optimal after every step.
#include "solve/assignment.hpp"

#include <algorithm>
#include <limits>

namespace exflow::solvers {

Assignment min_cost_assignment(int rows, int cols, const std::vector<double>& cost) {
  const double inf = std::numeric_limits<double>::infinity();
  // 1-based arrays: index 0 is the virtual column of the row being inserted.
  std::vector<double> u(static_cast<std::size_t>(rows) + 1, 0.0);
  std::vector<double> v(static_cast<std::size_t>(cols) + 1, 0.0);
  std::vector<int> row_of_col(static_cast<std::size_t>(cols) + 1, 0);
  std::vector<int> way(static_cast<std::size_t>(cols) + 1, 0);
  std::vector<double> min_to(static_cast<std::size_t>(cols) + 1);
  std::vector<char> used(static_cast<std::size_t>(cols) + 1);
  for (int i = 1; i <= rows; ++i) {
    row_of_col[0] = i;
    int j0 = 0;
    std::fill(min_to.begin(), min_to.end(), inf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[static_cast<std::size_t>(j0)] = 1;
      const int i0 = row_of_col[static_cast<std::size_t>(j0)];
      const double* row = cost.data() + static_cast<std::size_t>(i0 - 1) * cols;
      double delta = inf;
      int j1 = 0;
      for (int j = 1; j <= cols; ++j) {
        if (used[static_cast<std::size_t>(j)]) continue;
        double cur = row[j - 1] - u[static_cast<std::size_t>(i0)] - v[static_cast<std::size_t>(j)];
        if (cur < min_to[static_cast<std::size_t>(j)]) {
          min_to[static_cast<std::size_t>(j)] = cur;
          way[static_cast<std::size_t>(j)] = j0;
        }
        if (min_to[static_cast<std::size_t>(j)] < delta) {
          delta = min_to[static_cast<std::size_t>(j)];
          j1 = j;
        }
      }
      for (int j = 0; j <= cols; ++j) {
        if (used[static_cast<std::size_t>(j)]) {
          u[static_cast<std::size_t>(row_of_col[static_cast<std::size_t>(j)])] += delta;
          v[static_cast<std::size_t>(j)] -= delta;
        } else {
          min_to[static_cast<std::size_t>(j)] -= delta;
        }
      }
      j0 = j1;
    } while (row_of_col[static_cast<std::size_t>(j0)] != 0);
    do {
      const int j1 = way[static_cast<std::size_t>(j0)];
      row_of_col[static_cast<std::size_t>(j0)] = row_of_col[static_cast<std::size_t>(j1)];
      j0 = j1;
    } while (j0 != 0);
  }
  Assignment a;
  a.column_of_row.assign(static_cast<std::size_t>(rows), -1);
  for (int j = 1; j <= cols; ++j) {
    const int i = row_of_col[static_cast<std::size_t>(j)];
    if (i > 0) {
      a.column_of_row[static_cast<std::size_t>(i - 1)] = j - 1;
      a.cost += cost[static_cast<std::size_t>(i - 1) * cols + (j - 1)];
    }
  }
  return a;
}

Assignment max_weight_assignment(int rows, int cols, const std::vector<double>& weight) {
  std::vector<double> negated(weight.size());
  for (std::size_t i = 0; i < weight.size(); ++i) negated[i] = -weight[i];
  Assignment a = min_cost_assignment(rows, cols, negated);
  a.cost = -a.cost;
  return a;
}

Assignment min_cost_transport(int rows, int cols, const std::vector<double>& cost,
                              const std::vector<int>& capacity) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto C = static_cast<std::size_t>(cols) + 1;  // column 0: the inserted row's origin
  std::vector<double> u(static_cast<std::size_t>(rows), 0.0), v(C, 0.0), min_to(C);
  std::vector<std::vector<int>> members(C);
  std::vector<int> way_col(C), way_row(C);
  std::vector<char> used(C);
  for (int i = 0; i < rows; ++i) {
    members[0] = {i};
    std::fill(min_to.begin(), min_to.end(), inf);
    std::fill(used.begin(), used.end(), 0);
    std::size_t j0 = 0;
    while (true) {
      used[j0] = 1;
      for (int r : members[j0]) {
        const double* row = cost.data() + static_cast<std::size_t>(r) * cols;
        for (std::size_t j = 1; j < C; ++j) {
          if (used[j]) continue;
          const double cur = row[j - 1] - u[static_cast<std::size_t>(r)] - v[j];
          if (cur < min_to[j]) {
            min_to[j] = cur;
            way_col[j] = static_cast<int>(j0);
            way_row[j] = r;
          }
        }
      }
      double delta = inf;
      std::size_t j1 = 0;
      for (std::size_t j = 1; j < C; ++j) {
        if (!used[j] && min_to[j] < delta) {
          delta = min_to[j];
          j1 = j;
        }
      }
      for (std::size_t j = 0; j < C; ++j) {
        if (used[j]) {
          v[j] -= delta;
          for (int r : members[j]) u[static_cast<std::size_t>(r)] += delta;
        } else {
          min_to[j] -= delta;
        }
      }
      j0 = j1;
      if (static_cast<int>(members[j0].size()) < capacity[j0 - 1]) break;
    }
    // Shift rows along the path back to the origin: way_row[j] moves from way_col[j] to j.
    for (std::size_t j = j0; j != 0;) {
      const int r = way_row[j];
      const auto from = static_cast<std::size_t>(way_col[j]);
      members[j].push_back(r);
      if (from != 0) {
        auto& m = members[from];
        m.erase(std::find(m.begin(), m.end(), r));
      }
      j = from;
    }
  }
  Assignment a;
  a.column_of_row.assign(static_cast<std::size_t>(rows), -1);
  for (std::size_t j = 1; j < C; ++j) {
    for (int r : members[j]) {
      a.column_of_row[static_cast<std::size_t>(r)] = static_cast<int>(j) - 1;
      a.cost += cost[static_cast<std::size_t>(r) * cols + (j - 1)];
    }
  }
  return a;
}

}  // namespace exflow::solvers
