// SGLang expert locations, DeepSeek EPLB maps, expert load tables and affinity count tensors.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/quoted.hpp"
#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "io/atomic_file.hpp"
#include "io/json_input.hpp"
#include "io/npy.hpp"
#include "io/npy_array.hpp"
#include "io/physical_slots.hpp"

namespace exflow {
namespace {

using nlohmann::json;

std::string str(std::int64_t v) {
  return std::to_string(v);
}

// The values of `a` as int, for maps of ids. `where` names the map, e.g. "f.json: phy2log".
std::vector<int> to_int_ids(const io::JsonIntArray& a, const std::string& where) {
  std::vector<int> out(a.values.size());
  for (std::size_t i = 0; i < a.values.size(); ++i) {
    const std::int64_t v = a.values[i];
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
      std::vector<std::int64_t> at(a.shape.size());
      auto rest = static_cast<std::int64_t>(i);
      for (std::size_t d = a.shape.size(); d-- > 0;) {
        at[d] = rest % a.shape[d];
        rest /= a.shape[d];
      }
      std::string index;
      for (std::int64_t x : at) {
        index += '[';
        index += str(x);
        index += ']';
      }
      throw InputError(where + index + " = " + str(v) + " is out of range");
    }
    out[i] = static_cast<int>(v);
  }
  return out;
}

// For "expected ..., found X" messages about a file's top-level value.
std::string describe_top(const json& j) {
  if (!j.is_object()) return io::describe_json(j);
  if (j.empty()) return "an empty object";
  std::string keys;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (keys.size() > 60) {
      keys += ", ...";
      break;
    }
    keys += (keys.empty() ? "keys " : ", ") + exflow::quoted(it.key());
  }
  return keys;
}

std::string lowercase_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

// Sums [steps][L][E] over steps (or copies [L][E]), rejecting negative counts and overflow.
ExpertLoads loads_from(const std::vector<std::int64_t>& shape,
                       const std::vector<std::int64_t>& values, const std::string& where) {
  const bool stepped = shape.size() == 3;
  const std::int64_t steps = stepped ? shape[0] : 1;
  const std::int64_t L = shape[shape.size() - 2], E = shape[shape.size() - 1];
  if (L > std::numeric_limits<int>::max() || E > std::numeric_limits<int>::max()) {
    throw InputError(where + "too many layers or experts");
  }
  ExpertLoads loads;
  loads.layers = static_cast<int>(L);
  loads.experts = static_cast<int>(E);
  loads.counts.assign(static_cast<std::size_t>(L * E), 0);
  for (std::int64_t s = 0; s < steps; ++s) {
    for (std::int64_t i = 0; i < L * E; ++i) {
      const std::int64_t v = values[static_cast<std::size_t>(s * L * E + i)];
      const std::string at = (stepped ? "step " + str(s) + " " : std::string()) + "layer " +
                             str(i / E) + " expert " + str(i % E);
      if (v < 0) throw InputError(where + at + ": count " + str(v) + " is negative");
      std::int64_t& total = loads.counts[static_cast<std::size_t>(i)];
      if (__builtin_add_overflow(total, v, &total)) {
        throw InputError(where + at + ": the summed count overflows int64");
      }
    }
  }
  return loads;
}

// phy2log rows [moe layers][slots] -> [decoder layers][slots]: a dense layer's row is the trivial
// map (slot s holds expert s mod E), complete as the engines need every row to be.
std::vector<std::vector<int>> decoder_rows(std::vector<std::vector<int>> moe_rows, int experts,
                                           const DecoderLayers& layers) {
  if (layers.empty()) return moe_rows;
  const int moe = static_cast<int>(moe_rows.size());
  const std::size_t slots = moe_rows.empty() ? 0 : moe_rows.front().size();
  std::vector<int> trivial(slots);
  for (std::size_t i = 0; i < slots; ++i) trivial[i] = static_cast<int>(i % experts);
  std::vector<std::vector<int>> out(static_cast<std::size_t>(layers.total(moe)), trivial);
  const std::vector<int> ids = layers.moe_layer_ids(moe);
  for (int l = 0; l < moe; ++l) {
    out[static_cast<std::size_t>(ids[static_cast<std::size_t>(l)])] =
        std::move(moe_rows[static_cast<std::size_t>(l)]);
  }
  return out;
}

// The rows of phy2log [rows][slots] that are MoE layers. `where` prefixes messages.
std::vector<int> moe_rows_of(const std::vector<int>& phy2log, int rows, int slots,
                             const DecoderLayers& layers, const std::string& where,
                             int* moe_layers) {
  *moe_layers = rows;
  if (layers.empty()) return phy2log;
  const int moe = rows - static_cast<int>(layers.dense.size());
  if (moe < 1 || layers.dense.back() >= rows) {
    throw InputError(where + str(rows) + " layers cannot hold dense layer " +
                     str(layers.dense.back()) + " and a MoE layer");
  }
  std::vector<int> out;
  out.reserve(static_cast<std::size_t>(moe) * slots);
  for (int l : layers.moe_layer_ids(moe)) {
    const auto row = phy2log.begin() + static_cast<std::ptrdiff_t>(l) * slots;
    out.insert(out.end(), row, row + slots);
  }
  *moe_layers = moe;
  return out;
}

// The MoE layers' rows of all three maps (each checked for its size first).
EplbMaps moe_maps(const EplbMaps& maps, const DecoderLayers& layers, const std::string& where) {
  EplbMaps out = maps;
  const auto rows = [&](const std::vector<int>& v, const char* name, std::size_t width) {
    if (v.empty()) return v;
    if (v.size() != static_cast<std::size_t>(maps.layers) * width) {
      throw InputError(where + name + " has " + str(static_cast<std::int64_t>(v.size())) +
                       " entries, not " + str(maps.layers) + " layers x " +
                       str(static_cast<std::int64_t>(width)));
    }
    int moe = 0;
    return moe_rows_of(v, maps.layers, static_cast<int>(width), layers, where, &moe);
  };
  out.phy2log = rows(maps.phy2log, "phy2log", static_cast<std::size_t>(maps.slots));
  out.logcnt = rows(maps.logcnt, "logcnt", static_cast<std::size_t>(maps.experts));
  out.log2phy = rows(maps.log2phy, "log2phy",
                     static_cast<std::size_t>(maps.experts) * std::max(0, maps.max_replicas));
  out.layers = maps.layers - static_cast<int>(layers.dense.size());
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void write_sglang_expert_location(const std::string& path, const Placement& placement,
                                  const DecoderLayers& layers) {
  std::vector<std::vector<int>> rows;
  for (const auto& layer : io::physical_layout(placement)) {
    std::vector<int> row;
    for (const auto& gpu : layer) row.insert(row.end(), gpu.begin(), gpu.end());
    rows.push_back(std::move(row));
  }
  json j = json::object();
  j["physical_to_logical_map"] = decoder_rows(std::move(rows), placement.experts(), layers);
  io::write_file_atomically(path, j.dump() + "\n");
}

Placement read_sglang_expert_location(const std::string& path, int gpus, int experts,
                                      const DecoderLayers& layers) {
  if (gpus < 1) throw UsageError(path + ": GPU count must be positive, got " + str(gpus));
  if (experts < 0) throw UsageError(path + ": expert count must not be negative");
  json j = io::read_json_file(path);
  if (!j.is_object() || !j.contains("physical_to_logical_map")) {
    throw InputError(path + ": expected an object with key \"physical_to_logical_map\", found " +
                     describe_top(j));
  }
  const std::string where = path + ": ";
  io::check_json_keys(j, {"physical_to_logical_map"}, where);
  io::JsonIntArray a = io::json_int_array(
      j["physical_to_logical_map"], path + ": physical_to_logical_map", 2, 2, "[layers][slots]");
  if (a.shape[0] > std::numeric_limits<int>::max() ||
      a.shape[1] > std::numeric_limits<int>::max()) {
    throw InputError(where + "physical_to_logical_map is too large");
  }
  int moe = 0;
  const int slots = static_cast<int>(a.shape[1]);
  std::vector<int> map = moe_rows_of(to_int_ids(a, path + ": physical_to_logical_map"),
                                     static_cast<int>(a.shape[0]), slots, layers, where, &moe);
  return io::placement_from_phy2log(map, moe, slots, gpus, experts, where);
}

// ---------------------------------------------------------------------------------------------

EplbMaps eplb_maps(const Placement& placement, const DecoderLayers& layers, EplbPadding padding) {
  std::vector<std::vector<int>> rows;
  for (const auto& layer : io::physical_layout(placement)) {
    std::vector<int> row;
    for (const auto& gpu : layer) row.insert(row.end(), gpu.begin(), gpu.end());
    rows.push_back(std::move(row));
  }
  rows = decoder_rows(std::move(rows), placement.experts(), layers);
  EplbMaps m;
  m.layers = static_cast<int>(rows.size());
  m.experts = placement.experts();
  m.slots = static_cast<int>(rows.front().size());
  m.phy2log.reserve(static_cast<std::size_t>(m.layers) * m.slots);
  // slots_of[l*E + e]: the expert's slots, ascending.
  std::vector<std::vector<int>> slots_of(static_cast<std::size_t>(m.layers) * m.experts);
  for (int l = 0; l < m.layers; ++l) {
    for (int s = 0; s < m.slots; ++s) {
      const int e = rows[static_cast<std::size_t>(l)][static_cast<std::size_t>(s)];
      m.phy2log.push_back(e);
      slots_of[static_cast<std::size_t>(l) * m.experts + e].push_back(s);
    }
  }
  m.max_replicas = 1;
  for (const auto& s : slots_of)
    m.max_replicas = std::max(m.max_replicas, static_cast<int>(s.size()));
  if (padding == EplbPadding::kRedundantPlusOne) m.max_replicas = m.slots - m.experts + 1;
  m.log2phy.assign(slots_of.size() * static_cast<std::size_t>(m.max_replicas), -1);
  m.logcnt.resize(slots_of.size());
  for (std::size_t i = 0; i < slots_of.size(); ++i) {
    m.logcnt[i] = static_cast<int>(slots_of[i].size());
    std::copy(slots_of[i].begin(), slots_of[i].end(),
              m.log2phy.begin() + static_cast<std::ptrdiff_t>(i * m.max_replicas));
  }
  return m;
}

Placement placement_from_eplb_maps(const EplbMaps& maps, int gpus, const std::string& what,
                                   const DecoderLayers& layers) {
  const std::string where = what + ": ";
  if (!layers.empty()) return placement_from_eplb_maps(moe_maps(maps, layers, where), gpus, what);
  if (maps.layers < 1 || maps.slots < 1 || maps.experts < 0) {
    throw InputError(where + "empty maps (" + str(maps.layers) + " layers, " + str(maps.slots) +
                     " slots)");
  }
  if (maps.phy2log.size() != static_cast<std::size_t>(maps.layers) * maps.slots) {
    throw InputError(where + "phy2log has " + str(static_cast<std::int64_t>(maps.phy2log.size())) +
                     " entries for " + str(maps.layers) + " layers x " + str(maps.slots) +
                     " slots");
  }
  Placement p =
      io::placement_from_phy2log(maps.phy2log, maps.layers, maps.slots, gpus, maps.experts, where);
  const int L = p.layers(), E = p.experts();
  const int S = maps.slots / gpus;
  auto slots_of = [&](int l, int e) {
    std::vector<int> s;
    std::vector<int> gpus = p.copies(l, e);
    gpus.erase(std::unique(gpus.begin(), gpus.end()), gpus.end());
    for (int g : gpus) {
      const auto* row = &maps.phy2log[static_cast<std::size_t>(l) * maps.slots];
      for (int i = g * S; i < (g + 1) * S; ++i) {
        if (row[i] == e) s.push_back(i);
      }
    }
    return s;
  };
  auto list = [](const std::vector<int>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + str(v[i]);
    return s + "]";
  };
  if (!maps.logcnt.empty()) {
    if (maps.logcnt.size() != static_cast<std::size_t>(L) * E) {
      throw InputError(where + "logcnt has " + str(static_cast<std::int64_t>(maps.logcnt.size())) +
                       " entries, phy2log implies " + str(L) + " layers x " + str(E) + " experts");
    }
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) {
        const int want = static_cast<int>(p.copies(l, e).size());
        const int got = maps.logcnt[static_cast<std::size_t>(l) * E + e];
        if (got != want) {
          throw InputError(where + "logcnt layer " + str(l) + " expert " + str(e) + " is " +
                           str(got) + " but phy2log has " + str(want) + " slots of it");
        }
      }
    }
  }
  if (!maps.log2phy.empty()) {
    const int R = maps.max_replicas;
    if (R < 1 || maps.log2phy.size() != static_cast<std::size_t>(L) * E * R) {
      throw InputError(where + "log2phy has " +
                       str(static_cast<std::int64_t>(maps.log2phy.size())) + " entries, not " +
                       str(L) + " layers x " + str(E) + " experts x " + str(R) + " replicas");
    }
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) {
        const std::string at = "log2phy layer " + str(l) + " expert " + str(e);
        std::vector<int> listed;
        for (int r = 0; r < R; ++r) {
          const int s = maps.log2phy[(static_cast<std::size_t>(l) * E + e) * R + r];
          if (s == -1) continue;
          if (s < 0 || s >= maps.slots) {
            throw InputError(where + at + ": slot " + str(s) + " is out of range 0.." +
                             str(maps.slots - 1) + " (-1 pads)");
          }
          listed.push_back(s);
        }
        std::sort(listed.begin(), listed.end());
        const std::vector<int> want = slots_of(l, e);
        if (listed != want) {
          throw InputError(where + at + ": lists slots " + list(listed) +
                           " but phy2log puts it in " + list(want));
        }
      }
    }
  }
  return p;
}

void write_eplb_maps(const std::string& path, const Placement& placement,
                     const DecoderLayers& layers, EplbPadding padding) {
  const EplbMaps m = eplb_maps(placement, layers, padding);
  json phy2log = json::array(), log2phy = json::array(), logcnt = json::array();
  for (int l = 0; l < m.layers; ++l) {
    phy2log.push_back(
        json(std::vector<int>(m.phy2log.begin() + static_cast<std::ptrdiff_t>(l) * m.slots,
                              m.phy2log.begin() + static_cast<std::ptrdiff_t>(l + 1) * m.slots)));
    json experts = json::array();
    for (int e = 0; e < m.experts; ++e) {
      const auto at = (static_cast<std::ptrdiff_t>(l) * m.experts + e) * m.max_replicas;
      experts.push_back(
          json(std::vector<int>(m.log2phy.begin() + at, m.log2phy.begin() + at + m.max_replicas)));
    }
    log2phy.push_back(std::move(experts));
    logcnt.push_back(
        json(std::vector<int>(m.logcnt.begin() + static_cast<std::ptrdiff_t>(l) * m.experts,
                              m.logcnt.begin() + static_cast<std::ptrdiff_t>(l + 1) * m.experts)));
  }
  json j = json::object();
  j["phy2log"] = std::move(phy2log);
  j["log2phy"] = std::move(log2phy);
  j["logcnt"] = std::move(logcnt);
  io::write_file_atomically(path, j.dump() + "\n");
}

Placement read_eplb_maps(const std::string& path, int gpus, const DecoderLayers& layers) {
  if (gpus < 1) throw UsageError(path + ": GPU count must be positive, got " + str(gpus));
  json j = io::read_json_file(path);
  const std::string where = path + ": ";
  if (!j.is_object() || !j.contains("phy2log")) {
    throw InputError(where + "expected an object with key \"phy2log\" (and optionally " +
                     "\"log2phy\", \"logcnt\"), found " +
                     (j.is_object() ? std::string("no \"phy2log\"") : io::describe_json(j)));
  }
  io::check_json_keys(j, {"phy2log", "log2phy", "logcnt"}, where);
  auto phy = io::json_int_array(j["phy2log"], path + ": phy2log", 2, 2, "[layers][slots]");
  EplbMaps m;
  if (phy.shape[0] > std::numeric_limits<int>::max() ||
      phy.shape[1] > std::numeric_limits<int>::max()) {
    throw InputError(where + "phy2log is too large");
  }
  m.layers = static_cast<int>(phy.shape[0]);
  m.slots = static_cast<int>(phy.shape[1]);
  m.phy2log = to_int_ids(phy, path + ": phy2log");
  auto check_layers = [&](const io::JsonIntArray& a, const char* name) {
    if (a.shape[0] != m.layers) {
      throw InputError(where + name + " has " + str(a.shape[0]) + " layers, phy2log has " +
                       str(m.layers));
    }
  };
  if (j.contains("logcnt")) {
    auto cnt = io::json_int_array(j["logcnt"], path + ": logcnt", 2, 2, "[layers][experts]");
    check_layers(cnt, "logcnt");
    m.experts =
        static_cast<int>(std::min<std::int64_t>(cnt.shape[1], std::numeric_limits<int>::max()));
    m.logcnt = to_int_ids(cnt, path + ": logcnt");
  }
  if (j.contains("log2phy")) {
    auto l2p = io::json_int_array(j["log2phy"], path + ": log2phy", 3, 3,
                                  "[layers][experts][max_replicas]");
    check_layers(l2p, "log2phy");
    if (m.experts > 0 && l2p.shape[1] != m.experts) {
      throw InputError(where + "log2phy has " + str(l2p.shape[1]) + " experts per layer, logcnt " +
                       str(m.experts));
    }
    m.experts =
        static_cast<int>(std::min<std::int64_t>(l2p.shape[1], std::numeric_limits<int>::max()));
    m.max_replicas =
        static_cast<int>(std::min<std::int64_t>(l2p.shape[2], std::numeric_limits<int>::max()));
    m.log2phy = to_int_ids(l2p, path + ": log2phy");
  }
  return placement_from_eplb_maps(m, gpus, path, layers);
}

// ---------------------------------------------------------------------------------------------

ExpertLoads read_expert_loads(const std::string& path) {
  const std::string ext = lowercase_extension(path);
  const std::string where = path + ": ";
  if (ext == ".json") {
    json j = io::read_json_file(path);
    std::string name = path;
    const json* counts = &j;
    if (j.is_object()) {
      if (!j.contains("logical_count")) {
        throw InputError(where + "expected an object with key \"logical_count\" or a bare " +
                         "[layers][experts] list, found " + describe_top(j));
      }
      counts = &j["logical_count"];
      name = path + ": logical_count";
    }
    auto a =
        io::json_int_array(*counts, name, 2, 3, "[layers][experts] or [steps][layers][experts]");
    return loads_from(a.shape, a.values, where);
  }
  if (ext == ".npy") {
    io::IntArray a = io::read_int_npy(path);
    if (a.shape.size() != 2 && a.shape.size() != 3) {
      throw InputError(where + "shape " + io::npy_shape_text(a.shape) + " has " +
                       str(static_cast<std::int64_t>(a.shape.size())) +
                       (a.shape.size() == 1 ? " dimension" : " dimensions") +
                       "; expert loads are [layers, experts] or [steps, layers, experts]");
    }
    return loads_from(a.shape, a.values, where);
  }
  throw UsageError(path + ": unknown expert-load format '" + ext +
                   "'; expected a .json or .npy file");
}

// ---------------------------------------------------------------------------------------------

AffinityGraph read_affinity_counts(const std::string& path, int k) {
  if (k < 1) throw UsageError(path + ": top-k must be positive, got " + str(k));
  const std::string where = path + ": ";
  io::IntArray a = io::read_int_npy(path);
  const std::string shape = io::npy_shape_text(a.shape);
  if (a.shape.size() != 3 || a.shape[1] != a.shape[2]) {
    throw InputError(where + "shape " + shape +
                     " is not [layers-1, experts, experts] (affinity counts between consecutive "
                     "layers)");
  }
  if (a.shape[0] >= std::numeric_limits<int>::max() || a.shape[1] > (1 << 16)) {
    throw InputError(where + "shape " + shape + " is too large (at most 65536 experts)");
  }
  const int pairs = static_cast<int>(a.shape[0]);
  const int L = pairs + 1;
  const int E = static_cast<int>(a.shape[1]);
  const std::size_t EE = static_cast<std::size_t>(E) * E;
  std::vector<std::int64_t> totals(static_cast<std::size_t>(pairs), 0);
  std::vector<std::int64_t> loads(static_cast<std::size_t>(L) * E, 0);
  for (int l = 0; l < pairs; ++l) {
    for (int i = 0; i < E; ++i) {
      for (int j = 0; j < E; ++j) {
        const std::int64_t c = a.values[l * EE + static_cast<std::size_t>(i) * E + j];
        if (c < 0) {
          throw InputError(where + "layer pair " + str(l) + " (layer " + str(l) + " expert " +
                           str(i) + " -> layer " + str(l + 1) + " expert " + str(j) + "): count " +
                           str(c) + " is negative");
        }
        std::int64_t& total = totals[static_cast<std::size_t>(l)];
        std::int64_t& row = loads[static_cast<std::size_t>(l) * E + i];
        bool overflow = __builtin_add_overflow(total, c, &total);
        overflow |= __builtin_add_overflow(row, c, &row);
        if (l == pairs - 1) {
          std::int64_t& col = loads[static_cast<std::size_t>(L - 1) * E + j];
          overflow |= __builtin_add_overflow(col, c, &col);
        }
        if (overflow) throw InputError(where + "layer pair " + str(l) + ": counts overflow int64");
      }
    }
  }
  for (int l = 1; l < pairs; ++l) {
    if (totals[static_cast<std::size_t>(l)] != totals[0]) {
      throw InputError(where + "layer pair " + str(l) + " (layers " + str(l) + "->" + str(l + 1) +
                       ") totals " + str(totals[static_cast<std::size_t>(l)]) +
                       " pairs but layer pair 0 (layers 0->1) totals " + str(totals[0]) +
                       "; every layer pair of a trace has the same number of tokens");
    }
  }
  for (std::int64_t& c : loads) c /= k;
  const std::int64_t tokens = totals[0] / (static_cast<std::int64_t>(k) * k);
  return AffinityGraph(L, E, tokens, std::move(a.values), std::move(loads));
}

Placement read_placement_file(const std::string& path, int layers, int experts, int gpus,
                              const DecoderLayers& decoder) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext != ".json" && ext != ".JSON") return read_placement_csv(path, layers, experts, gpus);
  std::string text = [&] {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(path + ": cannot open placement");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  auto holds = [&](const char* key) { return text.find(key) != std::string::npos; };
  Placement p = holds("\"physical_to_logical_map\"")
                    ? read_sglang_expert_location(path, gpus, experts, decoder)
                : holds("\"moe_layer_count\"") || holds("\"layer_list\"")
                    ? read_vllm_ascend_expert_map(path, gpus, experts, decoder)
                    : read_eplb_maps(path, gpus, decoder);
  if (p.layers() != layers || p.experts() != experts) {
    std::string hint;
    if (p.layers() > layers && p.experts() == experts) {
      hint = decoder.empty()
                 ? "; if the model has " + std::to_string(p.layers() - layers) +
                       " dense decoder layer(s), give dense_layers"
                 : "; dense_layers names " + std::to_string(decoder.dense.size()) + " dense layers";
    }
    throw InputError(path + ": placement has " + std::to_string(p.layers()) + " MoE layers x " +
                         std::to_string(p.experts()) + " experts, the trace " +
                         std::to_string(layers) + " x " + std::to_string(experts) + hint,
                     {"dense_layers"});
  }
  return p;
}

}  // namespace exflow
