// The aggregated-graph integer program, solved by COIN-OR CBC through its C API.
//
// What it optimises: with binaries x[l][e][g] (expert e of layer l on GPU g), every expert on
// one GPU and every GPU holding between min_per_gpu and max_per_gpu experts of every layer,
//   minimise sum_{l,i,j} w_l(i, j) * (c1 * zg[l,i,j] + (c2 - c1) * zn[l,i,j]) / tokens
// subject to  zg[l,i,j] >= x[l][i][g] - x[l+1][j][g]  for every GPU g,
//             zn[l,i,j] >= X[l][i][n] - X[l+1][j][n]  for every node n,
// where X[l][e][n] sums x[l][e][g] over the GPUs g of node n, 0 <= z <= 1, and only pairs with
// w > 0 get z columns (c1 = intra_cost, c2 = inter_cost).
//
// Why it is exact: at an integer x, if i (layer l) and j (layer l + 1) sit on different GPUs
// a != b, the row for g = a reads zg >= 1 - 0, so zg = 1; if they share a GPU every row reads
// zg >= 0 (or >= -1), and since zg has a positive objective coefficient an optimum takes
// zg = 0. Likewise zn = 1 exactly when their nodes differ. So at an optimum the pair costs
// w * (c1 * [a != b] + (c2 - c1) * [node(a) != node(b)]), which is w * d(a, b): 0 on one GPU,
// c1 within a node, c2 across nodes. This needs c2 >= c1 (a negative coefficient would let
// zn float to 1), so other costs are refused. The objective is kept in raw token counts
// inside CBC (better scaled than per-token values) and divided by `tokens` afterwards.
//
// Valid inequalities (true at every integer point, so the optimum is unchanged): zn <= zg
// (different nodes imply different GPUs), and the degree rows of add_degree_rows, which bound
// how many pairs of one expert can stay on its GPU or node. Without the degree rows the
// relaxation's bound is near 0 (every x = 1/G sets every z to 0); with them it comes within a
// few percent of the optimum on Mixtral-sized models.
//
// Symmetry: the objective and the constraints are invariant under relabelling GPUs by a
// topology automorphism (permuting the nodes, and the GPUs within each node), applied to every
// layer. The model keeps only the canonical labelling of layer 0, described in the comment of
// add_symmetry_rows, and the MIP start is relabelled into it.
#include <coin/Cbc_C_Interface.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "solve/methods.hpp"

namespace exflow::solvers {
namespace {

constexpr double kDefaultSeconds = 60;
constexpr std::size_t kMaxSize = 2'000'000;  // rows or columns, whatever the time limit
// CBC's time limit does not reach the simplex solve of the root relaxation, which on these
// degenerate models grows about quadratically with the rows: with Debian's CBC 2.10.8 on a
// 2-core x86 machine, 16k rows took 15 s, 33k rows 100 s, 51k rows 235 s, i.e. about
// (rows / kRowsPerSqrtSecond)^2 seconds. Models whose estimate exceeds the time limit are
// refused rather than left to overrun it by minutes.
constexpr double kRowsPerSqrtSecond = 3300;

// A transition with tokens: expert `from` of layer `layer` to expert `to` of layer + 1.
struct Pair {
  int layer;
  int from;
  int to;
  double weight;
};

// Rows collected as (row, column, value) triplets, handed to CBC column-major.
class ModelBuilder {
 public:
  int add_col(double lower, double upper, double objective, bool integer) {
    col_lower_.push_back(lower);
    col_upper_.push_back(upper);
    objective_.push_back(objective);
    integer_.push_back(integer ? 1 : 0);
    return static_cast<int>(col_lower_.size()) - 1;
  }
  // Starts a row lower <= sum <= upper; add its entries with entry().
  void add_row(double lower, double upper) {
    row_lower_.push_back(lower);
    row_upper_.push_back(upper);
  }
  void entry(int col, double value) {
    entries_.push_back({static_cast<int>(row_lower_.size()) - 1, col, value});
  }

  int cols() const { return static_cast<int>(col_lower_.size()); }
  int rows() const { return static_cast<int>(row_lower_.size()); }
  const std::vector<char>& integer() const { return integer_; }

  void load(Cbc_Model* model) const {
    const std::size_t n = col_lower_.size();
    std::vector<CoinBigIndex> start(n + 1, 0);
    for (const Entry& e : entries_) ++start[static_cast<std::size_t>(e.col) + 1];
    for (std::size_t c = 0; c < n; ++c) start[c + 1] += start[c];
    std::vector<CoinBigIndex> next(start.begin(), start.end() - 1);
    std::vector<int> index(entries_.size());
    std::vector<double> value(entries_.size());
    for (const Entry& e : entries_) {
      const auto k = static_cast<std::size_t>(next[static_cast<std::size_t>(e.col)]++);
      index[k] = e.row;
      value[k] = e.value;
    }
    Cbc_loadProblem(model, static_cast<int>(n), rows(), start.data(), index.data(), value.data(),
                    col_lower_.data(), col_upper_.data(), objective_.data(), row_lower_.data(),
                    row_upper_.data());
    for (std::size_t c = 0; c < n; ++c) {
      if (integer_[c]) Cbc_setInteger(model, static_cast<int>(c));
    }
  }

 private:
  struct Entry {
    int row;
    int col;
    double value;
  };
  std::vector<double> col_lower_, col_upper_, objective_;
  std::vector<char> integer_;
  std::vector<double> row_lower_, row_upper_;
  std::vector<Entry> entries_;
};

struct CbcDeleter {
  void operator()(Cbc_Model* model) const { Cbc_deleteModel(model); }
};

// sum w * d(gpu(l, i), gpu(l + 1, j)) in tokens (not yet divided by the token count).
double placement_cost(const std::vector<Pair>& pairs, const Placement& placement,
                      const Topology& topology) {
  double total = 0;
  for (const Pair& p : pairs) {
    total +=
        p.weight * topology.cost(placement.gpu(p.layer, p.from), placement.gpu(p.layer + 1, p.to));
  }
  return total;
}

// The balance violated by `placement`, or an empty string.
std::string balance_violation(const Placement& placement, const Instance& instance) {
  const int gpus = instance.gpus();
  std::vector<int> count(static_cast<std::size_t>(gpus));
  for (int l = 0; l < placement.layers(); ++l) {
    std::fill(count.begin(), count.end(), 0);
    for (int e = 0; e < placement.experts(); ++e) {
      const int g = placement.gpu(l, e);
      if (g < 0 || g >= gpus) {
        return "layer " + std::to_string(l) + " expert " + std::to_string(e) + " is on GPU " +
               std::to_string(g) + ", outside 0.." + std::to_string(gpus - 1);
      }
      ++count[static_cast<std::size_t>(g)];
    }
    for (int g = 0; g < gpus; ++g) {
      const int c = count[static_cast<std::size_t>(g)];
      if (c < instance.min_per_gpu || c > instance.max_per_gpu) {
        return "layer " + std::to_string(l) + " GPU " + std::to_string(g) + " hosts " +
               std::to_string(c) + " experts, not " +
               (instance.hard() ? std::to_string(instance.min_per_gpu)
                                : std::to_string(instance.min_per_gpu) + ".." +
                                      std::to_string(instance.max_per_gpu));
      }
    }
  }
  return {};
}

// The canonical labelling of add_symmetry_rows for `placement`: new_label[g] for every GPU g.
// Nodes are numbered in the order their first layer-0 expert appears (by expert id), then the
// GPUs within each node likewise; nodes and GPUs that host no layer-0 expert come last, in
// their old order. The map sends node blocks to node blocks, so it is a topology automorphism.
std::vector<int> canonical_labels(const Placement& placement, const Topology& topology) {
  const int nodes = topology.nodes();
  const int per_node = topology.gpus_per_node();
  std::vector<int> node_label(static_cast<std::size_t>(nodes), -1);
  std::vector<int> local_label(static_cast<std::size_t>(topology.gpus()), -1);
  std::vector<int> next_local(static_cast<std::size_t>(nodes), 0);
  int next_node = 0;
  for (int e = 0; e < placement.experts(); ++e) {
    const int g = placement.gpu(0, e);
    const int n = topology.node_of(g);
    if (node_label[static_cast<std::size_t>(n)] < 0)
      node_label[static_cast<std::size_t>(n)] = next_node++;
    if (local_label[static_cast<std::size_t>(g)] < 0) {
      local_label[static_cast<std::size_t>(g)] = next_local[static_cast<std::size_t>(n)]++;
    }
  }
  for (int n = 0; n < nodes; ++n) {
    if (node_label[static_cast<std::size_t>(n)] < 0)
      node_label[static_cast<std::size_t>(n)] = next_node++;
  }
  std::vector<int> new_label(static_cast<std::size_t>(topology.gpus()));
  for (int g = 0; g < topology.gpus(); ++g) {
    const int n = topology.node_of(g);
    if (local_label[static_cast<std::size_t>(g)] < 0) {
      local_label[static_cast<std::size_t>(g)] = next_local[static_cast<std::size_t>(n)]++;
    }
    new_label[static_cast<std::size_t>(g)] = node_label[static_cast<std::size_t>(n)] * per_node +
                                             local_label[static_cast<std::size_t>(g)];
  }
  return new_label;
}

class IlpModel {
 public:
  IlpModel(const Instance& instance, std::vector<Pair> pairs)
      : instance_(instance), pairs_(std::move(pairs)) {}

  // Builds the columns and rows; returns the builder for loading.
  const ModelBuilder& build() {
    const Topology& topo = instance_.topology;
    const int layers = instance_.layers();
    const int experts = instance_.experts();
    const int gpus = instance_.gpus();
    const int nodes = topo.nodes();
    const int per_node = topo.gpus_per_node();
    const double c1 = topo.intra_cost();
    const double c2 = topo.inter_cost();

    for (int l = 0; l < layers; ++l) {
      for (int e = 0; e < experts; ++e) {
        for (int g = 0; g < gpus; ++g) {
          // See add_symmetry_rows: in the canonical labelling, GPU p of node n first appears
          // at a layer-0 expert numbered at least n + p.
          const bool excluded = l == 0 && e < topo.node_of(g) + g % per_node;
          const bool fixed = l == 0 && e == 0 && g == 0;
          b_.add_col(fixed ? 1 : 0, excluded ? 0 : 1, 0, true);
        }
      }
    }
    for (int l = 0; l < layers; ++l) {
      for (int e = 0; e < experts; ++e) {
        b_.add_row(1, 1);
        for (int g = 0; g < gpus; ++g) b_.entry(x(l, e, g), 1);
      }
      for (int g = 0; g < gpus; ++g) {
        b_.add_row(instance_.min_per_gpu, instance_.max_per_gpu);
        for (int e = 0; e < experts; ++e) b_.entry(x(l, e, g), 1);
      }
    }
    add_symmetry_rows();

    zg_.assign(pairs_.size(), -1);
    zn_.assign(pairs_.size(), -1);
    for (std::size_t k = 0; k < pairs_.size(); ++k) {
      const Pair& p = pairs_[k];
      if (c1 > 0) {
        const int z = zg_[k] = b_.add_col(0, 1, p.weight * c1, false);
        for (int g = 0; g < gpus; ++g) {
          b_.add_row(0, kInf);
          b_.entry(z, 1);
          b_.entry(x(p.layer, p.from, g), -1);
          b_.entry(x(p.layer + 1, p.to, g), 1);
        }
      }
      if (nodes > 1 && c2 > c1) {
        const int z = zn_[k] = b_.add_col(0, 1, p.weight * (c2 - c1), false);
        for (int n = 0; n < nodes; ++n) {
          b_.add_row(0, kInf);
          b_.entry(z, 1);
          for (int g = n * per_node; g < (n + 1) * per_node; ++g) {
            b_.entry(x(p.layer, p.from, g), -1);
            b_.entry(x(p.layer + 1, p.to, g), 1);
          }
        }
        if (zg_[k] >= 0) {
          b_.add_row(0, kInf);
          b_.entry(zg_[k], 1);
          b_.entry(z, -1);
        }
      }
    }
    add_degree_rows(zg_, instance_.max_per_gpu);
    add_degree_rows(zn_, std::min(per_node * instance_.max_per_gpu,
                                  experts - (nodes - 1) * per_node * instance_.min_per_gpu));
    return b_;
  }

  // Columns and rows the model will have (rows: an upper bound), computed before building it.
  static std::size_t col_count(const Instance& instance, std::size_t pairs) {
    const Topology& topo = instance.topology;
    const std::size_t levels = (topo.intra_cost() > 0 ? 1 : 0) +
                               (topo.nodes() > 1 && topo.inter_cost() > topo.intra_cost() ? 1 : 0);
    return static_cast<std::size_t>(instance.layers()) * instance.experts() * instance.gpus() +
           pairs * levels;
  }
  static std::size_t row_count(const Instance& instance, std::size_t pairs) {
    const Topology& topo = instance.topology;
    const std::size_t layers = static_cast<std::size_t>(instance.layers());
    const std::size_t experts = static_cast<std::size_t>(instance.experts());
    const std::size_t gpus = static_cast<std::size_t>(instance.gpus());
    const std::size_t nodes = static_cast<std::size_t>(topo.nodes());
    const bool gpu_level = topo.intra_cost() > 0;
    const bool node_level = nodes > 1 && topo.inter_cost() > topo.intra_cost();
    const std::size_t per_pair =
        (gpu_level ? gpus : 0) + (node_level ? nodes : 0) + (gpu_level && node_level ? 1 : 0);
    const std::size_t degree = 2 * layers * experts * ((gpu_level ? 1 : 0) + (node_level ? 1 : 0));
    return layers * (experts + gpus) + experts * gpus + pairs * per_pair + degree;
  }

  // Column values for `placement` (already in the canonical labelling).
  std::vector<double> values(const Placement& placement) const {
    std::vector<double> v(static_cast<std::size_t>(b_.cols()), 0.0);
    for (int l = 0; l < instance_.layers(); ++l) {
      for (int e = 0; e < instance_.experts(); ++e) {
        v[static_cast<std::size_t>(x(l, e, placement.gpu(l, e)))] = 1;
      }
    }
    const Topology& topo = instance_.topology;
    for (std::size_t k = 0; k < pairs_.size(); ++k) {
      const Pair& p = pairs_[k];
      const int a = placement.gpu(p.layer, p.from);
      const int b = placement.gpu(p.layer + 1, p.to);
      if (zg_[k] >= 0 && a != b) v[static_cast<std::size_t>(zg_[k])] = 1;
      if (zn_[k] >= 0 && topo.node_of(a) != topo.node_of(b)) {
        v[static_cast<std::size_t>(zn_[k])] = 1;
      }
    }
    return v;
  }

  // Reads a column solution into `placement` (x rounded at 0.5); false if some expert is not
  // on exactly one GPU.
  bool placement_from(const double* solution, Placement& placement) const {
    for (int l = 0; l < instance_.layers(); ++l) {
      for (int e = 0; e < instance_.experts(); ++e) {
        int on = -1;
        for (int g = 0; g < instance_.gpus(); ++g) {
          if (solution[x(l, e, g)] > 0.5) {
            if (on >= 0) return false;
            on = g;
          }
        }
        if (on < 0) return false;
        placement.set(l, e, on);
      }
    }
    return true;
  }

 private:
  static constexpr double kInf = 1e30;  // CBC treats bounds >= 1e30 as infinite

  int x(int layer, int expert, int gpu) const {
    return (layer * instance_.experts() + expert) * instance_.gpus() + gpu;
  }

  // Degree rows, valid inequalities that let the relaxation see the capacities. Expert i of
  // layer l shares its GPU with at most `capacity` experts of layer l + 1 (its node with at
  // most P times that), so among its pairs S at most `capacity` have z = 0:
  //   sum_{j in S} z[l,i,j] >= |S| - capacity,
  // and likewise for the pairs into expert j of layer l + 1. Without them a fractional x
  // (every x = 1/G) sets every z to 0 and the bound to 0.
  void add_degree_rows(const std::vector<int>& z, int capacity) {
    const int experts = instance_.experts();
    const std::size_t keys = static_cast<std::size_t>(instance_.layers()) * experts;
    for (const bool by_source : {true, false}) {
      std::vector<std::vector<int>> cols(keys);
      for (std::size_t k = 0; k < pairs_.size(); ++k) {
        if (z[k] < 0) continue;
        const Pair& p = pairs_[k];
        const int expert = by_source ? p.from : p.to;
        cols[static_cast<std::size_t>(p.layer) * experts + expert].push_back(z[k]);
      }
      for (const std::vector<int>& c : cols) {
        if (static_cast<int>(c.size()) <= capacity) continue;
        b_.add_row(static_cast<double>(c.size()) - capacity, kInf);
        for (int col : c) b_.entry(col, 1);
      }
    }
  }

  // Symmetry breaking on layer 0. Relabelling GPUs by a topology automorphism (any permutation
  // of the nodes combined with any permutation of the GPUs inside each node) in every layer
  // maps a feasible placement to a feasible one of equal cost: d(a, b) depends only on whether
  // a and b are equal or share a node, which the automorphism preserves, and the balance rows
  // treat all GPUs alike. So every placement has an equally good relabelling in which
  //   (1) nodes are numbered by first appearance: node n >= 1 hosts some layer-0 expert only if
  //       node n - 1 hosts a lower-numbered one (number the nodes in the order their first
  //       layer-0 expert appears, unused nodes last), and
  //   (2) GPUs within each node are numbered likewise: GPU p >= 1 of node n hosts a layer-0
  //       expert e only if GPU p - 1 of node n hosts one numbered below e (renumber inside
  //       each node, which keeps (1)).
  // Rows: X[0][e][n] <= sum_{e' < e} X[0][e'][n - 1] and
  //       x[0][e][nP + p] <= sum_{e' < e} x[0][e'][nP + p - 1].
  // Consequences fixed as column bounds in build(): expert 0 is on GPU 0 (neither row allows
  // anything else for e = 0), and GPU p of node n can host expert e only if e >= n + p (node n
  // first appears at an expert >= n, and its GPU p at an expert >= p beyond that); on one node
  // that is x[0][e][g] = 0 for g > e.
  void add_symmetry_rows() {
    const Topology& topo = instance_.topology;
    const int experts = instance_.experts();
    const int nodes = topo.nodes();
    const int per_node = topo.gpus_per_node();
    for (int n = 1; n < nodes; ++n) {
      for (int e = n; e < experts; ++e) {
        b_.add_row(-kInf, 0);
        for (int p = 0; p < per_node; ++p) b_.entry(x(0, e, n * per_node + p), 1);
        for (int f = n - 1; f < e; ++f) {
          for (int p = 0; p < per_node; ++p) b_.entry(x(0, f, (n - 1) * per_node + p), -1);
        }
      }
    }
    for (int n = 0; n < nodes; ++n) {
      for (int p = 1; p < per_node; ++p) {
        for (int e = n + p; e < experts; ++e) {
          b_.add_row(-kInf, 0);
          b_.entry(x(0, e, n * per_node + p), 1);
          for (int f = n + p - 1; f < e; ++f) b_.entry(x(0, f, n * per_node + p - 1), -1);
        }
      }
    }
  }

  const Instance& instance_;
  std::vector<Pair> pairs_;
  ModelBuilder b_;
  std::vector<int> zg_;  // [pairs] column of zg, -1 if none
  std::vector<int> zn_;  // [pairs] column of zn, -1 if none
};

std::string format_seconds(double seconds) {
  std::ostringstream out;
  out << seconds << " s";
  return out.str();
}

std::string percent(double fraction) {
  std::ostringstream out;
  out.precision(fraction < 0.1 ? 2 : 3);
  out << fraction * 100 << "%";
  return out.str();
}

}  // namespace

SolveResult solve_ilp(const Instance& instance, const SolveOptions& options) {
  const AffinityGraph& graph = instance.graph;
  const Topology& topo = instance.topology;
  const int layers = instance.layers();
  const int experts = instance.experts();
  const int gpus = instance.gpus();
  if (topo.inter_cost() < topo.intra_cost()) {
    // With c2 < c1 the coefficient c2 - c1 of zn is negative and zn would rise to 1 whatever
    // the placement; the two-level linearisation is then wrong.
    throw UsageError("ilp needs inter_cost >= intra_cost (got intra " +
                         std::to_string(topo.intra_cost()) + ", inter " +
                         std::to_string(topo.inter_cost()) + "); use method fast",
                     {"method"});
  }
  if (instance.min_per_gpu < 0 || instance.min_per_gpu > instance.max_per_gpu ||
      static_cast<std::int64_t>(instance.min_per_gpu) * gpus > experts ||
      static_cast<std::int64_t>(instance.max_per_gpu) * gpus < experts) {
    throw UsageError("ilp: no placement of " + std::to_string(experts) + " experts on " +
                     std::to_string(gpus) + " GPUs has " + std::to_string(instance.min_per_gpu) +
                     ".." + std::to_string(instance.max_per_gpu) + " experts per GPU");
  }

  std::vector<Pair> pairs;
  for (int l = 0; l + 1 < layers; ++l) {
    for (int i = 0; i < experts; ++i) {
      for (int j = 0; j < experts; ++j) {
        const std::int64_t w = graph.transition(l, i, j);
        if (w > 0) pairs.push_back({l, i, j, static_cast<double>(w)});
      }
    }
  }
  const std::size_t rows = IlpModel::row_count(instance, pairs.size());
  const std::size_t cols = IlpModel::col_count(instance, pairs.size());
  if (rows > kMaxSize || cols > kMaxSize) {
    throw UsageError("ilp: the integer program would have " + std::to_string(cols) +
                         " columns and " + std::to_string(rows) + " rows (" +
                         std::to_string(pairs.size()) + " expert pairs with traffic, " +
                         std::to_string(gpus) + " GPUs), more than the " +
                         std::to_string(kMaxSize) + " CBC is allowed here; use method fast",
                     {"method"});
  }
  const double seconds = options.time_limit > 0 ? options.time_limit : kDefaultSeconds;
  const double lp_seconds = std::pow(static_cast<double>(rows) / kRowsPerSqrtSecond, 2);
  if (lp_seconds > seconds) {
    throw UsageError(
        "ilp: the integer program would have " + std::to_string(rows) + " rows (" +
            std::to_string(pairs.size()) + " expert pairs with traffic, " + std::to_string(gpus) +
            " GPUs); CBC's first LP relaxation alone takes about " +
            format_seconds(std::ceil(lp_seconds)) +
            " at that size and its time limit cannot interrupt it, beyond time_limit " +
            format_seconds(seconds) + "; raise time_limit or use method fast",
        {"time_limit", "method"});
  }
  if (options.initial != nullptr) {
    const Placement& init = *options.initial;
    if (init.layers() != layers || init.experts() != experts || init.gpus() != gpus) {
      throw UsageError("ilp: the initial placement is " + std::to_string(init.layers()) + "x" +
                       std::to_string(init.experts()) + " on " + std::to_string(init.gpus()) +
                       " GPUs, the instance " + std::to_string(layers) + "x" +
                       std::to_string(experts) + " on " + std::to_string(gpus));
    }
    const std::string why = balance_violation(init, instance);
    if (!why.empty()) throw UsageError("ilp: the initial placement breaks the balance: " + why);
  }

  IlpModel ilp(instance, pairs);
  const ModelBuilder& builder = ilp.build();
  if (options.log) {
    options.log("ilp: " + std::to_string(builder.cols()) + " columns, " +
                std::to_string(builder.rows()) + " rows, " + std::to_string(pairs.size()) +
                " expert pairs");
  }

  std::unique_ptr<Cbc_Model, CbcDeleter> model(Cbc_newModel());
  builder.load(model.get());
  // Single-threaded whatever options.threads says: CBC's parallel search is not deterministic.
  Cbc_setObjSense(model.get(), 1);
  Cbc_setLogLevel(model.get(), 0);
  Cbc_setParameter(model.get(), "log", "0");
  Cbc_setParameter(model.get(), "slog", "0");
  Cbc_setMaximumSeconds(model.get(), seconds);
  Cbc_setParameter(model.get(), "timeMode", "elapsed");  // wall-clock seconds, not CPU
  Cbc_setParameter(model.get(), "sec", std::to_string(seconds).c_str());

  if (options.initial != nullptr) {
    const std::vector<int> label = canonical_labels(*options.initial, topo);
    Placement start(layers, experts, gpus);
    for (int l = 0; l < layers; ++l) {
      for (int e = 0; e < experts; ++e) {
        start.set(l, e, label[static_cast<std::size_t>(options.initial->gpu(l, e))]);
      }
    }
    const std::vector<double> values = ilp.values(start);
    std::vector<int> index(values.size());
    for (std::size_t c = 0; c < index.size(); ++c) index[c] = static_cast<int>(c);
    Cbc_setMIPStartI(model.get(), static_cast<int>(values.size()), index.data(), values.data());
  }

  Cbc_solve(model.get());

  Placement placement(layers, experts, gpus);
  const double* solution = Cbc_bestSolution(model.get());
  if (solution == nullptr) solution = Cbc_getColSolution(model.get());
  if (Cbc_isProvenInfeasible(model.get()) || solution == nullptr ||
      !ilp.placement_from(solution, placement)) {
    throw Error("ilp: CBC found no placement within " + format_seconds(seconds) +
                    "; give it a longer time_limit or use method fast",
                {"time_limit", "method"});
  }
  const std::string why = balance_violation(placement, instance);
  if (!why.empty()) throw Error("ilp: CBC returned a placement that breaks the balance: " + why);

  const double tokens = graph.tokens() > 0 ? static_cast<double>(graph.tokens()) : 1.0;
  const double cost = placement_cost(pairs, placement, topo);
  const double cbc_cost = Cbc_getObjValue(model.get());
  // The recomputed cost can only be lower than CBC's (a z above its minimum); higher means the
  // model does not describe the objective.
  if (cost > cbc_cost + 1e-6 * std::max(1.0, std::abs(cbc_cost))) {
    throw Error("ilp: internal error: CBC's objective " + std::to_string(cbc_cost) +
                " is below the placement's cost " + std::to_string(cost));
  }

  SolveResult result{std::move(placement)};
  result.method = Method::kIlp;
  result.optimal = Cbc_isProvenOptimal(model.get()) != 0;
  result.objective = cost / tokens;
  const double bound = Cbc_getBestPossibleObjValue(model.get());
  result.lower_bound =
      std::clamp(std::isfinite(bound) ? bound / tokens : 0.0, 0.0, result.objective);
  const int nodes_explored = Cbc_getNodeCount(model.get());
  if (result.optimal) {
    result.detail = "CBC: proven optimal, " + std::to_string(nodes_explored) + " nodes";
  } else {
    const double gap =
        result.objective > 0 ? (result.objective - *result.lower_bound) / result.objective : 0.0;
    if (Cbc_isSecondsLimitReached(model.get())) result.stop = StopReason::kTimeLimit;
    result.detail = std::string("CBC: ") +
                    (Cbc_isSecondsLimitReached(model.get()) ? "time limit reached"
                                                            : "stopped before proving optimality") +
                    ", gap " + percent(gap) + ", " + std::to_string(nodes_explored) + " nodes";
  }
  if (options.log) options.log("ilp: " + result.detail);
  return result;
}

}  // namespace exflow::solvers
