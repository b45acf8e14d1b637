// Typed errors raised by the exflow library.
//
// Everything the library rejects is an exflow::Error carrying one self-contained line (what,
// where, which value). Front ends map the kinds to exit codes: InputError (a file or value the
// user supplied is wrong) and IoError (the system refused a read or write) mean "bad input",
// UsageError means the request itself is inconsistent (e.g. a topology that does not divide
// the expert count).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace exflow {

// A message names options by their PlanOptions field names ("use method fast"); `options` lists
// the names it uses, so that a front end can show them its own way (the CLI as --method).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, std::vector<std::string> options = {})
      : std::runtime_error(message), options_(std::move(options)) {}
  const std::vector<std::string>& options() const { return options_; }

 private:
  std::vector<std::string> options_;
};

// The content of an input (trace, placement, count tensor) is malformed or out of range.
class InputError : public Error {
 public:
  using Error::Error;
};

// The operating system failed to open, map, read or write a file.
class IoError : public Error {
 public:
  using Error::Error;
};

// Arguments that are individually well-formed but contradict each other or the input.
class UsageError : public Error {
 public:
  using Error::Error;
};

}  // namespace exflow
