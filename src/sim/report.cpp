// The HTML report (include/exflow/report.hpp): plain SVG charts written by hand, heatmaps as
// palette PNGs (src/sim/png.hpp), one file with everything inline.
#include "exflow/report.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

#include "io/atomic_file.hpp"
#include "png.hpp"

namespace exflow {
namespace {

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string num(double v, int digits = 2) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

// A perceptually ordered palette (dark blue to yellow, after viridis), 256 entries.
const std::array<std::uint8_t, 768>& palette() {
  static const std::array<std::uint8_t, 768> p = [] {
    const double anchors[5][3] = {
        {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    std::array<std::uint8_t, 768> out{};
    for (int i = 0; i < 256; ++i) {
      const double x = i / 255.0 * 4;
      const int a = std::min(3, static_cast<int>(x));
      const double f = x - a;
      for (int c = 0; c < 3; ++c) {
        out[static_cast<std::size_t>(i * 3 + c)] = static_cast<std::uint8_t>(
            std::lround(anchors[a][c] + f * (anchors[a + 1][c] - anchors[a][c])));
      }
    }
    return out;
  }();
  return p;
}

std::string color(double x) {  // x in [0, 1]
  const int i = std::clamp(static_cast<int>(std::lround(x * 255)), 0, 255);
  const auto& p = palette();
  char text[16];
  std::snprintf(text, sizeof text, "#%02x%02x%02x", p[static_cast<std::size_t>(i * 3)],
                p[static_cast<std::size_t>(i * 3 + 1)], p[static_cast<std::size_t>(i * 3 + 2)]);
  return text;
}

const char* kSeriesColors[] = {"#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd"};

// A heatmap cell grid as one PNG inside an SVG, with a caption.
std::string heatmap_svg(const ReportHeatmap& h) {
  const int rows = static_cast<int>(h.rows.size());
  const int cols = static_cast<int>(h.columns.size());
  double top = 0;
  for (double p : h.probability) top = std::max(top, p);
  std::vector<std::uint8_t> pixels(h.probability.size());
  for (std::size_t i = 0; i < pixels.size(); ++i) {
    // Square-root scale over [0, 1], the same for every pair: most of the mass is in few cells.
    pixels[i] = static_cast<std::uint8_t>(std::lround(255 * std::sqrt(h.probability[i])));
  }
  const std::string png = sim::encode_png(cols, rows, pixels, palette());
  const int size = 160;
  return "<figure class=\"heat\"><svg width=\"" + std::to_string(size) + "\" height=\"" +
         std::to_string(size) + "\" viewBox=\"0 0 " + std::to_string(size) + " " +
         std::to_string(size) + "\" role=\"img\"><title>layer " + std::to_string(h.layer) + " to " +
         std::to_string(h.layer + 1) + ", max P = " + num(top, 3) + "</title><image width=\"" +
         std::to_string(size) + "\" height=\"" + std::to_string(size) +
         "\" preserveAspectRatio=\"none\" style=\"image-rendering:pixelated\" href=\"data:image/"
         "png;base64," +
         sim::base64(png) + "\"/></svg><figcaption>" + std::to_string(h.layer) + " &#8594; " +
         std::to_string(h.layer + 1) + " (max " + num(top, 2) + ")</figcaption></figure>";
}

struct Plot {
  double width = 720, height = 260, left = 56, right = 16, top = 16, bottom = 40;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  bool log_x = false;
  double x(double v) const {
    const double a = log_x ? std::log10(v) : v, b0 = log_x ? std::log10(x0) : x0,
                 b1 = log_x ? std::log10(x1) : x1;
    return left + (b1 > b0 ? (a - b0) / (b1 - b0) : 0.5) * (width - left - right);
  }
  double y(double v) const {
    return height - bottom - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * (height - top - bottom);
  }
  std::string open(const std::string& label) const {
    return "<svg width=\"" + num(width, 0) + "\" height=\"" + num(height, 0) + "\" viewBox=\"0 0 " +
           num(width, 0) + " " + num(height, 0) + "\" role=\"img\"><title>" + escape(label) +
           "</title><rect x=\"" + num(left, 0) + "\" y=\"" + num(top, 0) + "\" width=\"" +
           num(width - left - right, 0) + "\" height=\"" + num(height - top - bottom, 0) +
           "\" fill=\"#fafafa\" stroke=\"#ccc\"/>";
  }
  std::string axis_labels(const std::string& xlabel, const std::string& ylabel, int yticks,
                          int ydigits) const {
    std::string s;
    for (int i = 0; i <= yticks; ++i) {
      const double v = y0 + (y1 - y0) * i / yticks;
      s += "<text x=\"" + num(left - 6, 0) + "\" y=\"" + num(y(v) + 4, 1) +
           "\" text-anchor=\"end\" class=\"tick\">" + num(v, ydigits) + "</text>";
      s += "<line x1=\"" + num(left, 0) + "\" x2=\"" + num(width - right, 0) + "\" y1=\"" +
           num(y(v), 1) + "\" y2=\"" + num(y(v), 1) + "\" stroke=\"#e4e4e4\"/>";
    }
    s += "<text x=\"" + num((left + width - right) / 2, 0) + "\" y=\"" + num(height - 6, 0) +
         "\" text-anchor=\"middle\" class=\"label\">" + escape(xlabel) + "</text>";
    s += "<text x=\"14\" y=\"" + num((top + height - bottom) / 2, 0) +
         "\" text-anchor=\"middle\" class=\"label\" transform=\"rotate(-90 14 " +
         num((top + height - bottom) / 2, 0) + ")\">" + escape(ylabel) + "</text>";
    return s;
  }
};

std::string legend(const std::vector<std::string>& names) {
  std::string s = "<p class=\"legend\">";
  for (std::size_t i = 0; i < names.size(); ++i) {
    s += "<span><i style=\"background:" + std::string(kSeriesColors[i % 5]) + "\"></i>" +
         escape(names[i]) + "</span>";
  }
  return s + "</p>";
}

std::string local_fraction_svg(const std::vector<ReportSeries>& series) {
  std::size_t n = 0;
  for (const ReportSeries& s : series) n = std::max(n, s.values.size());
  Plot p;
  p.x0 = 1;
  p.x1 = static_cast<double>(std::max<std::size_t>(n, 2));
  std::string svg = p.open("share of tokens that stay on their GPU, per layer");
  svg += p.axis_labels("layer (move into it)", "share staying", 4, 2);
  for (std::size_t l = 1; l <= n; l += std::max<std::size_t>(1, n / 10)) {
    svg += "<text x=\"" + num(p.x(static_cast<double>(l)), 1) + "\" y=\"" +
           num(p.height - p.bottom + 14, 0) + "\" text-anchor=\"middle\" class=\"tick\">" +
           std::to_string(l) + "</text>";
  }
  std::vector<std::string> names;
  for (std::size_t k = 0; k < series.size(); ++k) {
    std::string points;
    for (std::size_t i = 0; i < series[k].values.size(); ++i) {
      points +=
          num(p.x(static_cast<double>(i + 1)), 1) + "," + num(p.y(series[k].values[i]), 1) + " ";
    }
    svg += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" +
           std::string(kSeriesColors[k % 5]) + "\" points=\"" + points + "\"/>";
    names.push_back(series[k].name);
  }
  return svg + "</svg>" + legend(names);
}

std::string load_svg(const ReportLoad& load) {
  const double cell_w = std::clamp(560.0 / std::max(1, load.gpus), 2.0, 40.0);
  const double cell_h = std::clamp(300.0 / std::max(1, load.layers), 2.0, 14.0);
  const double left = 56, top = 8;
  const double width = left + cell_w * load.gpus + 90, height = top + cell_h * load.layers + 36;
  std::string svg = "<svg width=\"" + num(width, 0) + "\" height=\"" + num(height, 0) +
                    "\" role=\"img\"><title>" + escape(load.name) +
                    ": token-expert assignments per GPU and layer, over the layer's mean</title>";
  double worst = 1;
  for (int l = 0; l < load.layers; ++l) {
    double total = 0, top_load = 0;
    for (int g = 0; g < load.gpus; ++g) {
      const double v = static_cast<double>(load.load[static_cast<std::size_t>(l * load.gpus + g)]);
      total += v;
      top_load = std::max(top_load, v);
    }
    if (total > 0) worst = std::max(worst, top_load / (total / load.gpus));
  }
  for (int l = 0; l < load.layers; ++l) {
    double total = 0;
    for (int g = 0; g < load.gpus; ++g) {
      total += static_cast<double>(load.load[static_cast<std::size_t>(l * load.gpus + g)]);
    }
    const double mean = total / load.gpus;
    for (int g = 0; g < load.gpus; ++g) {
      const double ratio =
          mean > 0
              ? static_cast<double>(load.load[static_cast<std::size_t>(l * load.gpus + g)]) / mean
              : 0;
      svg += "<rect x=\"" + num(left + g * cell_w, 1) + "\" y=\"" + num(top + l * cell_h, 1) +
             "\" width=\"" + num(cell_w, 1) + "\" height=\"" + num(cell_h, 1) + "\" fill=\"" +
             color(ratio / worst) + "\"><title>layer " + std::to_string(l) + ", GPU " +
             std::to_string(g) + ": " + num(ratio, 2) + " x mean</title></rect>";
    }
  }
  for (int l = 0; l < load.layers; l += std::max(1, load.layers / 8)) {
    svg += "<text x=\"" + num(left - 6, 0) + "\" y=\"" + num(top + (l + 0.8) * cell_h, 1) +
           "\" text-anchor=\"end\" class=\"tick\">" + std::to_string(l) + "</text>";
  }
  svg += "<text x=\"" + num(left + cell_w * load.gpus / 2, 0) + "\" y=\"" + num(height - 8, 0) +
         "\" text-anchor=\"middle\" class=\"label\">GPU</text>";
  // Colour scale: 0 to the worst ratio.
  const double sx = left + cell_w * load.gpus + 16;
  for (int i = 0; i < 10; ++i) {
    svg += "<rect x=\"" + num(sx, 0) + "\" y=\"" + num(top + 10 * (9 - i), 0) +
           "\" width=\"12\" height=\"10\" fill=\"" + color(i / 9.0) + "\"/>";
  }
  svg += "<text x=\"" + num(sx + 16, 0) + "\" y=\"" + num(top + 10, 0) + "\" class=\"tick\">" +
         num(worst, 2) + "x</text><text x=\"" + num(sx + 16, 0) + "\" y=\"" + num(top + 100, 0) +
         "\" class=\"tick\">0</text>";
  return svg + "</svg>";
}

std::string convergence_svg(const std::vector<ReportConvergencePoint>& points, double vanilla) {
  Plot p;
  p.log_x = true;
  p.x0 = static_cast<double>(points.front().tokens);
  p.x1 = static_cast<double>(points.back().tokens);
  double hi = vanilla, lo = vanilla;
  for (const auto& c : points) {
    hi = std::max(hi, c.cost);
    lo = std::min(lo, c.cost);
  }
  p.y0 = std::floor(lo * 0.95);
  p.y1 = std::ceil(hi * 1.02);
  std::string svg = p.open("cost on the whole trace of the placement solved on the first n tokens");
  svg += p.axis_labels("tokens profiled (log scale)", "cost per token", 4, 1);
  svg += "<line x1=\"" + num(p.left, 0) + "\" x2=\"" + num(p.width - p.right, 0) + "\" y1=\"" +
         num(p.y(vanilla), 1) + "\" y2=\"" + num(p.y(vanilla), 1) +
         "\" stroke=\"#7f7f7f\" stroke-dasharray=\"6 4\"/>";
  std::string line;
  for (const auto& c : points) {
    const double x = p.x(static_cast<double>(c.tokens)), y = p.y(c.cost);
    line += num(x, 1) + "," + num(y, 1) + " ";
    svg += "<circle cx=\"" + num(x, 1) + "\" cy=\"" + num(y, 1) +
           "\" r=\"4\" fill=\"#d62728\"><title>" + std::to_string(c.tokens) +
           " tokens: " + num(c.cost, 3) + "</title></circle>";
    svg += "<text x=\"" + num(x, 1) + "\" y=\"" + num(p.height - p.bottom + 14, 0) +
           "\" text-anchor=\"middle\" class=\"tick\">" + std::to_string(c.tokens) + "</text>";
  }
  svg += "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"" + line + "\"/>";
  return svg + "</svg>" + legend({"vanilla (dashed)", "solved on the first n tokens"});
}

// Cost against the share of slots allowed to move, the budgets evenly spaced.
std::string moves_svg(const std::vector<ReportMovesPoint>& points) {
  Plot p;
  p.x0 = 0;
  p.x1 = static_cast<double>(points.size() - 1);
  double hi = points.front().cost, lo = hi;
  for (const auto& m : points) {
    hi = std::max(hi, m.cost);
    lo = std::min(lo, m.cost);
  }
  const double pad = std::max(1e-3, (hi - lo) * 0.1);
  p.y0 = lo - pad;
  p.y1 = hi + pad;
  std::string svg = p.open("cost per token against the expert slots allowed to move");
  svg += p.axis_labels("expert slots allowed to move (share of all)", "cost per token", 4, 2);
  std::string line;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const ReportMovesPoint& m = points[i];
    const double x = p.x(static_cast<double>(i)), y = p.y(m.cost);
    line += num(x, 1) + "," + num(y, 1) + " ";
    svg += "<circle cx=\"" + num(x, 1) + "\" cy=\"" + num(y, 1) +
           "\" r=\"4\" fill=\"#1f77b4\"><title>at most " + std::to_string(m.max_moves) +
           " slots (" + num(m.percent, 0) + "%), " + std::to_string(m.moved) +
           " moved: " + num(m.cost, 3) + "</title></circle>";
    svg += "<text x=\"" + num(x, 1) + "\" y=\"" + num(p.height - p.bottom + 14, 0) +
           "\" text-anchor=\"middle\" class=\"tick\">" + num(m.percent, 0) + "% (" +
           std::to_string(m.max_moves) + ")</text>";
  }
  svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"" + line + "\"/>";
  return svg + "</svg>";
}

std::string simulation_svg(const std::vector<ReportSimulation>& sims) {
  double top = 0;
  for (const auto& s : sims) top = std::max(top, s.alltoall_ms + s.allgather_ms);
  const double left = 300, bar_h = 26, width = 860;
  const double height = 16 + bar_h * 1.5 * static_cast<double>(sims.size()) + 24;
  std::string svg = "<svg width=\"" + num(width, 0) + "\" height=\"" + num(height, 0) +
                    "\" role=\"img\"><title>projected communication time per decode step</title>";
  const double scale = top > 0 ? (width - left - 170) / top : 0;
  for (std::size_t i = 0; i < sims.size(); ++i) {
    const ReportSimulation& s = sims[i];
    const double y = 12 + static_cast<double>(i) * bar_h * 1.5;
    svg += "<text x=\"" + num(left - 8, 0) + "\" y=\"" + num(y + bar_h * 0.65, 1) +
           "\" text-anchor=\"end\" class=\"label\">" + escape(s.name) + "</text>";
    svg += "<rect x=\"" + num(left, 0) + "\" y=\"" + num(y, 1) + "\" width=\"" +
           num(s.alltoall_ms * scale, 1) + "\" height=\"" + num(bar_h, 0) +
           "\" fill=\"#1f77b4\"><title>all-to-all " + num(s.alltoall_ms, 3) + " ms</title></rect>";
    svg += "<rect x=\"" + num(left + s.alltoall_ms * scale, 1) + "\" y=\"" + num(y, 1) +
           "\" width=\"" + num(s.allgather_ms * scale, 1) + "\" height=\"" + num(bar_h, 0) +
           "\" fill=\"#ff7f0e\"><title>all-gather " + num(s.allgather_ms, 3) + " ms</title></rect>";
    svg += "<text x=\"" + num(left + (s.alltoall_ms + s.allgather_ms) * scale + 6, 1) + "\" y=\"" +
           num(y + bar_h * 0.65, 1) + "\" class=\"label\">" +
           num(s.alltoall_ms + s.allgather_ms, 3) + " ms (" + num(s.speedup, 2) + "x)</text>";
  }
  svg +=
      "</svg><p class=\"legend\"><span><i style=\"background:#1f77b4\"></i>all-to-all</span>"
      "<span><i style=\"background:#ff7f0e\"></i>KV all-gather</span></p>";
  return svg;
}

// The schemes side by side: rows schemes, columns vanilla and each placement.
std::string schemes_table(const ReportData& d) {
  std::string t = "<table class=\"schemes\"><tr><th rowspan=\"2\">scheme</th>";
  for (const std::string& c : d.scheme_columns) {
    t += "<th colspan=\"3\">" + escape(c) + "</th>";
  }
  t += "</tr><tr>";
  for (std::size_t i = 0; i < d.scheme_columns.size(); ++i) {
    t += "<th>ms per step (speedup)</th><th>inter-node / token</th><th>intra-node / token</th>";
  }
  t += "</tr>";
  for (const ReportSchemeRow& r : d.schemes) {
    t += std::string("<tr") + (r.primary ? " class=\"primary\"" : "") + "><td>" + escape(r.scheme) +
         (r.primary ? " *" : "") + "</td>";
    for (const ReportSchemeCell& c : r.cells) {
      t += "<td>" + num(c.ms, 3) + " (" + num(c.speedup, 2) + "x)</td><td>" + num(c.inter, 3) +
           "</td><td>" + num(c.intra, 3) + "</td>";
    }
    t += "</tr>";
  }
  return t + "</table>";
}

}  // namespace

std::string render_html_report(const ReportData& d) {
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape(d.title) +
      "</title><style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:"
      "1200px}h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}"
      "table.facts td{padding:1px 12px 1px 0}.heat{display:inline-block;margin:4px;text-align:"
      "center}.heat figcaption{font-size:11px}.tick{font-size:11px;fill:#555}.label{font-size:"
      "12px;fill:#222}.legend span{margin-right:16px}.legend i{display:inline-block;width:12px;"
      "height:12px;margin-right:4px;vertical-align:-1px}.loads{display:inline-block;margin-right:"
      "24px;vertical-align:top}table.schemes{border-collapse:collapse}table.schemes "
      "td,table.schemes "
      "th{border:1px solid #ddd;padding:2px 8px;text-align:right}table.schemes th{text-align:"
      "center}table.schemes "
      "td:first-child{text-align:left}tr.primary{background:#eef4fb}</style></head><body>\n<h1>" +
      escape(d.title) + "</h1>\n<table class=\"facts\">";
  for (const auto& [k, v] : d.facts) {
    h += "<tr><td>" + escape(k) + "</td><td>" + escape(v) + "</td></tr>";
  }
  h += "</table>\n";
  if (!d.simulation.empty()) {
    h += "<h2>Projected communication time per decode step</h2><p>" + escape(d.simulation_note) +
         "</p>" + simulation_svg(d.simulation) + "\n";
  }
  if (!d.schemes.empty()) {
    h += "<h2>Schemes side by side</h2><p>Each engine's communication scheme timed from its own "
         "traffic (docs/simulator.md): time per decode step with the speedup over "
         "baseline/vanilla, and the evaluator's transfers per token across and within nodes. "
         "* marks the scheme asked for.</p>" +
         schemes_table(d) + "\n";
    if (!d.fastest.empty()) h += "<p class=\"fastest\">Fastest: " + escape(d.fastest) + "</p>\n";
  }
  if (!d.local_fraction.empty()) {
    h += "<h2>Tokens that stay on their GPU</h2><p>Share of tokens whose experts of the next "
         "layer are all on the GPU they are on (context-coherent scheme).</p>" +
         local_fraction_svg(d.local_fraction) + "\n";
  }
  if (!d.loads.empty()) {
    h += "<h2>Token load per GPU and layer</h2><p>Token-expert assignments each GPU serves, "
         "over the layer's mean.</p>";
    for (const ReportLoad& l : d.loads) {
      h += "<div class=\"loads\"><h3>" + escape(l.name) + "</h3>" + load_svg(l) + "</div>";
    }
    h += "\n";
  }
  if (!d.convergence.empty()) {
    h += "<h2>How many tokens are enough</h2><p>Cost on the whole trace of the placement solved "
         "on its first n tokens.</p>" +
         convergence_svg(d.convergence, d.vanilla_cost) + "\n";
  }
  if (!d.moves_curve.empty()) {
    h += "<h2>Rebalancing: cost against the experts moved</h2><p>" + escape(d.moves_note) + "</p>" +
         moves_svg(d.moves_curve) + "\n";
  }
  if (!d.affinity.empty()) {
    h += "<h2>Inter-layer expert affinity</h2><p>P(expert j at layer l + 1 | expert i at layer "
         "l): rows i, columns j, colour from 0 (dark) to 1 (yellow) on a square-root scale. " +
         escape(d.affinity_note) + "</p>";
    for (const ReportHeatmap& m : d.affinity) h += heatmap_svg(m);
    h += "\n";
  }
  return h + "</body></html>\n";
}

void write_html_report(const std::string& path, const ReportData& data) {
  io::write_file_atomically(path, render_html_report(data));
}

}  // namespace exflow
