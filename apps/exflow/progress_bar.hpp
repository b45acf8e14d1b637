// A progress bar on stderr for passes over large traces. It draws only when stderr is a
// terminal and the pass has run for more than half a second, so small inputs and pipelines
// see nothing.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>

#include "exflow/progress.hpp"

namespace exflow::cli {

class ProgressBar final : public Progress {
 public:
  explicit ProgressBar(bool enabled);
  void begin(const char* what, std::int64_t total_tokens) override;
  void advance(std::int64_t tokens) override;
  void end() override;

 private:
  void draw(std::int64_t done);

  bool enabled_;
  std::string what_;
  std::int64_t total_ = 0;
  std::atomic<std::int64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  bool drawn_ = false;
  std::mutex mutex_;
};

}  // namespace exflow::cli
