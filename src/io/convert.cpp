// JSONL routing log -> trace .npy (see convert_jsonl_to_npy in exflow/formats.hpp).
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "exflow/error.hpp"
#include "exflow/formats.hpp"
#include "io/atomic_file.hpp"
#include "io/json_input.hpp"
#include "io/npy.hpp"

namespace exflow {
namespace {

using nlohmann::json;

constexpr std::int64_t kMaxId = 65535;      // ids are stored in 16 bits while reading
constexpr std::int64_t kMaxLayers = 65536;  // a layer index at or above this is rejected
constexpr std::size_t kMaxK = 64;           // what a trace may hold (see io::parse_npy)

std::string str(std::int64_t v) {
  return std::to_string(v);
}

// One line's fields, before validation.
struct Row {
  std::int64_t layer = 0;
  std::vector<std::int64_t> ids;
  bool has_token = false;
  std::int64_t token = 0;
};

// The common case without building a JSON document (several times faster on big logs): `s` is
// exactly an object whose keys are among "layer", "topk_ids" and "token", each once, with
// JSON integers of at most 18 digits and a list of them. Anything else returns false, and the
// line goes through nlohmann::json, which accepts it or names the defect; both read the same
// values from what this accepts.
bool parse_fast(std::string_view s, Row& row) {
  std::size_t p = 0;
  auto skip = [&] {
    while (p < s.size() && (s[p] == ' ' || s[p] == '\t' || s[p] == '\r' || s[p] == '\n')) ++p;
  };
  auto take = [&](char c) {
    skip();
    if (p >= s.size() || s[p] != c) return false;
    ++p;
    return true;
  };
  auto integer = [&](std::int64_t& v) {
    skip();
    const bool negative = p < s.size() && s[p] == '-';
    if (negative) ++p;
    const std::size_t digits = p;
    v = 0;
    while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
      if (p - digits == 18) return false;  // longer: let the JSON parser range-check it
      v = v * 10 + (s[p++] - '0');
    }
    const std::size_t n = p - digits;
    if (n == 0 || (n > 1 && s[digits] == '0')) return false;
    if (p < s.size() && (s[p] == '.' || s[p] == 'e' || s[p] == 'E')) return false;
    if (negative) v = -v;
    return true;
  };
  bool seen_layer = false, seen_ids = false;
  row.ids.clear();
  row.has_token = false;
  if (!take('{')) return false;
  do {
    if (!take('"')) return false;
    const std::size_t key = p;
    while (p < s.size() && s[p] != '"' && s[p] != '\\') ++p;
    if (p >= s.size() || s[p] != '"') return false;
    const std::string_view name = s.substr(key, p - key);
    ++p;
    if (!take(':')) return false;
    if (name == "layer" && !seen_layer) {
      seen_layer = true;
      if (!integer(row.layer)) return false;
    } else if (name == "token" && !row.has_token) {
      row.has_token = true;
      if (!integer(row.token)) return false;
    } else if (name == "topk_ids" && !seen_ids) {
      seen_ids = true;
      if (!take('[')) return false;
      skip();
      if (p < s.size() && s[p] == ']') {
        ++p;
      } else {
        do {
          std::int64_t v = 0;
          if (!integer(v)) return false;
          row.ids.push_back(v);
        } while (take(','));
        if (!take(']')) return false;
      }
    } else {
      return false;
    }
  } while (take(','));
  if (!take('}')) return false;
  skip();
  return p == s.size() && seen_layer && seen_ids;
}

// Any other line: parsed as JSON, with one message for each way it can be wrong.
void parse_json_row(const std::string& text, const std::function<std::string()>& at, Row& row) {
  const json j = io::parse_json(text, at(), true);
  if (!j.is_object()) {
    throw InputError(at() + "expected an object {\"layer\": l, \"topk_ids\": [...]}, found " +
                     io::describe_json(j));
  }
  auto layer_it = j.find("layer");
  auto ids_it = j.find("topk_ids");
  if (layer_it == j.end() || ids_it == j.end()) {
    throw InputError(at() + "missing \"" + (layer_it == j.end() ? "layer" : "topk_ids") +
                     "\" (expected {\"layer\": l, \"topk_ids\": [...]})");
  }
  if (!io::json_int64(*layer_it, row.layer)) {
    throw InputError(at() + "\"layer\" is " + io::describe_json(*layer_it) +
                     ", expected an integer 0.." + str(kMaxLayers - 1));
  }
  const json& ids = *ids_it;
  if (!ids.is_array()) {
    throw InputError(at() + "\"topk_ids\" is " + io::describe_json(ids) +
                     ", expected a non-empty list of expert ids");
  }
  row.ids.clear();
  for (std::size_t c = 0; c < ids.size(); ++c) {
    std::int64_t v = 0;
    if (!io::json_int64(ids[c], v)) {
      throw InputError(at() + "topk_ids[" + str(static_cast<std::int64_t>(c)) + "] is " +
                       io::describe_json(ids[c]) + ", expected an integer expert id");
    }
    row.ids.push_back(v);
  }
  row.has_token = false;
  if (auto t = j.find("token"); t != j.end()) {
    row.has_token = true;
    if (!io::json_int64(*t, row.token)) {
      throw InputError(at() + "\"token\" is " + io::describe_json(*t) +
                       ", expected a non-negative integer");
    }
  }
}

// Reads the log line by line and checks each row on its own (fields, ranges, the same k on
// every row, no expert twice), handing it to `visit` with its line number.
class RowReader {
 public:
  RowReader(std::istream& in, const std::string& name) : in_(in), name_(name) {}

  template <typename Visit>
  void for_each(Visit&& visit) {
    std::string text;
    std::int64_t line_no = 0;
    Row row;
    const std::function<std::string()> at = [&] { return name_ + ":" + str(line_no) + ": "; };
    while (std::getline(in_, text)) {
      ++line_no;
      if (line_no == 1 && text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);
      if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
      if (!parse_fast(text, row)) parse_json_row(text, at, row);
      check(row, line_no, at);
      visit(row, line_no);
    }
    if (in_.bad()) throw IoError(name_ + ": read failed");
  }

  std::size_t k() const { return k_; }

 private:
  void check(const Row& row, std::int64_t line_no, const std::function<std::string()>& at) {
    if (row.layer < 0 || row.layer >= kMaxLayers) {
      throw InputError(at() + "\"layer\" is " + str(row.layer) + ", expected an integer 0.." +
                       str(kMaxLayers - 1));
    }
    if (row.ids.empty()) {
      throw InputError(at() + "\"topk_ids\" is [], expected a non-empty list of expert ids");
    }
    const auto n = static_cast<std::int64_t>(row.ids.size());
    if (row.ids.size() > kMaxK) {
      throw InputError(at() + "\"topk_ids\" has " + str(n) + " ids; at most " + str(kMaxK) +
                       " per row");
    }
    if (k_ == 0) {
      k_ = row.ids.size();
      k_line_ = line_no;
    } else if (row.ids.size() != k_) {
      throw InputError(at() + "\"topk_ids\" has " + str(n) + " ids but line " + str(k_line_) +
                       " has " + str(static_cast<std::int64_t>(k_)) +
                       "; every row needs the same k");
    }
    if (row.has_token && row.token < 0) {
      throw InputError(at() + "\"token\" is " + str(row.token) +
                       ", expected a non-negative integer");
    }
    for (std::size_t c = 0; c < k_; ++c) {
      const std::int64_t v = row.ids[c];
      if (v >= 0 && v <= kMaxId) continue;
      const std::string which = "topk_ids[" + str(static_cast<std::int64_t>(c)) + "]";
      if (v == -1) {
        throw InputError(at() + which +
                         " is -1, SGLang's padding for an unused slot; drop padded tokens, "
                         "columns and dense layers before converting");
      }
      throw InputError(at() + which + " = " + str(v) + " is out of range 0.." + str(kMaxId));
    }
    for (std::size_t c = 1; c < k_; ++c) {
      for (std::size_t c0 = 0; c0 < c; ++c0) {
        if (row.ids[c0] != row.ids[c]) continue;
        throw InputError(at() + "topk_ids[" + str(static_cast<std::int64_t>(c)) +
                         "] = " + str(row.ids[c]) + " repeats topk_ids[" +
                         str(static_cast<std::int64_t>(c0)) +
                         "]; a top-k row names k distinct experts");
      }
    }
  }

  std::istream& in_;
  const std::string& name_;
  std::size_t k_ = 0;
  std::int64_t k_line_ = 0;
};

// The rows of a log that cannot be read twice (a pipe), kept compactly for the second pass.
struct RecordedRows {
  std::vector<std::uint16_t> ids;    // [rows, k]
  std::vector<std::uint16_t> layer;  // [rows]
  std::vector<std::int64_t> token;   // [rows], -1 when the row has none
  // Line numbers: row r is on line r + 1 plus the blank lines before it, which are rare; each
  // entry (first row, lines skipped before it) starts a run.
  std::vector<std::pair<std::size_t, std::int64_t>> skipped;

  void add(const Row& row, std::int64_t line_no) {
    const std::size_t r = layer.size();
    const std::int64_t gap = line_no - 1 - static_cast<std::int64_t>(r);
    if (gap != (skipped.empty() ? 0 : skipped.back().second)) skipped.emplace_back(r, gap);
    for (std::int64_t v : row.ids) ids.push_back(static_cast<std::uint16_t>(v));
    layer.push_back(static_cast<std::uint16_t>(row.layer));
    token.push_back(row.has_token ? row.token : -1);
  }
  template <typename Visit>
  void for_each(std::size_t k, Visit&& visit) const {
    Row row;
    row.ids.resize(k);
    std::size_t run = 0;
    std::int64_t gap = 0;
    for (std::size_t r = 0; r < layer.size(); ++r) {
      if (run < skipped.size() && skipped[run].first == r) gap = skipped[run++].second;
      for (std::size_t c = 0; c < k; ++c) row.ids[c] = ids[r * k + c];
      row.layer = layer[r];
      row.has_token = token[r] >= 0;
      row.token = token[r];
      visit(row, static_cast<std::int64_t>(r) + 1 + gap);
    }
  }
};

}  // namespace

// Two passes over the rows: the first counts rows per layer (and finds k and the largest id),
// which fixes the output's shape; the second writes every row straight into the output buffer.
// A seekable input is read twice, so that memory holds the output and one bit per (token,
// layer) beyond it; a pipe is recorded compactly on the first pass.
ConvertResult convert_jsonl_to_npy(std::istream& in, const std::string& name,
                                   const std::string& out_path) {
  const std::streampos start = in.tellg();
  const bool rereadable = start != std::streampos(-1);
  RowReader reader(in, name);
  RecordedRows recorded;
  std::vector<std::int64_t> layer_rows;
  std::int64_t max_id = 0;
  std::int64_t rows = 0;
  reader.for_each([&](const Row& row, std::int64_t line_no) {
    if (static_cast<std::size_t>(row.layer) >= layer_rows.size()) {
      layer_rows.resize(static_cast<std::size_t>(row.layer) + 1, 0);
    }
    ++layer_rows[static_cast<std::size_t>(row.layer)];
    for (std::int64_t v : row.ids) max_id = std::max(max_id, v);
    ++rows;
    if (!rereadable) recorded.add(row, line_no);
  });
  if (rows == 0) {
    throw InputError(name + ": no rows (expected one JSON object per line: {\"layer\": l, " +
                     "\"topk_ids\": [...]})");
  }
  const auto L = static_cast<std::int64_t>(layer_rows.size());
  const std::int64_t T = layer_rows[0];
  for (std::int64_t l = 0; l < L; ++l) {
    const std::int64_t n = layer_rows[static_cast<std::size_t>(l)];
    if (n == 0) {
      throw InputError(name + ": layer " + str(l) + " has no rows but layer " + str(L - 1) +
                       " has; layers must be 0.." + str(L - 1) + " with none missing");
    }
    if (n != T) {
      throw InputError(name + ": layer " + str(l) + " has " + str(n) + " rows but layer 0 has " +
                       str(T) + "; every layer needs one row per token");
    }
  }

  const bool narrow = max_id < 32768;
  const std::string descr = narrow ? "<i2" : "<i4";
  const int item = narrow ? 2 : 4;
  const auto K = static_cast<std::int64_t>(reader.k());
  std::vector<std::int64_t> shape = {T, L};
  if (K > 1) shape.push_back(K);
  // encode_npy with no values gives the header alone; the data follows, C order [T, L, k].
  std::string out = io::encode_npy({}, shape, descr);
  const std::size_t data_at = out.size();
  out.resize(data_at + static_cast<std::size_t>(T * L * K * item), '\0');

  const auto second_pass = [&](auto&& visit) {
    if (!rereadable) return recorded.for_each(reader.k(), visit);
    in.clear();
    if (!in.seekg(start)) throw IoError(name + ": cannot read the input a second time");
    RowReader(in, name).for_each(visit);
  };
  // The token of each row: its "token", else its index among its layer's rows.
  std::vector<std::int64_t> implicit(static_cast<std::size_t>(L), 0);
  const auto token_of = [&](const Row& row) {
    std::int64_t& next = implicit[static_cast<std::size_t>(row.layer)];
    const std::int64_t t = row.has_token ? row.token : next;
    ++next;
    return t;
  };
  std::vector<bool> seen(static_cast<std::size_t>(T * L), false);
  second_pass([&](const Row& row, std::int64_t line_no) {
    const std::int64_t l = row.layer;
    const std::int64_t t = token_of(row);
    if (t >= T) {
      throw InputError(name + ":" + str(line_no) + ": token " + str(t) +
                       " is out of range: layer " + str(l) + " has " + str(T) +
                       " rows, so tokens are 0.." + str(T - 1));
    }
    if (seen[static_cast<std::size_t>(t * L + l)]) {
      // Only on this error: one more pass finds the row that came first.
      std::int64_t first = 0;
      std::fill(implicit.begin(), implicit.end(), 0);
      second_pass([&](const Row& r, std::int64_t at) {
        if (token_of(r) == t && r.layer == l && first == 0) first = at;
      });
      throw InputError(name + ":" + str(line_no) + ": layer " + str(l) + " token " + str(t) +
                       " appears twice (first on line " + str(first) + ")");
    }
    seen[static_cast<std::size_t>(t * L + l)] = true;
    char* dst = out.data() + data_at + static_cast<std::size_t>(((t * L + l) * K) * item);
    for (std::int64_t c = 0; c < K; ++c, dst += item) {
      const auto v = static_cast<std::uint16_t>(row.ids[static_cast<std::size_t>(c)]);
      dst[0] = static_cast<char>(v & 0xff);
      dst[1] = static_cast<char>(v >> 8);  // ids < 65536: bytes 2..3 of int32 stay zero
    }
  });
  io::write_file_atomically(out_path, out);
  ConvertResult result;
  result.tokens = T;
  result.layers = static_cast<int>(L);
  result.k = static_cast<int>(K);
  result.dtype = descr;
  return result;
}

ConvertResult convert_jsonl_to_npy(const std::string& in_path, const std::string& out_path) {
  if (in_path == "-") return convert_jsonl_to_npy(std::cin, "<stdin>", out_path);
  std::ifstream in(in_path, std::ios::binary);
  if (!in) throw IoError(in_path + ": cannot open");
  return convert_jsonl_to_npy(in, in_path, out_path);
}

}  // namespace exflow
