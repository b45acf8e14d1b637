#include "options.hpp"

#include <cctype>

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

}  // namespace exflow::cli
