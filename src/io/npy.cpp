#include "io/npy.hpp"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstring>
#include <optional>
#include <string_view>

#include "core/quoted.hpp"
#include "exflow/error.hpp"
#include "io/input_file.hpp"

namespace exflow::io {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";

// A value of the header's Python literal dict: a string, a bool, an int, or a tuple of ints.
struct Literal {
  enum class Type { kString, kBool, kInt, kTuple, kList } type = Type::kString;
  std::string text;
  bool boolean = false;
  std::int64_t integer = 0;
  std::vector<std::int64_t> tuple;
};

// Recursive-descent parser for the subset of Python literals numpy writes in headers.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  std::vector<std::pair<std::string, Literal>> parse_dict() {
    std::vector<std::pair<std::string, Literal>> items;
    expect('{');
    skip_space();
    while (peek() != '}') {
      const std::size_t key_at = pos_;
      std::string key = parse_string();
      if (key != "descr" && key != "fortran_order" && key != "shape") {
        pos_ = key_at;
        fail("unknown key " + exflow::quoted(key) +
             " (numpy writes only 'descr', 'fortran_order', " + "'shape')");
      }
      for (const auto& item : items) {
        if (item.first == key) {
          pos_ = key_at;
          fail("key " + exflow::quoted(key) + " given twice");
        }
      }
      expect(':');
      items.emplace_back(std::move(key), parse_value());
      skip_space();
      if (peek() == ',') {
        ++pos_;
        skip_space();
      } else if (peek() != '}') {
        fail("expected ',' or '}'");
      }
    }
    ++pos_;
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the dictionary");
    return items;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    std::string_view rest = s_.substr(std::min(pos_, s_.size()));
    while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.back()))) {
      rest.remove_suffix(1);
    }
    throw InputError(path_ + ": malformed npy header: " + what + " at offset " +
                     std::to_string(pos_) +
                     (rest.empty() ? std::string(" (its end)") : " near " + exflow::quoted(rest)));
  }
  char peek() {
    skip_space();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    ++pos_;
    std::size_t end = s_.find(quote, pos_);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  std::int64_t parse_int() {
    skip_space();
    std::size_t start = pos_;
    if (pos_ < s_.size() && (s_[pos_] == '-' || s_[pos_] == '+')) ++pos_;
    std::int64_t value = 0;
    bool negative = start < s_.size() && s_[start] == '-';
    bool any = false;
    if (pos_ + 1 < s_.size() && s_[pos_] == '0' &&
        std::isdigit(static_cast<unsigned char>(s_[pos_ + 1]))) {
      fail("integer with a leading zero");
    }
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      int digit = s_[pos_] - '0';
      if (value > (INT64_MAX - digit) / 10) fail("integer too large");
      value = value * 10 + digit;
      ++pos_;
      any = true;
    }
    if (!any) fail("expected an integer");
    if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l')) ++pos_;  // Python 2 longs
    return negative ? -value : value;
  }
  Literal parse_value() {
    Literal v;
    char c = peek();
    if (c == '\'' || c == '"') {
      v.type = Literal::Type::kString;
      v.text = parse_string();
    } else if (s_.substr(pos_, 4) == "True") {
      v.type = Literal::Type::kBool;
      v.boolean = true;
      pos_ += 4;
    } else if (s_.substr(pos_, 5) == "False") {
      v.type = Literal::Type::kBool;
      pos_ += 5;
    } else if (c == '(') {
      v.type = Literal::Type::kTuple;
      ++pos_;
      while (peek() != ')') {
        v.tuple.push_back(parse_int());
        if (peek() == ',') {
          ++pos_;
        } else if (peek() != ')') {
          fail("expected ',' or ')' in tuple");
        }
      }
      ++pos_;
    } else if (c == '[') {
      v.type = Literal::Type::kList;
      int depth = 0;
      for (; pos_ < s_.size(); ++pos_) {
        if (s_[pos_] == '[') ++depth;
        if (s_[pos_] == ']' && --depth == 0) break;
      }
      if (pos_ == s_.size()) fail("unterminated list");
      ++pos_;
    } else {
      v.type = Literal::Type::kInt;
      v.integer = parse_int();
    }
    return v;
  }

  std::string_view s_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

std::uint32_t read_le(const std::uint8_t* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Checks the dtype string and fills kind, size and byte order.
[[noreturn]] void bad_dtype(const std::string& path, const std::string& descr,
                            const std::string& why) {
  throw InputError(path + ": dtype " + exflow::quoted(descr) + " " + why +
                   "; expert ids must be integers (int8/16/32/64 or uint8/16/32/64)");
}

void parse_descr(const std::string& descr, NpyHeader& h, const std::string& path) {
  auto bad = [&](const char* why) { bad_dtype(path, descr, why); };
  if (descr.size() < 2) bad("is not a numpy dtype");
  char order = descr[0];
  std::string_view rest(descr);
  if (order == '<' || order == '>' || order == '|' || order == '=') {
    rest.remove_prefix(1);
  } else {
    order = '=';
  }
  if (rest.empty()) bad("is not a numpy dtype");
  char kind = rest[0];
  std::string_view size_text = rest.substr(1);
  int size = 0;
  for (char c : size_text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) bad("is not a plain numeric dtype");
    size = size * 10 + (c - '0');
    if (size > 64) break;
  }
  switch (kind) {
    case 'i':
    case 'u':
      break;
    case 'f':
    case 'c':
      bad_dtype(path, descr, "is a floating-point dtype");
    case 'b':
    case '?':
      bad_dtype(path, descr, "is a boolean dtype");
    case 'O':
      bad_dtype(path, descr, "is an object dtype");
    case 'U':
    case 'S':
    case 'a':
      bad_dtype(path, descr, "is a string dtype");
    default:
      bad_dtype(path, descr, "is not supported");
  }
  if (size != 1 && size != 2 && size != 4 && size != 8) bad("has an unsupported item size");
  h.is_signed = kind == 'i';
  h.item_size = size;
  bool little_host = std::endian::native == std::endian::little;
  h.byte_swap = size > 1 && ((order == '<' && !little_host) || (order == '>' && little_host));
}

}  // namespace

NpyHeader parse_npy(const std::uint8_t* data, std::size_t size, const std::string& path) {
  if (size < kMagic.size() || std::memcmp(data, kMagic.data(), kMagic.size()) != 0) {
    throw InputError(path + ": not an npy file (missing the \\x93NUMPY magic)");
  }
  if (size < kMagic.size() + 2) throw InputError(path + ": truncated npy header");
  NpyHeader h;
  h.major_version = data[6];
  h.minor_version = data[7];
  int len_bytes = 0;
  if (h.major_version == 1 && h.minor_version == 0) {
    len_bytes = 2;
  } else if ((h.major_version == 2 || h.major_version == 3) && h.minor_version == 0) {
    len_bytes = 4;
  } else {
    throw InputError(path + ": unsupported npy format version " + std::to_string(h.major_version) +
                     "." + std::to_string(h.minor_version) + " (supported: 1.0, 2.0, 3.0)");
  }
  std::size_t prefix = 6 + 2 + static_cast<std::size_t>(len_bytes);
  if (size < prefix) throw InputError(path + ": truncated npy header");
  std::size_t header_len = read_le(data + 8, len_bytes);
  if (prefix + header_len > size) {
    throw InputError(path + ": truncated npy header: header length field says " +
                     std::to_string(header_len) + " bytes but the file has only " +
                     std::to_string(size - prefix) + " bytes after it");
  }
  std::string_view header(reinterpret_cast<const char*>(data + prefix), header_len);
  std::size_t newline = header.find('\n');
  if (newline != std::string_view::npos && newline + 1 != header.size()) {
    throw InputError(path + ": header length field (" + std::to_string(header_len) +
                     " bytes) runs past the header's newline into the data");
  }
  if (newline == std::string_view::npos) {
    throw InputError(path + ": header length field (" + std::to_string(header_len) +
                     " bytes) does not end at the header's newline");
  }
  h.data_offset = prefix + header_len;

  auto items = HeaderParser(header, path).parse_dict();
  std::optional<Literal> descr, fortran, shape;
  for (auto& [key, value] : items) {
    if (key == "descr") descr = value;
    if (key == "fortran_order") fortran = value;
    if (key == "shape") shape = value;
  }
  if (!descr || !fortran || !shape) {
    std::string missing = std::string(descr ? "" : " 'descr'") +
                          (fortran ? "" : " 'fortran_order'") + (shape ? "" : " 'shape'");
    throw InputError(path + ": npy header lacks" + missing);
  }
  if (descr->type == Literal::Type::kList) {
    throw InputError(path + ": structured dtype; expert ids must be a plain integer array");
  }
  if (descr->type != Literal::Type::kString || fortran->type != Literal::Type::kBool ||
      shape->type != Literal::Type::kTuple) {
    throw InputError(path + ": malformed npy header: wrong type for descr, fortran_order or shape");
  }
  h.descr = descr->text;
  parse_descr(h.descr, h, path);
  h.fortran_order = fortran->boolean;
  h.shape = shape->tuple;

  if (h.shape.size() != 2 && h.shape.size() != 3) {
    throw InputError(path + ": shape " + npy_shape_text(h.shape) + " has " +
                     std::to_string(h.shape.size()) +
                     (h.shape.size() == 1 ? " dimension" : " dimensions") +
                     "; a trace is [tokens, layers] or [tokens, layers, k]");
  }
  static const char* kAxis[] = {"tokens", "layers", "k"};
  std::size_t count = 1;
  for (std::size_t i = 0; i < h.shape.size(); ++i) {
    if (h.shape[i] < 0) {
      throw InputError(path + ": shape " + npy_shape_text(h.shape) + " has a negative dimension");
    }
    if (h.shape[i] == 0) {
      throw InputError(path + ": shape " + npy_shape_text(h.shape) + " has zero " + kAxis[i]);
    }
    if (__builtin_mul_overflow(count, static_cast<std::size_t>(h.shape[i]), &count)) {
      throw InputError(path + ": shape " + npy_shape_text(h.shape) + " is too large");
    }
  }
  if (h.shape[1] > INT32_MAX || (h.shape.size() == 3 && h.shape[2] > 64)) {
    throw InputError(path + ": shape " + npy_shape_text(h.shape) +
                     " is implausible (layers must fit in 32 bits, k at most 64)");
  }
  if (__builtin_mul_overflow(count, static_cast<std::size_t>(h.item_size), &h.data_bytes)) {
    throw InputError(path + ": shape " + npy_shape_text(h.shape) + " is too large");
  }
  std::size_t available = size - h.data_offset;
  if (available < h.data_bytes) {
    throw InputError(path + ": truncated: shape " + npy_shape_text(h.shape) + " of '" + h.descr +
                     "' needs " + std::to_string(h.data_bytes) + " data bytes, the file has " +
                     std::to_string(available));
  }
  if (available > h.data_bytes) {
    throw InputError(path + ": " + std::to_string(available - h.data_bytes) +
                     " unexpected bytes after the data of shape " + npy_shape_text(h.shape) +
                     " of '" + h.descr + "'");
  }
  return h;
}

NpyHeader read_npy_header(const InputFile& file) {
  constexpr std::size_t kMaxHeader = std::size_t{1} << 20;
  const std::size_t size = file.size();
  // parse_npy reads no further than the header's end, and only once the file's size allows it.
  std::vector<std::uint8_t> head(std::min<std::size_t>(size, 12));
  file.read_at(0, head.size(), head.data());
  if (head.size() == 12 && std::memcmp(head.data(), kMagic.data(), kMagic.size()) == 0) {
    const int len_bytes = head[6] == 1 ? 2 : 4;
    const std::size_t header_len = read_le(head.data() + 8, len_bytes);
    if (header_len > kMaxHeader) {
      throw InputError(file.path() + ": npy header length field says " +
                       std::to_string(header_len) + " bytes; at most " +
                       std::to_string(kMaxHeader) + " are accepted");
    }
    head.resize(std::min(size, 8 + static_cast<std::size_t>(len_bytes) + header_len));
    file.read_at(0, head.size(), head.data());
  }
  return parse_npy(head.data(), size, file.path());
}

std::string encode_npy(const std::vector<std::int64_t>& values,
                       const std::vector<std::int64_t>& shape, const std::string& descr,
                       bool fortran_order, int major_version) {
  NpyHeader h;
  parse_descr(descr, h, "encode_npy");
  std::string dict = "{'descr': '" + descr +
                     "', 'fortran_order': " + (fortran_order ? "True" : "False") +
                     ", 'shape': " + npy_shape_text(shape) + ", }";
  std::size_t len_bytes = major_version == 1 ? 2 : 4;
  std::size_t unpadded = 6 + 2 + len_bytes + dict.size() + 1;
  std::size_t padded = (unpadded + 63) / 64 * 64;
  dict.append(padded - unpadded, ' ');
  dict.push_back('\n');

  std::string out(kMagic);
  out.push_back(static_cast<char>(major_version));
  out.push_back('\0');
  for (std::size_t i = 0; i < len_bytes; ++i)
    out.push_back(static_cast<char>(dict.size() >> (8 * i)));
  out += dict;

  std::vector<std::int64_t> ordered = values;
  if (fortran_order) {
    // Logical C-order index -> Fortran storage position.
    std::size_t n = values.size();
    std::vector<std::int64_t> strides(shape.size(), 1);
    for (std::size_t d = 1; d < shape.size(); ++d) strides[d] = strides[d - 1] * shape[d - 1];
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t rem = i, pos = 0;
      for (std::size_t d = shape.size(); d-- > 0;) {
        pos += (rem % shape[d]) * strides[d];
        rem /= shape[d];
      }
      ordered[pos] = values[i];
    }
  }
  bool big = descr[0] == '>' || (descr[0] == '=' && std::endian::native == std::endian::big);
  for (std::int64_t v : ordered) {
    auto u = static_cast<std::uint64_t>(v);
    for (int b = 0; b < h.item_size; ++b) {
      int shift = 8 * (big ? h.item_size - 1 - b : b);
      out.push_back(static_cast<char>((u >> shift) & 0xff));
    }
  }
  return out;
}

std::string npy_shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

}  // namespace exflow::io
