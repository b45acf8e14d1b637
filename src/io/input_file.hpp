// A file read with pread at given offsets, never mapped: a file that shrinks while it is read
// (truncated by another process) gives an IoError naming it, not a SIGBUS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace exflow::io {

class InputFile {
 public:
  // Throws IoError naming the path if the file cannot be opened or stat'ed, or is not a
  // regular file.
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // The size when opened.
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Reads exactly `bytes` bytes at `offset` into `out` (safe from several threads at once).
  // Throws IoError if the OS refuses or the file now ends before offset + bytes.
  void read_at(std::size_t offset, std::size_t bytes, void* out) const;

 private:
  std::string path_;
  int fd_ = -1;
  std::size_t size_ = 0;
};

}  // namespace exflow::io
