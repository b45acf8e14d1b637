#include "io/input_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "exflow/error.hpp"

namespace exflow::io {

InputFile::InputFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw IoError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw IoError(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw IoError(path + ": not a regular file");
  }
  size_ = static_cast<std::size_t>(st.st_size);
}

InputFile::~InputFile() {
  ::close(fd_);
}

void InputFile::read_at(std::size_t offset, std::size_t bytes, void* out) const {
  auto* dst = static_cast<char*>(out);
  std::size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd_, dst + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError(path_ + ": read failed: " + std::strerror(errno));
    if (n == 0) {
      throw IoError(path_ + ": the file ends at byte " + std::to_string(offset + done) +
                    " but had " + std::to_string(size_) +
                    " bytes when opened (truncated while in use?)");
    }
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace exflow::io
