// The HTML report of `exflow report`: one self-contained file (inline SVG, heatmaps as embedded
// PNG data, no script, no network fetch) built from numbers the evaluator, the affinity profile,
// the solver and the simulator computed (docs/report.md).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace exflow {

// P(expert j at layer + 1 | expert i at layer) over the rows and columns shown.
struct ReportHeatmap {
  int layer = 0;                    // the pair (layer, layer + 1)
  std::vector<int> rows;            // experts of `layer` shown (all, or the most loaded)
  std::vector<int> columns;         // experts of `layer + 1` shown
  std::vector<double> probability;  // [rows, columns]
};

struct ReportSeries {
  std::string name;
  std::vector<double> values;
};

struct ReportLoad {
  std::string name;
  int layers = 0;
  int gpus = 0;
  std::vector<std::int64_t> load;  // [layers, gpus] token-expert assignments served
};

struct ReportConvergencePoint {
  std::int64_t tokens = 0;  // the placement was solved on the first `tokens` tokens
  double cost = 0;          // its cost on the whole trace (evaluator)
};

struct ReportSimulation {
  std::string name;
  double alltoall_ms = 0;   // per decode step
  double allgather_ms = 0;  // per decode step
  double speedup = 0;       // over the first configuration
};

// One configuration of the schemes table: a scheme with one placement (or vanilla).
struct ReportSchemeCell {
  double ms = 0;       // communication per decode step
  double speedup = 0;  // over the simulation's first configuration (baseline/vanilla)
  double inter = 0;    // inter-node transfers per token (evaluator)
  double intra = 0;    // intra-node transfers per token
};

// A row of the schemes table: one cell per column (vanilla, then each placement).
struct ReportSchemeRow {
  std::string scheme;
  bool primary = false;  // the scheme the report was asked about (--scheme)
  std::vector<ReportSchemeCell> cells;
};

// One budget of the rebalancing chart: the cost after moving at most `max_moves` expert slots
// of the previous placement (`percent` of them), `moved` of them used.
struct ReportMovesPoint {
  double percent = 0;
  std::int64_t max_moves = 0;
  std::int64_t moved = 0;
  double cost = 0;  // per token, the search's exact cost of the scheme
};

struct ReportData {
  std::string title;
  std::vector<std::pair<std::string, std::string>> facts;  // shown at the top, in order
  std::vector<ReportHeatmap> affinity;                     // one per layer pair
  std::string affinity_note;                               // which rows and columns are shown
  std::vector<ReportSeries> local_fraction;                // per configuration, [layers - 1]
  std::vector<ReportLoad> loads;                           // per configuration
  std::vector<ReportConvergencePoint> convergence;
  double vanilla_cost = 0;  // the convergence chart's reference line
  std::vector<ReportSimulation> simulation;
  std::string simulation_note;                // the cluster and model the simulation assumed
  std::vector<std::string> scheme_columns;    // "vanilla", then each placement's name
  std::vector<ReportSchemeRow> schemes;       // the schemes side by side
  std::string fastest;                        // the fastest (scheme, placement), in words
  std::vector<ReportMovesPoint> moves_curve;  // rebalancing from a previous placement
  std::string moves_note;                     // what was rebalanced, for which scheme
};

std::string render_html_report(const ReportData& data);
// Writes render_html_report(data) to `path` atomically (IoError on failure).
void write_html_report(const std::string& path, const ReportData& data);

}  // namespace exflow
