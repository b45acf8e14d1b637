// Reading JSON inputs defensively: whole files, and rectangular integer arrays with one-line
// errors for every way they can be malformed.
#pragma once

#include <cstdint>
#include <exception>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace exflow::io {

// Lists and objects nested deeper than this are refused (every format exflow reads needs at
// most a handful of levels).
constexpr int kMaxJsonDepth = 64;

// Parses `text` as one JSON value. Refuses what nlohmann would accept silently or crash on:
// nesting deeper than kMaxJsonDepth and an object that names a key twice. Throws InputError
// whose message starts with `prefix` (e.g. "maps.json: "); `one_line` drops "line 1, " from
// positions, for inputs that are one line of a larger file.
nlohmann::json parse_json(std::string_view text, const std::string& prefix, bool one_line = false);

// Parses the whole file as parse_json does. Throws IoError if it cannot be read, InputError
// naming the file (and the line and column) if it is empty or not JSON.
nlohmann::json read_json_file(const std::string& path);

// nlohmann's exception message without its "[json.exception.parse_error.101] " prefix, with the
// input it quotes ("last read: ...") cut short and escaped.
std::string json_error_text(const std::exception& e);

// Refuses a key of `object` outside `known`, naming it and what is expected. `where` prefixes
// the message (e.g. "maps.json: ").
void check_json_keys(const nlohmann::json& object, const std::vector<std::string>& known,
                     const std::string& where);

// A short rendering of a JSON value for messages: the value itself if short, else its type.
std::string describe_json(const nlohmann::json& value);

// The integer value of `value`, or false if it is not an integer that fits in int64.
bool json_int64(const nlohmann::json& value, std::int64_t& out);

struct JsonIntArray {
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> values;  // C order
};

// Reads `value` as a rectangular array of integers of min_rank..max_rank nested lists, none
// empty. `where` names it in messages (e.g. "maps.json: phy2log"), `layout` describes the
// expected shape (e.g. "[layers][slots]"). Throws InputError naming the first bad element by
// its index path, e.g. "maps.json: phy2log[3][17] is "x", expected an integer".
JsonIntArray json_int_array(const nlohmann::json& value, const std::string& where, int min_rank,
                            int max_rank, const std::string& layout);

}  // namespace exflow::io
