#include "io/json_input.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "core/quoted.hpp"
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

// Builds the document from nlohmann's (iterative) SAX events, refusing depth beyond
// kMaxJsonDepth and a key that its object already holds.
struct JsonBuilder : nlohmann::json_sax<nlohmann::json> {
  nlohmann::json root;
  std::vector<nlohmann::json*> open;  // the lists and objects being filled, innermost last
  std::string pending_key;            // the key whose value comes next
  std::string error;

  nlohmann::json* add(nlohmann::json&& v) {
    if (open.empty()) {
      root = std::move(v);
      return &root;
    }
    nlohmann::json& parent = *open.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    nlohmann::json& slot = parent[pending_key];
    slot = std::move(v);
    return &slot;
  }
  bool value(nlohmann::json&& v) {
    add(std::move(v));
    return true;
  }
  bool start(nlohmann::json&& container) {
    if (open.size() >= static_cast<std::size_t>(kMaxJsonDepth)) {
      error = "lists and objects nested more than " + std::to_string(kMaxJsonDepth) + " deep";
      return false;
    }
    open.push_back(add(std::move(container)));
    return true;
  }
  bool null() override { return value(nullptr); }
  bool boolean(bool v) override { return value(v); }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(v); }
  bool number_float(number_float_t v, const string_t&) override { return value(v); }
  bool string(string_t& v) override { return value(std::move(v)); }
  bool binary(binary_t& v) override { return value(nlohmann::json::binary(std::move(v))); }
  bool start_object(std::size_t) override { return start(nlohmann::json::object()); }
  bool key(string_t& k) override {
    if (open.back()->contains(k)) {
      error = "duplicate key " + exflow::quoted(k) + " in an object";
      return false;
    }
    pending_key = std::move(k);
    return true;
  }
  bool end_object() override {
    open.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return start(nlohmann::json::array()); }
  bool end_array() override {
    open.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) override {
    error = "not valid JSON: " + json_error_text(e);
    return false;
  }
};

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& prefix, bool one_line) {
  JsonBuilder builder;
  if (nlohmann::json::sax_parse(text, &builder)) return std::move(builder.root);
  std::string why = builder.error;
  if (one_line) {
    if (auto p = why.find("at line 1, column"); p != std::string::npos) why.erase(p + 3, 8);
  }
  throw InputError(prefix + why);
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path + ": cannot open");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw IoError(path + ": read failed");
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw InputError(path + ": empty file, expected JSON");
  }
  return parse_json(text, path + ": ");
}

std::string json_error_text(const std::exception& e) {
  std::string what = e.what();
  if (what.rfind("[json.exception.", 0) == 0) {
    std::size_t end = what.find("] ");
    if (end != std::string::npos) what.erase(0, end + 2);
  }
  // nlohmann quotes the offending input raw: "...; last read: '<token>'; expected ...".
  constexpr std::string_view kLastRead = "last read: '";
  if (const std::size_t from = what.find(kLastRead); from != std::string::npos) {
    const std::size_t begin = from + kLastRead.size();
    std::size_t end = what.find("'; expected", begin);
    if (end == std::string::npos) end = what.rfind('\'');
    if (end != std::string::npos && end >= begin) {
      what = what.substr(0, from) +
             "last read: " + exflow::quoted(what.substr(begin, end - begin)) + what.substr(end + 1);
    }
  }
  return escaped(what);
}

std::string describe_json(const nlohmann::json& value) {
  // ASCII with \uXXXX escapes, but DEL and the like pass through: escape those too.
  std::string text = escaped(value.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
  if (text.size() <= 40) return text;
  return std::string(value.is_array()    ? "a list of " + std::to_string(value.size()) + " entries"
                     : value.is_object() ? "an object"
                                         : "a " + std::string(value.type_name()));
}

void check_json_keys(const nlohmann::json& object, const std::vector<std::string>& known,
                     const std::string& where) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) != known.end()) continue;
    std::string expected;
    for (std::size_t i = 0; i < known.size(); ++i) {
      expected += (i == 0 ? "" : i + 1 == known.size() ? " or " : ", ") + ("\"" + known[i] + "\"");
    }
    throw InputError(where + "unknown key " + exflow::quoted(it.key()) + " (expected " + expected +
                     ")");
  }
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
