// Decoder layers versus MoE layers (DecoderLayers in include/exflow/formats.hpp).
#include <algorithm>
#include <charconv>
#include <string>
#include <system_error>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "exflow/simulate.hpp"

namespace exflow {
namespace {

bool parse_count(const std::string& text, int& out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && out >= 0;
}

DecoderLayers first_n(int n) {
  DecoderLayers d;
  for (int i = 0; i < n; ++i) d.dense.push_back(i);
  return d;
}

}  // namespace

int DecoderLayers::total(int moe_layers) const {
  const int n = moe_layers + static_cast<int>(dense.size());
  for (int d : dense) {
    if (d < 0 || d >= n) {
      throw UsageError("dense layer " + std::to_string(d) +
                       " is not a decoder layer of a model with " + std::to_string(moe_layers) +
                       " MoE layers and " + std::to_string(dense.size()) + " dense ones (0.." +
                       std::to_string(n - 1) + ")");
    }
  }
  return n;
}

std::vector<int> DecoderLayers::moe_layer_ids(int moe_layers) const {
  const int n = total(moe_layers);
  std::vector<int> ids;
  ids.reserve(static_cast<std::size_t>(moe_layers));
  for (int i = 0; i < n; ++i) {
    if (!std::binary_search(dense.begin(), dense.end(), i)) ids.push_back(i);
  }
  return ids;
}

DecoderLayers parse_dense_layers(const std::string& text) {
  int n = 0;
  if (parse_count(text, n)) {
    if (n > (1 << 16)) {
      throw UsageError("dense layers: " + text + " is more than 65536");
    }
    return first_n(n);
  }
  if (text.find(',') != std::string::npos) {
    DecoderLayers d;
    std::size_t begin = 0;
    while (begin < text.size()) {
      std::size_t end = text.find(',', begin);
      if (end == std::string::npos) end = text.size();
      const std::string item = text.substr(begin, end - begin);
      int id = 0;
      if (!parse_count(item, id) || id > (1 << 16)) {
        throw UsageError("dense layers: '" + item + "' in '" + text +
                         "' is not a decoder layer number (0, 1, ...)");
      }
      d.dense.push_back(id);
      begin = end + 1;
    }
    std::sort(d.dense.begin(), d.dense.end());
    const auto twice = std::adjacent_find(d.dense.begin(), d.dense.end());
    if (twice != d.dense.end()) {
      throw UsageError("dense layers: layer " + std::to_string(*twice) + " is listed twice in '" +
                       text + "'");
    }
    return d;
  }
  for (const ModelPreset& p : model_presets()) {
    if (p.name == text) return first_n(p.first_dense_layers);
  }
  std::string known;
  for (const ModelPreset& p : model_presets()) known += (known.empty() ? "" : ", ") + p.name;
  throw UsageError("dense layers: '" + text +
                   "' is not a count (the first N layers), a list 'a,b' of layers or a model "
                   "(" +
                   known + ")");
}

ExpertLoads moe_rows(const ExpertLoads& loads, const DecoderLayers& layers,
                     const std::string& what) {
  if (layers.empty()) return loads;
  const int moe = loads.layers - static_cast<int>(layers.dense.size());
  if (moe < 1 || layers.dense.back() >= loads.layers) {
    throw InputError(what + ": " + std::to_string(loads.layers) +
                     " layers cannot hold dense layer " + std::to_string(layers.dense.back()) +
                     " and a MoE layer");
  }
  ExpertLoads out;
  out.layers = moe;
  out.experts = loads.experts;
  for (int l : layers.moe_layer_ids(moe)) {
    const auto row = loads.counts.begin() + static_cast<std::ptrdiff_t>(l) * loads.experts;
    out.counts.insert(out.counts.end(), row, row + loads.experts);
  }
  return out;
}

}  // namespace exflow
