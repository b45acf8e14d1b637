// Progress reporting for long passes over a trace.
#pragma once

#include <cstdint>

namespace exflow {

// Receives the number of tokens processed since the previous call. Implementations must be
// thread-safe: worker threads call advance() concurrently.
class Progress {
 public:
  virtual ~Progress() = default;
  virtual void begin(const char* what, std::int64_t total_tokens) = 0;
  virtual void advance(std::int64_t tokens) = 0;
  virtual void end() = 0;
};

}  // namespace exflow
