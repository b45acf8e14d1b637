#include "io/json_input.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "exflow/error.hpp"

namespace exflow::io {
namespace {

std::string index_text(const std::vector<std::int64_t>& index, std::size_t depth) {
  std::string s;
  for (std::size_t d = 0; d < depth; ++d) {
    s += '[';
    s += std::to_string(index[d]);
    s += ']';
  }
  return s;
}

struct Walker {
  const std::string& where;
  const std::vector<std::int64_t>& shape;
  const std::string& layout;
  std::vector<std::int64_t> index;
  std::vector<std::int64_t>* values;

  void walk(const nlohmann::json& v, std::size_t depth) {
    const std::size_t rank = shape.size();
    if (depth == rank) {
      std::int64_t x = 0;
      if (!json_int64(v, x)) {
        throw InputError(where + index_text(index, depth) + " is " + describe_json(v) +
                         ", expected an integer");
      }
      values->push_back(x);
      return;
    }
    if (!v.is_array()) {
      throw InputError(where + index_text(index, depth) + " is " + describe_json(v) +
                       ", expected a list (layout " + layout + ")");
    }
    const auto n = static_cast<std::int64_t>(v.size());
    if (n != shape[depth]) {
      std::vector<std::int64_t> zeros(depth, 0);
      throw InputError(where + index_text(index, depth) + " has " + std::to_string(n) +
                       " entries where " + (depth == 0 ? "it" : index_text(zeros, depth)) +
                       " has " + std::to_string(shape[depth]) + " (layout " + layout +
                       " must be rectangular)");
    }
    for (std::int64_t i = 0; i < n; ++i) {
      index[depth] = i;
      walk(v[static_cast<std::size_t>(i)], depth + 1);
    }
    index[depth] = 0;
  }
};

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path + ": cannot open");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw IoError(path + ": read failed");
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw InputError(path + ": empty file, expected JSON");
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not valid JSON: " + json_error_text(e));
  }
}

std::string json_error_text(const std::exception& e) {
  std::string what = e.what();
  if (what.rfind("[json.exception.", 0) == 0) {
    std::size_t end = what.find("] ");
    if (end != std::string::npos) return what.substr(end + 2);
  }
  return what;
}

std::string describe_json(const nlohmann::json& value) {
  std::string text = value.dump();
  if (text.size() <= 40) return text;
  return std::string(value.is_array()    ? "a list of " + std::to_string(value.size()) + " entries"
                     : value.is_object() ? "an object"
                                         : "a " + std::string(value.type_name()));
}

bool json_int64(const nlohmann::json& value, std::int64_t& out) {
  if (value.is_number_unsigned()) {
    auto u = value.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return false;
    out = static_cast<std::int64_t>(u);
    return true;
  }
  if (value.is_number_integer()) {
    out = value.get<std::int64_t>();
    return true;
  }
  return false;
}

JsonIntArray json_int_array(const nlohmann::json& value, const std::string& where, int min_rank,
                            int max_rank, const std::string& layout) {
  JsonIntArray a;
  // The shape is read off the first element at each depth; the walk then checks every element.
  const nlohmann::json* v = &value;
  std::vector<std::int64_t> zeros;
  while (v->is_array()) {
    if (v->empty()) {
      throw InputError(where + index_text(zeros, zeros.size()) + " is an empty list (layout " +
                       layout + ")");
    }
    a.shape.push_back(static_cast<std::int64_t>(v->size()));
    zeros.push_back(0);
    v = &v->front();
    if (static_cast<int>(a.shape.size()) > max_rank) break;
  }
  const int rank = static_cast<int>(a.shape.size());
  if (rank < min_rank || rank > max_rank) {
    if (rank == 0) {
      throw InputError(where + " is " + describe_json(value) + ", expected lists of integers " +
                       layout);
    }
    throw InputError(where + " is nested " + std::to_string(rank) +
                     (rank > max_rank ? " or more" : "") + (rank == 1 ? " list" : " lists") +
                     " deep, expected " + layout);
  }
  // Reserve what the first elements promise, but not more than a modest amount: a ragged file
  // is only detected during the walk.
  std::size_t total = 1;
  for (std::int64_t n : a.shape) total = std::min<std::size_t>(total * n, std::size_t{1} << 24);
  a.values.reserve(total);
  Walker w{where, a.shape, layout, std::vector<std::int64_t>(a.shape.size(), 0), &a.values};
  w.walk(value, 0);
  return a;
}

}  // namespace exflow::io
