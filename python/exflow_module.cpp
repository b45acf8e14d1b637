// The native part of the Python package `exflow` (docs/python.md), built as exflow._native and
// re-exported by python/exflow/__init__.py: routing ids in, placements and metrics out.
//
//   import exflow
//   p = exflow.solve(ids, gpus_per_node=8)      # ids: integer [T, L] or [T, L, k]
//   p.gpu_of, p.metrics, p.to_csv("p.csv")
//
// ids may be any integer NumPy array, or anything NumPy can read without help (a DLPack
// exporter such as a CPU torch tensor, an object with __array__, nested lists). Every integer
// array argument is copied once into memory only the call holds, and only the copy is checked
// and read: a thread that writes the caller's array meanwhile cannot change what was checked.
// The GIL is released while the library works, and Ctrl-C (KeyboardInterrupt) stops a call at
// its next pass over the ids. Library errors keep their one-line messages: bad input or usage
// raises ValueError, a failed read or write OSError, an array of the wrong dtype TypeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "exflow/affinity.hpp"
#include "exflow/eplb.hpp"
#include "exflow/error.hpp"
#include "exflow/evaluate.hpp"
#include "exflow/formats.hpp"
#include "exflow/json.hpp"
#include "exflow/placement.hpp"
#include "exflow/plan.hpp"
#include "exflow/progress.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"

namespace py = pybind11;

namespace exflow::python {
namespace {

// A placement with the topology it was made for and the metrics computed for it.
struct PyPlacement {
  Placement placement;
  int gpus_per_node = 0;
  int nodes = 1;
  py::dict metrics;
};

py::object json_to_python(const nlohmann::json& j) {
  return py::module_::import("json").attr("loads")(j.dump());
}

// `value` (an array, or anything NumPy reads) as an ndarray of an integer dtype; anything else
// (float, bool, str, object) is a TypeError naming the argument and the dtype.
py::array integer_array(const py::object& value, const std::string& name) {
  py::module_ np = py::module_::import("numpy");
  py::object obj = value;
  if (!py::isinstance<py::array>(obj)) {
    if (py::hasattr(obj, "__dlpack__") && py::hasattr(np, "from_dlpack")) {
      try {
        obj = np.attr("from_dlpack")(obj);
      } catch (const py::error_already_set&) {
        obj = np.attr("asarray")(value);
      }
    } else {
      obj = np.attr("asarray")(value);
    }
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw py::type_error(name + " must be an integer array, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  }
  return a;
}

// `value` as a new C-ordered int64 array that only the caller holds.
py::array_t<std::int64_t> owned_int64_array(const py::object& value, const std::string& name) {
  const py::array a = integer_array(value, name);
  return py::reinterpret_steal<py::array_t<std::int64_t>>(
      a.attr("astype")("int64", py::arg("order") = "C", py::arg("copy") = true).release());
}

void check_threads(int threads) {
  if (threads < 0 || threads > 4096) {
    throw py::value_error("threads must be from 0 (all cores) to 4096, got " +
                          std::to_string(threads));
  }
}

// A path argument as the library takes it: a path with a NUL byte names no file.
std::string path_argument(const std::string& path, const char* name) {
  if (path.find('\0') != std::string::npos) {
    throw py::value_error(std::string(name) + " contains a NUL byte");
  }
  return path;
}

// Thrown through the library's passes over the ids once Ctrl-C was pressed.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

// The library's passes over the ids call advance() from their workers; on the thread that made
// the call (the one Python delivers signals to), at most every 50 ms, it asks Python whether a
// signal handler raised (Ctrl-C: KeyboardInterrupt). From then on every call throws
// Interrupted, the pass unwinds, and rethrow_if_interrupted() raises the Python error.
class InterruptPoll final : public Progress {
 public:
  InterruptPoll() : caller_(std::this_thread::get_id()) {}
  void begin(const char*, std::int64_t) override { poll(); }
  void advance(std::int64_t) override { poll(); }
  void end() override {}

  // With the GIL held, after the library returned or threw.
  void rethrow_if_interrupted() {
    if (error_) throw *error_;
  }

 private:
  void poll() {
    if (interrupted_.load(std::memory_order_relaxed)) throw Interrupted();
    if (std::this_thread::get_id() != caller_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(50)) return;
    last_ = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      error_.emplace();
      interrupted_.store(true);
      throw Interrupted();
    }
  }

  const std::thread::id caller_;
  std::chrono::steady_clock::time_point last_{};
  std::atomic<bool> interrupted_{false};
  std::optional<py::error_already_set> error_;
};

// Runs `work` with the GIL released and `poll` watching for Ctrl-C; raises KeyboardInterrupt
// (or whatever the signal handler raised) if it came.
template <typename Work>
void run_interruptibly(InterruptPoll& poll, Work&& work) {
  try {
    py::gil_scoped_release release;
    work();
  } catch (const Interrupted&) {
    poll.rethrow_if_interrupted();
    throw;
  }
}

// The ids as a Trace over one copy of them that only the trace holds.
Trace trace_from(const py::object& ids, std::optional<int> experts, std::optional<int> topk,
                 int threads) {
  check_threads(threads);
  py::array a = integer_array(ids, "ids");
  if (a.ndim() != 2 && a.ndim() != 3) {
    throw InputError("ids must be [tokens, layers] or [tokens, layers, k], got " +
                     std::to_string(a.ndim()) + " dimensions");
  }
  const char kind = a.dtype().kind();
  a = py::reinterpret_steal<py::array>(a.attr("astype")(a.dtype().attr("newbyteorder")("="),
                                                        py::arg("order") = "C",
                                                        py::arg("copy") = true)
                                           .release());
  Trace::Buffer b;
  b.data = a.data();
  b.item_size = static_cast<int>(a.itemsize());
  b.is_signed = kind == 'i';
  b.fortran_order = false;
  b.tokens = a.shape(0);
  b.layers = static_cast<int>(a.shape(1));
  b.k = a.ndim() == 3 ? static_cast<int>(a.shape(2)) : 1;
  b.source = "ids";
  // The copy stays alive while the trace does; dropping it needs the GIL.
  auto* holder = new py::object(a);
  b.keepalive = std::shared_ptr<const void>(holder, [](const void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<const py::object*>(p);
  });
  TraceOpenOptions options;
  options.experts = experts;
  options.topk = topk;
  options.threads = threads;
  std::optional<Trace> trace;
  {
    py::gil_scoped_release release;
    trace.emplace(Trace::from_buffer(b, options));
  }
  return std::move(*trace);
}

py::dict profile_ids(const py::object& ids, std::optional<int> experts, std::optional<int> topk,
                     int threads) {
  Trace trace = trace_from(ids, experts, topk, threads);
  nlohmann::json j;
  InterruptPoll poll;
  run_interruptibly(poll, [&] {
    AffinityGraph graph = AffinityGraph::from_trace(trace, threads, &poll);
    j = trace;
    j.update(nlohmann::json(exflow::profile(graph)));
  });
  return json_to_python(j);
}

std::string number_text(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// A Python int or float as a double; an int beyond double's range is a ValueError naming the
// option.
double as_double(const PlanOptionSpec& spec, const py::handle& value) {
  const double v = PyFloat_AsDouble(value.ptr());
  if (v == -1.0 && PyErr_Occurred() != nullptr) {
    PyErr_Clear();
    throw py::value_error(spec.name + " is out of range, got " +
                          py::str(value).cast<std::string>().substr(0, 40));
  }
  return v;
}

// A Python keyword value as the text the options table parses, refusing values of the wrong
// type (bool is not a number here, nor a number a bool).
std::string option_text(const PlanOptionSpec& spec, const py::handle& value) {
  const bool is_bool = py::isinstance<py::bool_>(value);
  const bool is_int = py::isinstance<py::int_>(value) && !is_bool;
  const bool is_float = py::isinstance<py::float_>(value);
  auto refuse = [&](const char* expected) {
    throw py::type_error("solve(): " + spec.name + " must be " + expected + ", got " +
                         py::str(py::type::of(value).attr("__name__")).cast<std::string>());
  };
  switch (spec.type) {
    case OptionType::kInt:
      if (!is_int) refuse("an int");
      return py::str(value).cast<std::string>();
    case OptionType::kFloat:
      if (!is_int && !is_float) refuse("a number");
      return number_text(as_double(spec, value));
    case OptionType::kBool:
      if (!is_bool) refuse("a bool");
      return value.cast<bool>() ? "true" : "false";
    case OptionType::kText:
      if (!py::isinstance<py::str>(value)) refuse("a str");
      return value.cast<std::string>();
    case OptionType::kWordOrNumber:
      if (py::isinstance<py::str>(value)) return value.cast<std::string>();
      if (!is_int && !is_float) refuse("a str or a number");
      return number_text(as_double(spec, value));
  }
  return {};
}

PlanOptions plan_options_from(const py::kwargs& keywords, int threads) {
  PlanOptions options;
  options.threads = threads;
  for (const auto& [key, value] : keywords) {
    const std::string name = py::str(key).cast<std::string>();
    const PlanOptionSpec* spec = nullptr;
    for (const PlanOptionSpec& s : plan_option_specs()) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr) {
      throw py::type_error("solve() got an unexpected keyword argument '" + name + "'");
    }
    spec->set(options, option_text(*spec, value));
  }
  return options;
}

PyPlacement placement_from_phy2log(const py::object& phy2log, int gpus_per_node, int nodes,
                                   int experts, const std::string& what,
                                   const py::object& dense_layers);

PyPlacement solve_ids(const py::object& ids, int gpus_per_node, int nodes,
                      std::optional<int> experts, std::optional<int> topk, int threads,
                      double intra_cost, double inter_cost, const py::kwargs& keywords) {
  // `previous` is a placement, not a value of the options table.
  py::kwargs table_keywords;
  py::object previous = py::none();
  for (const auto& [key, value] : keywords) {
    if (py::str(key).cast<std::string>() == "previous") {
      previous = py::reinterpret_borrow<py::object>(value);
    } else {
      table_keywords[key] = value;
    }
  }
  check_threads(threads);
  PlanOptions options = plan_options_from(table_keywords, threads);
  Trace trace = trace_from(ids, experts, topk, threads);
  const Topology topology(nodes, gpus_per_node, intra_cost, inter_cost);
  if (py::isinstance<PyPlacement>(previous)) {
    options.previous = previous.cast<const PyPlacement&>().placement;
  } else if (!previous.is_none()) {
    options.previous = placement_from_phy2log(previous, gpus_per_node, nodes, trace.experts(),
                                              "previous", py::none())
                           .placement;
  }
  std::optional<PlanResult> r;
  nlohmann::json j;
  InterruptPoll poll;
  options.progress = &poll;
  run_interruptibly(poll, [&] {
    r.emplace(plan(trace, topology, options));
    j = *r;
    j["seconds"] = r->seconds;
    j["options"] = plan_options_json(options);
  });
  PyPlacement p{r->placement, gpus_per_node, nodes, {}};
  p.metrics = json_to_python(j);
  return p;
}

py::dict evaluate_ids(const py::object& ids, const PyPlacement& placement,
                      std::optional<int> gpus_per_node, std::optional<int> nodes,
                      std::optional<int> experts, std::optional<int> topk, int threads,
                      double intra_cost, double inter_cost, std::int64_t seq_len,
                      const std::string& scheme, const std::string& replica_choice) {
  Trace trace = trace_from(ids, experts, topk, threads);
  const int n = nodes.value_or(placement.nodes);
  const int p = gpus_per_node.value_or(placement.placement.gpus() / std::max(1, n));
  const Topology topology(n, p, intra_cost, inter_cost);
  if (placement.placement.layers() != trace.layers() ||
      placement.placement.experts() != trace.experts()) {
    throw InputError("placement has " + std::to_string(placement.placement.layers()) +
                     " layers x " + std::to_string(placement.placement.experts()) +
                     " experts, the ids " + std::to_string(trace.layers()) + " x " +
                     std::to_string(trace.experts()));
  }
  EvalOptions eo;
  eo.threads = threads;
  eo.sequence_length = seq_len;
  eo.scheme = parse_scheme(scheme);
  eo.replica_choice = parse_replica_choice(replica_choice);
  nlohmann::json j;
  InterruptPoll poll;
  eo.progress = &poll;
  run_interruptibly(poll,
                    [&] { j = compare_with_vanilla(trace, placement.placement, topology, eo); });
  return json_to_python(j);
}

// The docstring of solve(), its keywords from the options table.
std::string solve_doc() {
  std::string doc =
      "solve(ids, *, gpus_per_node=8, nodes=1, experts=None, topk=None, threads=0, "
      "intra_cost=1.0, inter_cost=2.0, **options)\n\n"
      "A placement for the ids, as exflow solve computes it (exflow::plan), with .metrics.\n\n"
      "options (exflow solve's flags, as keywords):\n";
  for (const PlanOptionSpec& s : plan_option_specs()) {
    doc += "  " + s.name + " (default " +
           (s.shown_default.empty() ? s.value(PlanOptions{}) : s.shown_default) + "): " + s.help +
           "\n";
  }
  doc +=
      "  previous (default None): rebalance from the placement the engine runs now, a "
      "Placement or a phy2log [layers, slots] (EPLB's or SGLang's physical_to_logical_map); "
      "max_moves limits the slots that change\n";
  return doc;
}

template <typename T = std::int32_t>
py::array_t<T> to_array(const std::vector<int>& values, std::vector<py::ssize_t> shape) {
  py::array_t<T> out(shape);
  T* data = out.mutable_data();
  for (std::size_t i = 0; i < values.size(); ++i) data[i] = values[i];
  return out;
}

// EPLB maps as the dict of int64 arrays that to_eplb and _rebalance_experts return.
py::dict eplb_maps_dict(const EplbMaps& maps) {
  py::dict d;
  d["phy2log"] = to_array<std::int64_t>(maps.phy2log, {maps.layers, maps.slots});
  d["log2phy"] =
      to_array<std::int64_t>(maps.log2phy, {maps.layers, maps.experts, maps.max_replicas});
  d["logcnt"] = to_array<std::int64_t>(maps.logcnt, {maps.layers, maps.experts});
  return d;
}

// DeepSeek's EPLB (exflow::rebalance_experts) on loads [layers, experts]: integer loads through
// the int64 overload, real ones through the double one (both round to float as upstream does).
py::dict rebalance_loads(const py::array& weight, int num_replicas, int num_groups, int num_nodes,
                         int num_gpus) {
  const char kind = weight.dtype().kind();
  if (kind != 'i' && kind != 'u' && kind != 'f') {
    throw InputError("weight must be an integer or floating-point array, got dtype " +
                     py::str(weight.dtype()).cast<std::string>());
  }
  if (weight.ndim() != 2) {
    throw InputError("weight must be [layers, experts], got " + std::to_string(weight.ndim()) +
                     " dimensions");
  }
  const int layers = static_cast<int>(weight.shape(0));
  const int experts = static_cast<int>(weight.shape(1));
  EplbMaps maps;
  if (kind == 'f') {
    const auto w = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(weight);
    std::vector<double> values(w.data(), w.data() + w.size());
    py::gil_scoped_release release;
    maps =
        rebalance_experts(values, layers, experts, num_replicas, num_groups, num_nodes, num_gpus);
  } else {
    const auto w =
        py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(weight);
    std::vector<std::int64_t> values(w.data(), w.data() + w.size());
    py::gil_scoped_release release;
    maps =
        rebalance_experts(values, layers, experts, num_replicas, num_groups, num_nodes, num_gpus);
  }
  return eplb_maps_dict(maps);
}

// A placement from SGLang's physical_to_logical_map [layers, slots] (EPLB's phy2log), checked
// by placement_from_eplb_maps; `what` names the source in messages.
// dense_layers=: None (every decoder layer is MoE), a count of leading dense layers, a list of
// dense decoder layers, or a model name ("deepseek-v3"), as the CLI's --dense-layers.
DecoderLayers decoder_layers_of(const py::object& value) {
  if (value.is_none()) return {};
  if (py::isinstance<py::bool_>(value)) {
    throw py::type_error("dense_layers must be an int, a list of ints or a model name, got bool");
  }
  if (py::isinstance<py::int_>(value)) {
    return parse_dense_layers(std::to_string(value.cast<long long>()));
  }
  if (py::isinstance<py::str>(value)) {
    const std::string text = value.cast<std::string>();
    if (text.find(',') != std::string::npos || text.empty() ||
        std::isdigit(static_cast<unsigned char>(text[0]))) {
      throw py::value_error("dense_layers: '" + text +
                            "' is not a model name; give a count or a list of ints");
    }
    return parse_dense_layers(text);
  }
  if (py::isinstance<py::sequence>(value)) {
    std::string text;
    for (const py::handle item : value.cast<py::sequence>()) {
      if (!py::isinstance<py::int_>(item) || py::isinstance<py::bool_>(item)) {
        throw py::type_error("dense_layers must be a list of ints, got an item of type " +
                             std::string(py::str(item.get_type().attr("__name__"))));
      }
      text += std::to_string(item.cast<long long>()) + ",";
    }
    if (text.empty()) return {};
    return parse_dense_layers(text);
  }
  throw py::type_error("dense_layers must be an int, a list of ints or a model name, got " +
                       std::string(py::str(value.get_type().attr("__name__"))));
}

PyPlacement placement_from_phy2log(const py::object& phy2log_value, int gpus_per_node, int nodes,
                                   int experts, const std::string& what,
                                   const py::object& dense_layers) {
  const py::array_t<std::int64_t> phy2log = owned_int64_array(phy2log_value, what);
  if (phy2log.ndim() != 2) {
    throw InputError(what + ": physical_to_logical_map must be [layers, slots], got " +
                     std::to_string(phy2log.ndim()) + " dimensions");
  }
  const Topology topology(nodes, gpus_per_node);
  EplbMaps maps;
  maps.layers = static_cast<int>(phy2log.shape(0));
  maps.slots = static_cast<int>(phy2log.shape(1));
  maps.experts = experts;
  maps.phy2log.resize(static_cast<std::size_t>(phy2log.size()));
  for (std::size_t i = 0; i < maps.phy2log.size(); ++i) {
    const std::int64_t v = phy2log.data()[i];
    if (v < 0 || v > std::numeric_limits<int>::max()) {
      throw InputError(what + ": physical_to_logical_map layer " + std::to_string(i / maps.slots) +
                       " slot " + std::to_string(i % maps.slots) + " is " + std::to_string(v));
    }
    maps.phy2log[i] = static_cast<int>(v);
  }
  Placement p =
      placement_from_eplb_maps(maps, topology.gpus(), what, decoder_layers_of(dense_layers));
  return PyPlacement{std::move(p), gpus_per_node, nodes, {}};
}

PyPlacement placement_from_array(const py::object& gpu_of_value, int gpus_per_node, int nodes) {
  const py::array_t<std::int64_t> gpu_of = owned_int64_array(gpu_of_value, "gpu_of");
  if (gpu_of.ndim() != 2) {
    throw InputError("gpu_of must be [layers, experts], got " + std::to_string(gpu_of.ndim()) +
                     " dimensions");
  }
  const int L = static_cast<int>(gpu_of.shape(0));
  const int E = static_cast<int>(gpu_of.shape(1));
  const Topology topology(nodes, gpus_per_node);
  std::vector<int> values(static_cast<std::size_t>(L) * E);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::int64_t g = gpu_of.data()[i];
    if (g < 0 || g >= topology.gpus()) {
      throw InputError("gpu_of names GPU " + std::to_string(g) + ", outside 0.." +
                       std::to_string(topology.gpus() - 1));
    }
    values[i] = static_cast<int>(g);
  }
  Placement p(L, E, topology.gpus(), std::move(values));
  validate(p, topology, Balance::kNone);
  return PyPlacement{std::move(p), gpus_per_node, nodes, {}};
}

// Raises `type` with `message`, its bytes that are not UTF-8 (a file's content quoted in it)
// escaped as \xNN, so that the message is never lost.
void set_python_error(PyObject* type, const char* message) {
  PyObject* text = PyUnicode_DecodeUTF8(message, static_cast<Py_ssize_t>(std::strlen(message)),
                                        "backslashreplace");
  if (text == nullptr) {
    PyErr_Clear();
    PyErr_SetString(type, "(an error whose message could not be decoded)");
    return;
  }
  PyErr_SetObject(type, text);
  Py_DECREF(text);
}

}  // namespace
}  // namespace exflow::python

PYBIND11_MODULE(_native, m) {
  using namespace exflow;
  using namespace exflow::python;
  m.doc() =
      "exflow: expert placement for Mixture-of-Experts inference from routing traces "
      "(ExFlow, arXiv 2401.08383). See docs/python.md.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const IoError& e) {
      set_python_error(PyExc_OSError, e.what());
    } catch (const Error& e) {
      set_python_error(PyExc_ValueError, e.what());
    }
  });

  py::class_<PyPlacement>(m, "Placement",
                          "Which GPU hosts each expert of each layer, with replicas.")
      .def(py::init(&placement_from_array), py::arg("gpu_of"), py::arg("gpus_per_node"),
           py::arg("nodes") = 1, "A placement from an integer array [layers, experts] of GPU ids.")
      .def_property_readonly("layers", [](const PyPlacement& p) { return p.placement.layers(); })
      .def_property_readonly("experts", [](const PyPlacement& p) { return p.placement.experts(); })
      .def_property_readonly("gpus", [](const PyPlacement& p) { return p.placement.gpus(); })
      .def_property_readonly("gpus_per_node", [](const PyPlacement& p) { return p.gpus_per_node; })
      .def_property_readonly("nodes", [](const PyPlacement& p) { return p.nodes; })
      .def_property_readonly(
          "gpu_of",
          [](const PyPlacement& p) {
            return to_array(p.placement.gpu_of(), {p.placement.layers(), p.placement.experts()});
          },
          "numpy int32 [layers, experts]: the GPU of each expert (its lowest copy)")
      .def_property_readonly(
          "replicas",
          [](const PyPlacement& p) {
            py::list out;
            for (const Replica& r : p.placement.replicas()) {
              out.append(py::make_tuple(r.layer, r.expert, r.gpu));
            }
            return out;
          },
          "extra copies as (layer, expert, gpu) tuples")
      .def_readwrite(
          "metrics", &PyPlacement::metrics,
          "metrics of the solve that made it, on its ids (the keys of exflow solve --json that "
          "do not name files, plus options)")
      .def(
          "to_csv",
          [](const PyPlacement& p, const std::string& path) {
            write_placement_csv(path_argument(path, "path"), p.placement);
          },
          py::arg("path"), "write the original tool's CSV (Expert,Node), atomically")
      .def(
          "to_sglang",
          [](const PyPlacement& p, const std::string& path, const py::object& dense_layers) {
            write_sglang_expert_location(path_argument(path, "path"), p.placement,
                                         decoder_layers_of(dense_layers));
          },
          py::arg("path"), py::kw_only(), py::arg("dense_layers") = py::none(),
          "write SGLang's --init-expert-location JSON, atomically; dense_layers: the model's "
          "dense decoder layers (a count, a list of layers or a model name), written as "
          "complete trivial rows")
      .def(
          "to_vllm_ascend",
          [](const PyPlacement& p, const std::string& path) {
            write_vllm_ascend_expert_map(path_argument(path, "path"), p.placement);
          },
          py::arg("path"),
          "write vllm-ascend's expert map JSON (eplb_config.expert_map_path), atomically")
      .def(
          "to_eplb",
          [](const PyPlacement& p, const py::object& dense_layers, const std::string& padding) {
            if (padding != "max" && padding != "redundant+1") {
              throw py::value_error("padding must be 'max' or 'redundant+1', got '" + padding +
                                    "'");
            }
            const EplbMaps maps = eplb_maps(
                p.placement, decoder_layers_of(dense_layers),
                padding == "max" ? EplbPadding::kMaxCopies : EplbPadding::kRedundantPlusOne);
            return eplb_maps_dict(maps);
          },
          py::kw_only(), py::arg("dense_layers") = py::none(), py::arg("padding") = "max",
          "DeepSeek EPLB's maps as int64 arrays: phy2log [L, slots], log2phy [L, E, X], logcnt "
          "[L, E]; X the most copies (padding='max') or the redundant slots + 1 "
          "(padding='redundant+1', as vLLM); dense_layers as for to_sglang")
      .def("__repr__", [](const PyPlacement& p) {
        return "<exflow.Placement " + std::to_string(p.placement.layers()) + " layers x " +
               std::to_string(p.placement.experts()) + " experts on " + std::to_string(p.nodes) +
               " x " + std::to_string(p.gpus_per_node) + " GPUs, " +
               std::to_string(p.placement.replicas().size()) + " replicas>";
      });

  m.def(
      "read_placement",
      [](const std::string& path, int layers, int experts, int gpus_per_node, int nodes,
         const py::object& dense_layers) {
        const Topology topology(nodes, gpus_per_node);
        Placement p = read_placement_file(path_argument(path, "path"), layers, experts,
                                          topology.gpus(), decoder_layers_of(dense_layers));
        return PyPlacement{std::move(p), gpus_per_node, nodes, {}};
      },
      py::arg("path"), py::arg("layers"), py::arg("experts"), py::arg("gpus_per_node"),
      py::arg("nodes") = 1, py::kw_only(), py::arg("dense_layers") = py::none(),
      "read a placement file: the CSV (Expert,Node), SGLang's expert-location JSON or EPLB's "
      "maps JSON");

  m.def("_placement_from_phy2log", &placement_from_phy2log, py::arg("phy2log"),
        py::arg("gpus_per_node"), py::arg("nodes") = 1, py::arg("experts") = 0,
        py::arg("what") = "physical_to_logical_map", py::arg("dense_layers") = py::none(),
        "a placement from SGLang's physical_to_logical_map [layers, slots] (experts 0: the "
        "largest id + 1), its dense decoder layers' rows dropped");

  m.def("_rebalance_experts", &rebalance_loads, py::arg("weight"), py::arg("num_replicas"),
        py::arg("num_groups"), py::arg("num_nodes"), py::arg("num_gpus"),
        "DeepSeek EPLB's rebalance_experts on loads [layers, experts] (integer or real, rounded "
        "to float32 as upstream): dict of int64 phy2log [L, num_replicas], log2phy [L, E, X], "
        "logcnt [L, E]; exflow.rebalance_experts checks the arguments and wraps it");

  m.def("profile", &profile_ids, py::arg("ids"), py::kw_only(), py::arg("experts") = py::none(),
        py::arg("topk") = py::none(), py::arg("threads") = 0,
        "inter-layer affinity and load skew of the ids (the keys of exflow profile --json)");

  m.def("solve", &solve_ids, py::arg("ids"), py::kw_only(), py::arg("gpus_per_node") = 8,
        py::arg("nodes") = 1, py::arg("experts") = py::none(), py::arg("topk") = py::none(),
        py::arg("threads") = 0, py::arg("intra_cost") = 1.0, py::arg("inter_cost") = 2.0,
        solve_doc().c_str());

  m.def("evaluate", &evaluate_ids, py::arg("ids"), py::arg("placement"), py::kw_only(),
        py::arg("gpus_per_node") = py::none(), py::arg("nodes") = py::none(),
        py::arg("experts") = py::none(), py::arg("topk") = py::none(), py::arg("threads") = 0,
        py::arg("intra_cost") = 1.0, py::arg("inter_cost") = 2.0,
        py::arg("seq_len") = PlanOptions{}.seq_len, py::arg("scheme") = "coherent",
        py::arg("replica_choice") = "nearest",
        "the metrics of a placement on the ids (the keys of exflow eval --json); scheme: the one "
        "the top-level keys show (coherent, standard, deepep, deepep-ll), every scheme under "
        "'schemes'");
}
