// Linear assignment: rows to distinct columns at minimum total cost.
#pragma once

#include <vector>

namespace exflow::solvers {

struct Assignment {
  std::vector<int> column_of_row;  // [rows]
  double cost = 0;
};

// cost is row-major [rows, cols] with rows <= cols; every row gets a distinct column.
// Hungarian method with potentials (shortest augmenting paths), O(rows^2 * cols).
Assignment min_cost_assignment(int rows, int cols, const std::vector<double>& cost);

// The same, maximising the total weight.
Assignment max_weight_assignment(int rows, int cols, const std::vector<double>& weight);

// Transportation with unit demands: every row goes to one column, column c takes at most
// capacity[c] rows (sum of capacities >= rows), at minimum total cost. The same potentials
// method with a column's assigned rows relaxed together, O(rows * cols^2 * max capacity);
// much faster than expanding columns into slots when capacities are large.
Assignment min_cost_transport(int rows, int cols, const std::vector<double>& cost,
                              const std::vector<int>& capacity);

}  // namespace exflow::solvers
