#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "exflow/error.hpp"

namespace exflow {
namespace {

// The temporaries that exist now, for the signal handler: fixed slots, each a path copied in
// before the slot is marked ready, so that the handler reads only memory that stays valid.
constexpr int kTemporarySlots = 64;
constexpr std::size_t kTemporaryPathBytes = 4096;
enum SlotState : int { kFree = 0, kFilling = 1, kReady = 2 };

struct TemporarySlot {
  std::atomic<int> state{kFree};
  char path[kTemporaryPathBytes];
};

std::array<TemporarySlot, kTemporarySlots> temporary_slots;

// The slot now holding `path`, or -1 when the path is too long or every slot is taken (that
// temporary is then only removed by the normal paths).
int register_temporary(const std::string& path) {
  if (path.size() >= kTemporaryPathBytes) return -1;
  for (int i = 0; i < kTemporarySlots; ++i) {
    TemporarySlot& slot = temporary_slots[static_cast<std::size_t>(i)];
    int expected = kFree;
    if (slot.state.compare_exchange_strong(expected, kFilling)) {
      std::memcpy(slot.path, path.c_str(), path.size() + 1);
      slot.state.store(kReady);
      return i;
    }
  }
  return -1;
}

void unregister_temporary(int slot) {
  if (slot >= 0) temporary_slots[static_cast<std::size_t>(slot)].state.store(kFree);
}

void remove_temporaries_and_die(int signal_number) {
  for (TemporarySlot& slot : temporary_slots) {
    if (slot.state.load() == kReady) ::unlink(slot.path);
  }
  // SA_RESETHAND restored the default action; the signal is delivered once this returns.
  ::raise(signal_number);
}

constexpr int kCleanupSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

// The innermost OutputSet open on this thread.
thread_local OutputSet* open_output_set = nullptr;

std::atomic<unsigned> temporary_counter{0};

std::string temporary_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid()) + "." +
         std::to_string(temporary_counter.fetch_add(1));
}

// Writes `contents` to a new file `tmp` and flushes it to disk; on failure removes it and throws
// IoError naming `path`.
void write_temporary(const std::string& path, const std::string& tmp, std::string_view contents) {
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError(path + ": cannot create: " + std::strerror(errno));
  const char* p = contents.data();
  std::size_t left = contents.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw IoError(path + ": write failed: " + std::strerror(err));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  int synced = ::fsync(fd);
  int sync_err = errno;
  int closed = ::close(fd);
  int close_err = errno;
  if (synced != 0 || closed != 0) {
    ::unlink(tmp.c_str());
    throw IoError(path + ": write failed: " + std::strerror(synced != 0 ? sync_err : close_err));
  }
}

// A temporary file registered for the signal handler while it lives.
class Temporary {
 public:
  explicit Temporary(std::string path) : path_(std::move(path)), slot_(register_temporary(path_)) {}
  ~Temporary() {
    if (!released_) ::unlink(path_.c_str());
    unregister_temporary(slot_);
  }
  Temporary(const Temporary&) = delete;
  Temporary& operator=(const Temporary&) = delete;
  const std::string& path() const { return path_; }
  // The file was renamed away: not removed here.
  void release() { released_ = true; }
  // The file and its registration pass to the caller, who removes and unregisters them.
  int hand_over() {
    released_ = true;
    const int slot = slot_;
    slot_ = -1;
    return slot;
  }

 private:
  std::string path_;
  int slot_;
  bool released_ = false;
};

}  // namespace

void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) throw IoError("cannot write a file with an empty name");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw IoError(path + ": cannot write, it is a directory");
    if (!S_ISREG(st.st_mode)) throw IoError(path + ": cannot write, it is not a regular file");
  } else if (errno != ENOENT && errno != ENOTDIR) {
    throw IoError(path + ": cannot write: " + std::strerror(errno));
  }
  fs::path target(path);
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  // The nearest existing ancestor must be a directory in which an entry can be made: a probe
  // entry (the file's temporary in its own directory, a directory above it) is made and removed.
  fs::path ancestor = parent;
  while (::stat(ancestor.c_str(), &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR) {
      throw IoError(path + ": cannot write in " + ancestor.string() + ": " + std::strerror(errno));
    }
    ancestor = ancestor.has_parent_path() ? ancestor.parent_path() : fs::path(".");
  }
  if (!S_ISDIR(st.st_mode)) {
    throw IoError(path + ": cannot write, " + ancestor.string() + " is not a directory");
  }
  if (ancestor == parent) {
    const std::string probe = temporary_name(path);
    int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      throw IoError(path + ": cannot write in " + parent.string() + ": " + std::strerror(errno));
    }
    ::close(fd);
    ::unlink(probe.c_str());
  } else {
    const std::string probe = temporary_name((ancestor / "exflow-probe").string());
    if (::mkdir(probe.c_str(), 0700) != 0) {
      throw IoError(path + ": cannot create directories in " + ancestor.string() + ": " +
                    std::strerror(errno));
    }
    ::rmdir(probe.c_str());
  }
}

OutputSet::OutputSet() : enclosing_(open_output_set) {
  open_output_set = this;
}

OutputSet::~OutputSet() {
  open_output_set = enclosing_;
  discard();
}

void OutputSet::check(const std::string& path) const {
  check_writable(path);
}

void OutputSet::discard() {
  for (const Staged& s : staged_) {
    ::unlink(s.temporary.c_str());
    unregister_temporary(s.slot);
  }
  staged_.clear();
}

namespace {

// Blocks the signals that install_temporary_cleanup() handles on this thread while it lives, so
// that a signal arriving during a commit is delivered after it: all outputs or none.
class CleanupSignalsBlocked {
 public:
  CleanupSignalsBlocked() {
    sigset_t set;
    sigemptyset(&set);
    for (int signal_number : kCleanupSignals) sigaddset(&set, signal_number);
    pthread_sigmask(SIG_BLOCK, &set, &previous_);
  }
  ~CleanupSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  CleanupSignalsBlocked(const CleanupSignalsBlocked&) = delete;
  CleanupSignalsBlocked& operator=(const CleanupSignalsBlocked&) = delete;

 private:
  sigset_t previous_;
};

}  // namespace

void OutputSet::commit() {
  const CleanupSignalsBlocked blocked;
  for (std::size_t i = 0; i < staged_.size(); ++i) {
    if (::rename(staged_[i].temporary.c_str(), staged_[i].target.c_str()) != 0) {
      const int err = errno;
      for (std::size_t j = 0; j < i; ++j) ::unlink(staged_[j].target.c_str());
      const std::string target = staged_[i].target;
      staged_.erase(staged_.begin(), staged_.begin() + static_cast<std::ptrdiff_t>(i));
      discard();
      throw IoError(target + ": cannot rename into place: " + std::strerror(err));
    }
    unregister_temporary(staged_[i].slot);
    staged_[i].slot = -1;
  }
  staged_.clear();
}

void install_temporary_cleanup() {
  for (int signal_number : kCleanupSignals) {
    struct sigaction current {};
    if (::sigaction(signal_number, nullptr, &current) != 0) continue;
    if (current.sa_handler == SIG_IGN) continue;
    struct sigaction action {};
    action.sa_handler = remove_temporaries_and_die;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    ::sigaction(signal_number, &action, nullptr);
  }
}

void io::write_file_atomically(const std::string& path, std::string_view contents) {
  namespace fs = std::filesystem;
  // A rename would replace a device, a pipe or a directory entry with a file.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    throw IoError(path + (S_ISDIR(st.st_mode) ? ": cannot write, it is a directory"
                                              : ": cannot write, it is not a regular file"));
  }
  fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw IoError(path + ": cannot create directory: " + ec.message());
  }
  auto tmp = std::make_unique<Temporary>(temporary_name(path));
  write_temporary(path, tmp->path(), contents);
  if (open_output_set != nullptr) {
    open_output_set->staged_.push_back({path, tmp->path(), -1});
    open_output_set->staged_.back().slot = tmp->hand_over();
    return;
  }
  if (::rename(tmp->path().c_str(), path.c_str()) != 0) {
    throw IoError(path + ": cannot rename into place: " + std::strerror(errno));
  }
  tmp->release();
}

}  // namespace exflow
