// Helpers shared by the test programs.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace exflow::test {

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::string& bytes);
std::string read_bytes(const std::string& path);

// Writes ids (C-order values of `shape`) as .npy with the given dtype, order and version.
void write_npy(const std::string& path, const std::vector<std::int64_t>& values,
               const std::vector<std::int64_t>& shape, const std::string& descr = "<i4",
               bool fortran_order = false, int major_version = 1);

// The result of running a program: its exit status (-1 if it did not exit normally), stdout and
// stderr.
struct CommandRun {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs `program` with `args` (each shell-quoted), stdin from /dev/null, capturing both streams.
CommandRun run_command(const std::string& program, const std::vector<std::string>& args);

// Checks that `r` is a refusal as the command-line tools make one: exit status `code`, nothing
// on stdout, one line on stderr that starts "<program>: error: " and contains `fragment`.
void expect_one_line_error(const CommandRun& r, int code, const std::string& fragment,
                           const std::string& program = "exflow");

// ../shared/data when present (tests that need it skip otherwise).
bool shared_data_available();
std::string shared_data(const std::string& name);

// The message of the E that `f` throws; a failure if it throws nothing or something else, or if
// the message is not one line.
template <typename E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
    return m;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

}  // namespace exflow::test

// Expects `statement` to throw `type` with a one-line message containing `fragment`.
#define EXPECT_ERROR(type, statement, fragment)                                       \
  do {                                                                                \
    const std::string message_ = ::exflow::test::error_of<type>([&] { statement; });  \
    EXPECT_NE(message_.find(fragment), std::string::npos) << "message: " << message_; \
  } while (0)
