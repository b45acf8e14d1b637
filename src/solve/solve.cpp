// The solver front door: checks the request, picks the method, re-checks the answer, attaches
// the objective and the tightest lower bound known.
#include "exflow/solve.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "exflow/affinity.hpp"
#include "exflow/error.hpp"
#include "exflow/topology.hpp"
#include "solve/methods.hpp"

namespace exflow {
namespace {

// Method auto proves the optimum with exact when exact's estimated running time is at most
// this; beyond it, fast answers in a fraction of the time (usually at or near the optimum).
constexpr double kAutoExactSeconds = 1.0;

}  // namespace

const char* to_string(Method method) {
  switch (method) {
    case Method::kAuto:
      return "auto";
    case Method::kExact:
      return "exact";
    case Method::kIlp:
      return "ilp";
    case Method::kFast:
      return "fast";
    case Method::kBcd:
      return "bcd";
    case Method::kVanilla:
      return "vanilla";
    case Method::kEplb:
      return "eplb";
  }
  return "?";
}

Method parse_method(const std::string& name) {
  for (Method m : {Method::kAuto, Method::kExact, Method::kIlp, Method::kFast, Method::kBcd,
                   Method::kVanilla, Method::kEplb}) {
    if (name == to_string(m)) return m;
  }
  throw UsageError("unknown method '" + name + "' (auto, exact, ilp, fast, bcd, vanilla, eplb)");
}

SolveResult solve(const AffinityGraph& graph, const Topology& topology,
                  const SolveOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options.method == Method::kEplb) {
    throw UsageError("method eplb places by expert loads: run it through exflow::plan", {"method"});
  }
  const int E = graph.experts();
  const int G = topology.gpus();
  int min_per_gpu = 0;
  int max_per_gpu = 0;
  if (options.min_experts_per_gpu < 0) {
    min_per_gpu = max_per_gpu = topology.experts_per_gpu(E);
  } else {
    min_per_gpu = options.min_experts_per_gpu;
    if (static_cast<long long>(min_per_gpu) * G > E) {
      throw UsageError("at least " + std::to_string(min_per_gpu) + " experts on each of " +
                       std::to_string(G) + " GPUs needs " + std::to_string(min_per_gpu * G) +
                       " experts per layer; there are " + std::to_string(E));
    }
    max_per_gpu = E - (G - 1) * min_per_gpu;
  }
  if (options.initial != nullptr) {
    validate(*options.initial, topology, min_per_gpu, max_per_gpu, "initial placement");
  }
  const solvers::Instance instance{graph, topology, min_per_gpu, max_per_gpu};

  // Partitioning solves each split with options.method (auto resolves per split), so the
  // requested method is what it reports. Auto says in `detail` what it chose and why.
  Method method = options.method;
  std::string auto_choice;
  if (method == Method::kAuto && !options.bipart) {
    const std::string refusal = solvers::exact_refusal(instance);
    if (!refusal.empty()) {
      method = Method::kFast;
      auto_choice = "auto: fast, exact refuses (" + refusal + ")";
    } else {
      const double seconds = solvers::exact_seconds_estimate(instance);
      method = seconds <= kAutoExactSeconds ? Method::kExact : Method::kFast;
      char buf[128];
      std::snprintf(buf, sizeof buf, "auto: %s, exact estimated at %.2g s (%s the %g s budget)",
                    to_string(method), seconds, method == Method::kExact ? "within" : "over",
                    kAutoExactSeconds);
      auto_choice = buf;
    }
  }
  SolveResult result(Placement(graph.layers(), E, G));
  if (options.bipart) {
    result = solvers::solve_bipart(graph, topology, options);
  } else {
    switch (method) {
      case Method::kExact:
        result = solvers::solve_exact(instance, options);
        break;
      case Method::kIlp: {
        // CBC proves more, and never returns worse than its start, from a good incumbent:
        // without a given start, fast provides one.
        SolveOptions ilp = options;
        std::optional<Placement> start;
        if (ilp.initial == nullptr) {
          start = solvers::solve_fast(instance, options).placement;
          ilp.initial = &*start;
        }
        result = solvers::solve_ilp(instance, ilp);
        break;
      }
      case Method::kFast:
        result = solvers::solve_fast(instance, options);
        break;
      case Method::kBcd:
        result = solvers::solve_bcd(instance, options);
        break;
      case Method::kVanilla:
      case Method::kEplb:
      case Method::kAuto:
        result.placement = vanilla_placement(graph.layers(), E, topology);
        result.detail = "contiguous placement";
        break;
    }
  }
  result.method = method;
  if (!auto_choice.empty())
    result.detail = result.detail.empty() ? auto_choice : auto_choice + "; " + result.detail;
  validate(result.placement, topology, min_per_gpu, max_per_gpu,
           std::string(to_string(method)) + " placement");

  result.objective = graph_objective(graph, result.placement, topology);
  double bound = objective_lower_bound(graph, topology, options.min_experts_per_gpu);
  if (result.optimal) bound = result.objective;
  if (result.lower_bound) bound = std::max(bound, *result.lower_bound);
  if (bound > result.objective + 1e-9 * std::max(1.0, result.objective)) {
    throw Error("internal error: lower bound " + std::to_string(bound) + " exceeds the objective " +
                std::to_string(result.objective) + " of the " + to_string(method) + " placement");
  }
  result.lower_bound = std::min(bound, result.objective);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace exflow
