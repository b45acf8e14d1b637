#include "progress_bar.hpp"

#include <unistd.h>

#include <cstdio>

namespace exflow::cli {

ProgressBar::ProgressBar(bool enabled) : enabled_(enabled && ::isatty(STDERR_FILENO) == 1) {}

void ProgressBar::begin(const char* what, std::int64_t total_tokens) {
  std::lock_guard lock(mutex_);
  what_ = what;
  total_ = total_tokens;
  done_ = 0;
  drawn_ = false;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

void ProgressBar::advance(std::int64_t tokens) {
  std::int64_t done = done_.fetch_add(tokens) + tokens;
  if (!enabled_) return;
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  auto now = std::chrono::steady_clock::now();
  if (now - start_ < std::chrono::milliseconds(500) ||
      now - last_draw_ < std::chrono::milliseconds(100)) {
    return;
  }
  last_draw_ = now;
  draw(done);
}

void ProgressBar::draw(std::int64_t done) {
  constexpr int kWidth = 30;
  double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  int filled = static_cast<int>(frac * kWidth);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "\r%-22s [%.*s%*s] %5.1f%%  %lld/%lld tokens  %.1fs", what_.c_str(), filled,
               "==============================", kWidth - filled, "", 100.0 * frac,
               static_cast<long long>(done), static_cast<long long>(total_), secs);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::end() {
  std::lock_guard lock(mutex_);
  if (drawn_) {
    draw(done_.load());
    std::fputc('\n', stderr);
  }
}

}  // namespace exflow::cli
