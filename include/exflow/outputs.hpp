// Outputs that appear together or not at all, and no temporaries left by a signal.
//
// A command with several outputs opens an OutputSet: it checks every output before the work,
// and while it is open on a thread the library's writers there (write_placement_csv,
// write_sglang_expert_location, ...) only stage each file (a complete temporary beside the
// target); commit() renames them all into place. An OutputSet that is destroyed
// uncommitted (an error, a later output that failed) removes its temporaries, so the outputs
// appear together or not at all.
//
// Temporaries are registered while they exist: install_temporary_cleanup() makes SIGINT,
// SIGTERM, SIGHUP and SIGQUIT remove them before the process dies of the signal.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace exflow {

namespace io {
void write_file_atomically(const std::string& path, std::string_view contents);
}

// Throws IoError naming `path` unless a file can be created there: its nearest existing
// ancestor is a writable directory, and `path` itself, if it exists, is a regular file.
// Leaves nothing behind (it makes and removes a probe entry).
void check_writable(const std::string& path);

class OutputSet {
 public:
  // Opens the set on this thread (sets nest: the innermost is the one writes go to).
  OutputSet();
  ~OutputSet();
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;

  // check_writable(path), before the work.
  void check(const std::string& path) const;
  // Renames every staged file into place, in the order they were written. If one rename fails,
  // the files this call already published are removed and the rest's temporaries too; throws
  // IoError naming the file that failed.
  void commit();

 private:
  struct Staged {
    std::string target;
    std::string temporary;
    int slot = -1;  // its registration for the signal handler
  };
  friend void io::write_file_atomically(const std::string& path, std::string_view contents);
  void discard();

  std::vector<Staged> staged_;
  OutputSet* enclosing_ = nullptr;
};

// Installs, for SIGINT, SIGTERM, SIGHUP and SIGQUIT (those not ignored), a handler that removes
// the temporaries of writes in progress and then dies of the signal as it would have.
void install_temporary_cleanup();

}  // namespace exflow
