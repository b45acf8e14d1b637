// Reading JSON inputs defensively: whole files, and rectangular integer arrays with one-line
// errors for every way they can be malformed.
#pragma once

#include <cstdint>
#include <exception>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace exflow::io {

// Parses the whole file. Throws IoError if it cannot be read, InputError naming the file (and
// the line and column) if it is empty or not JSON.
nlohmann::json read_json_file(const std::string& path);

// nlohmann's exception message without its "[json.exception.parse_error.101] " prefix.
std::string json_error_text(const std::exception& e);

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
