#include "io/npy_array.hpp"

#include <bit>
#include <cctype>
#include <cstring>
#include <limits>
#include <string_view>

#include "exflow/error.hpp"
#include "io/input_file.hpp"
#include "io/npy.hpp"

namespace exflow::io {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";

// Where the shape tuple's text lies in the header dictionary: header[begin, end) is "(...)".
struct ShapeSpan {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::vector<std::int64_t> shape;
};

bool parse_shape(std::string_view header, ShapeSpan& out) {
  std::size_t key = header.find("'shape'");
  if (key == std::string_view::npos) key = header.find("\"shape\"");
  if (key == std::string_view::npos) return false;
  std::size_t p = key + 7;
  auto skip = [&] {
    while (p < header.size() && std::isspace(static_cast<unsigned char>(header[p]))) ++p;
  };
  skip();
  if (p >= header.size() || header[p] != ':') return false;
  ++p;
  skip();
  if (p >= header.size() || header[p] != '(') return false;
  out.begin = p++;
  out.shape.clear();
  for (;;) {
    skip();
    if (p < header.size() && header[p] == ')') break;
    bool negative = false;
    if (p < header.size() && (header[p] == '-' || header[p] == '+')) negative = header[p++] == '-';
    std::int64_t v = 0;
    bool any = false;
    if (p + 1 < header.size() && header[p] == '0' &&
        std::isdigit(static_cast<unsigned char>(header[p + 1]))) {
      return false;  // numpy writes no leading zeros: parse_npy names it
    }
    while (p < header.size() && std::isdigit(static_cast<unsigned char>(header[p]))) {
      const int digit = header[p++] - '0';
      if (v > (std::numeric_limits<std::int64_t>::max() - digit) / 10) return false;
      v = v * 10 + digit;
      any = true;
    }
    if (!any) return false;
    if (p < header.size() && (header[p] == 'L' || header[p] == 'l')) ++p;
    out.shape.push_back(negative ? -v : v);
    skip();
    if (p < header.size() && header[p] == ',') {
      ++p;
    } else if (p >= header.size() || header[p] != ')') {
      return false;
    }
  }
  out.end = p + 1;
  return true;
}

std::uint32_t read_le(const std::uint8_t* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

}  // namespace

IntArray read_int_npy(const std::string& path) {
  // Read whole: the values are copied out anyway, and a copy cannot change under the reader.
  const InputFile file(path);
  const std::size_t size = file.size();
  std::vector<std::uint8_t> bytes(size);
  file.read_at(0, size, bytes.data());
  const std::uint8_t* data = bytes.data();
  if (size == 0) throw InputError(path + ": empty file, expected an npy array");

  // Locate the header and its shape tuple. Anything this scan cannot follow is left to
  // parse_npy on the untouched file, whose message then names the defect.
  auto defer = [&]() -> IntArray {
    parse_npy(data, size, path);
    throw InputError(path + ": malformed npy header: no readable 'shape' tuple");
  };
  if (size < kMagic.size() + 2 || std::memcmp(data, kMagic.data(), kMagic.size()) != 0) {
    return defer();
  }
  const int major = data[6];
  if ((major != 1 && major != 2 && major != 3) || data[7] != 0) return defer();
  const int len_bytes = major == 1 ? 2 : 4;
  const std::size_t prefix = 8 + static_cast<std::size_t>(len_bytes);
  if (size < prefix) return defer();
  const std::size_t header_len = read_le(data + 8, len_bytes);
  if (header_len > size - prefix) return defer();
  std::string_view header(reinterpret_cast<const char*>(data + prefix), header_len);
  ShapeSpan span;
  if (!parse_shape(header, span)) return defer();

  IntArray a;
  a.shape = span.shape;
  const std::string shape_text = npy_shape_text(a.shape);
  if (a.shape.empty()) {
    throw InputError(path + ": shape () is a scalar, expected an array");
  }
  std::int64_t count = 1;
  for (std::int64_t d : a.shape) {
    if (d <= 0) {
      throw InputError(path + ": shape " + shape_text + " has a " + (d < 0 ? "negative" : "zero") +
                       " dimension");
    }
    if (__builtin_mul_overflow(count, d, &count) || count > std::numeric_limits<int>::max()) {
      throw InputError(path + ": shape " + shape_text +
                       " is too large (more than 2^31 - 1 values)");
    }
  }

  // The same file with the shape written as (1, count): parse_npy checks magic, version,
  // header framing, dtype and data size exactly as for a trace.
  const std::string flat = "(1, " + std::to_string(count) + ")";
  std::string synthetic_header =
      std::string(header.substr(0, span.begin)) + flat + std::string(header.substr(span.end));
  std::string synthetic(kMagic);
  synthetic += '\x02';
  synthetic += '\0';
  for (int i = 0; i < 4; ++i) synthetic += static_cast<char>(synthetic_header.size() >> (8 * i));
  synthetic += synthetic_header;
  const std::size_t data_offset = prefix + header_len;
  synthetic.append(reinterpret_cast<const char*>(data + data_offset), size - data_offset);
  NpyHeader h;
  try {
    h = parse_npy(reinterpret_cast<const std::uint8_t*>(synthetic.data()), synthetic.size(), path);
  } catch (const InputError& e) {
    std::string message = e.what();
    replace_all(message, flat, shape_text);
    throw InputError(message);
  }

  // Decode in storage order, then put into C order.
  const auto n = static_cast<std::size_t>(count);
  std::vector<std::int64_t> stored(n);
  const std::uint8_t* p = reinterpret_cast<const std::uint8_t*>(synthetic.data()) + h.data_offset;
  const bool big = (std::endian::native == std::endian::big) != h.byte_swap;
  for (std::size_t i = 0; i < n; ++i, p += h.item_size) {
    std::uint64_t u = 0;
    for (int b = 0; b < h.item_size; ++b) u = (u << 8) | p[big ? b : h.item_size - 1 - b];
    if (h.is_signed) {
      const int shift = 64 - 8 * h.item_size;
      stored[i] = static_cast<std::int64_t>(u << shift) >> shift;
    } else if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw InputError(path + ": value " + std::to_string(u) + " at flat position " +
                       std::to_string(i) + " does not fit in int64");
    } else {
      stored[i] = static_cast<std::int64_t>(u);
    }
  }
  if (!h.fortran_order || a.shape.size() == 1) {
    a.values = std::move(stored);
    return a;
  }
  a.values.resize(n);
  const std::size_t rank = a.shape.size();
  std::vector<std::int64_t> index(rank, 0);  // C-order multi-index of i
  for (std::size_t i = 0; i < n; ++i) {
    std::int64_t pos = 0;
    for (std::size_t d = rank; d-- > 0;) pos = pos * a.shape[d] + index[d];
    a.values[i] = stored[static_cast<std::size_t>(pos)];
    for (std::size_t d = rank; d-- > 0;) {
      if (++index[d] < a.shape[d]) break;
      index[d] = 0;
    }
  }
  return a;
}

}  // namespace exflow::io
