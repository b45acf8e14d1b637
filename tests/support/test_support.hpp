// Helpers shared by the test programs.
#pragma once

#include <cstdint>
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

// ../shared/data when present (tests that need it skip otherwise).
bool shared_data_available();
std::string shared_data(const std::string& name);

}  // namespace exflow::test
