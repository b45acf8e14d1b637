// vllm-ascend's static expert map (eplb_config.expert_map_path), see docs/formats.md.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "io/atomic_file.hpp"
#include "io/json_input.hpp"
#include "io/physical_slots.hpp"

namespace exflow {
namespace {

using nlohmann::json;

std::string str(std::int64_t v) {
  return std::to_string(v);
}

std::string device_at(int layer, int device) {
  return "layer_list[" + str(layer) + "].device_list[" + str(device) + "]";
}

// The key path of `key` under the object at key path `at` ("" for the top level).
std::string key_path(const std::string& at, const char* key) {
  return at.empty() ? std::string(key) : at + "." + key;
}

// A non-negative int under `key` of the object at `at`, or -1 when the key is absent. `where`
// prefixes messages ("f.json: ").
int optional_count(const json& object, const char* key, const std::string& where,
                   const std::string& at) {
  if (!object.contains(key)) return -1;
  const json& v = object[key];
  std::int64_t n = 0;
  if (!io::json_int64(v, n) || n < 0 || n > std::numeric_limits<int>::max()) {
    throw InputError(where + key_path(at, key) + " is " + io::describe_json(v) +
                     ", expected a non-negative integer");
  }
  return static_cast<int>(n);
}

// The non-empty list under `key` of the object at `at`.
const json& required_list(const json& object, const char* key, const std::string& where,
                          const std::string& at) {
  if (!object.contains(key)) {
    throw InputError(where + (at.empty() ? "no" : at + " has no") + " \"" + key + "\"");
  }
  const json& v = object[key];
  if (!v.is_array()) {
    throw InputError(where + key_path(at, key) + " is " + io::describe_json(v) +
                     ", expected a list");
  }
  if (v.empty()) throw InputError(where + key_path(at, key) + " is an empty list");
  return v;
}

}  // namespace

void write_vllm_ascend_expert_map(const std::string& path, const Placement& placement,
                                  const DecoderLayers& layers) {
  layers.total(placement.layers());
  const auto layout = io::physical_layout(placement);
  json layer_list = json::array();
  for (std::size_t l = 0; l < layout.size(); ++l) {
    json devices = json::array();
    for (std::size_t g = 0; g < layout[l].size(); ++g) {
      const std::vector<int>& local = layout[l][g];  // ascending
      for (std::size_t i = 1; i < local.size(); ++i) {
        if (local[i] == local[i - 1]) {
          throw UsageError("placement: layer " + str(static_cast<std::int64_t>(l)) +
                           " puts expert " + str(local[i]) + " twice on GPU " +
                           str(static_cast<std::int64_t>(g)) +
                           "; vllm-ascend maps an expert to one local slot per device");
        }
      }
      devices.push_back({{"device_id", g}, {"device_expert", local}});
    }
    layer_list.push_back(
        {{"layer_id", l}, {"device_count", layout[l].size()}, {"device_list", std::move(devices)}});
  }
  json j = json::object();
  j["moe_layer_count"] = layout.size();
  j["layer_list"] = std::move(layer_list);
  io::write_file_atomically(path, j.dump() + "\n");
}

Placement read_vllm_ascend_expert_map(const std::string& path, int gpus, int experts,
                                      const DecoderLayers& layers) {
  if (gpus < 1) throw UsageError(path + ": GPU count must be positive, got " + str(gpus));
  if (experts < 0) throw UsageError(path + ": expert count must not be negative");
  const json j = io::read_json_file(path);
  const std::string where = path + ": ";
  if (!j.is_object() || !j.contains("layer_list")) {
    throw InputError(where + "expected an object with keys \"moe_layer_count\" and \"layer_list\"" +
                     ", found " + (j.is_object() ? "no \"layer_list\"" : io::describe_json(j)));
  }
  io::check_json_keys(j, {"moe_layer_count", "layer_list"}, where);
  const json& list = required_list(j, "layer_list", where, "");
  if (list.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw InputError(where + "layer_list is too long");
  }
  const int L = static_cast<int>(list.size());
  const int count = optional_count(j, "moe_layer_count", where, "");
  if (count < 0) throw InputError(where + "no \"moe_layer_count\"");
  if (count != L) {
    throw InputError(where + "moe_layer_count is " + str(count) + " but layer_list has " + str(L) +
                     (L == 1 ? " layer" : " layers"));
  }
  int S = -1;  // experts per device, the same on every device of every layer
  std::vector<int> phy2log;
  for (int l = 0; l < L; ++l) {
    const json& layer = list[static_cast<std::size_t>(l)];
    const std::string at = "layer_list[" + str(l) + "]";
    if (!layer.is_object()) {
      throw InputError(where + at + " is " + io::describe_json(layer) + ", expected an object");
    }
    io::check_json_keys(layer, {"layer_id", "device_count", "device_list"}, where + at + ": ");
    const int id = optional_count(layer, "layer_id", where, at);
    if (id >= 0 && id != l) {
      throw InputError(where + at + ".layer_id is " + str(id) + ", expected " + str(l) +
                       " (vllm-ascend takes layers in list order)");
    }
    const json& devices = required_list(layer, "device_list", where, at);
    const int listed = optional_count(layer, "device_count", where, at);
    if (listed >= 0 && static_cast<std::size_t>(listed) != devices.size()) {
      throw InputError(where + at + ".device_count is " + str(listed) + " but device_list has " +
                       str(static_cast<std::int64_t>(devices.size())) + " devices");
    }
    if (devices.size() != static_cast<std::size_t>(gpus)) {
      throw InputError(where + at + ".device_list has " +
                       str(static_cast<std::int64_t>(devices.size())) + " devices, expected " +
                       str(gpus) + " (the GPU count)");
    }
    for (int d = 0; d < gpus; ++d) {
      const json& device = devices[static_cast<std::size_t>(d)];
      const std::string dat = device_at(l, d);
      if (!device.is_object()) {
        throw InputError(where + dat + " is " + io::describe_json(device) + ", expected an object");
      }
      io::check_json_keys(device, {"device_id", "device_expert"}, where + dat + ": ");
      const int device_id = optional_count(device, "device_id", where, dat);
      if (device_id >= 0 && device_id != d) {
        throw InputError(where + dat + ".device_id is " + str(device_id) + ", expected " + str(d) +
                         " (vllm-ascend takes devices in list order)");
      }
      if (!device.contains("device_expert")) {
        throw InputError(where + dat + " has no \"device_expert\"");
      }
      const io::JsonIntArray local = io::json_int_array(
          device["device_expert"], where + dat + ".device_expert", 1, 1, "[experts]");
      if (local.shape[0] > std::numeric_limits<int>::max() / gpus) {
        throw InputError(where + dat + ".device_expert is too long");
      }
      const int n = static_cast<int>(local.shape[0]);
      if (S < 0) S = n;
      if (n != S) {
        throw InputError(where + dat + ".device_expert lists " + str(n) + " experts but " +
                         device_at(0, 0) + " lists " + str(S) +
                         "; every device holds the same number");
      }
      for (int i = 0; i < n; ++i) {
        const std::int64_t e = local.values[static_cast<std::size_t>(i)];
        const std::string eat = where + dat + ".device_expert[" + str(i) + "] = " + str(e);
        if (e < 0) throw InputError(eat + " is negative");
        if ((experts > 0 && e >= experts) || e > std::numeric_limits<int>::max()) {
          throw InputError(eat + " is out of range 0.." +
                           str(experts > 0 ? experts - 1 : std::numeric_limits<int>::max()));
        }
        for (int k = 0; k < i; ++k) {
          if (local.values[static_cast<std::size_t>(k)] == e) {
            throw InputError(eat + " repeats device_expert[" + str(k) +
                             "]; an expert has at most one slot per device");
          }
        }
        phy2log.push_back(static_cast<int>(e));
      }
    }
  }
  Placement p = io::placement_from_phy2log(phy2log, L, S * gpus, gpus, experts, where);
  layers.total(L);
  return p;
}

}  // namespace exflow
