// A user's value as an error message quotes it: at most 40 bytes, printable ASCII as is, other
// bytes as \xNN, in single quotes ("...'" when cut).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace exflow {

// `text` with every byte outside printable ASCII written as \xNN.
inline std::string escaped(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    }
  }
  return out;
}

inline std::string quoted(std::string_view text) {
  constexpr std::size_t kMax = 40;
  std::string out(1, '\'');
  out += escaped(text.substr(0, kMax));
  out += text.size() > kMax ? "...'" : "'";
  return out;
}

}  // namespace exflow
