#include "options.hpp"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/quoted.hpp"
#include "exflow/plan.hpp"

namespace exflow::cli {

std::string option_key(const std::string& name) {
  std::string key;
  for (char c : name) {
    if (c == '-') {
      if (!key.empty()) key += '_';
    } else {
      key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  return key;
}

CLI::Validator finite_number(double lo, double hi, bool open_low) {
  char range[96];
  std::snprintf(range, sizeof range,
                open_low ? "a finite number above %g, at most %g" : "a finite number from %g to %g",
                lo, hi);
  const std::string what = range;
  return CLI::Validator(
      [lo, hi, open_low, what](std::string& text) -> std::string {
        double v = 0;
        const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
        const bool parsed =
            !text.empty() && r.ec == std::errc() && r.ptr == text.data() + text.size();
        if (!parsed || !std::isfinite(v) || v < lo || (open_low && v == lo) || v > hi) {
          return "must be " + what + ", got " + exflow::quoted(text);
        }
        return std::string();
      },
      what);
}

std::string message_with_flags(const Error& error) {
  std::string message = error.what();
  auto word_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
  };
  for (const std::string& name : error.options()) {
    const std::string flag = option_flag(name);
    std::string out;
    std::size_t from = 0;
    for (std::size_t at = message.find(name); at != std::string::npos;
         at = message.find(name, at + name.size())) {
      const std::size_t end = at + name.size();
      if ((at > 0 && word_char(message[at - 1])) ||
          (end < message.size() && word_char(message[end]))) {
        continue;
      }
      out += message.substr(from, at - from) + flag;
      from = end;
    }
    message = out + message.substr(from);
  }
  return message;
}

}  // namespace exflow::cli
