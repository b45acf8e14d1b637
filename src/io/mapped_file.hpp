// A read-only memory mapping of a whole file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace exflow::io {

class MappedFile {
 public:
  // Throws IoError naming the path if the file cannot be opened, stat'ed or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Tells the kernel this process no longer needs [p, p + bytes) resident (page-aligned);
  // the next access maps the file's pages again.
  void release(const std::uint8_t* p, std::size_t bytes) const;
  static std::size_t page_size();

 private:
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace exflow::io
