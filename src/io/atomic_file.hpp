// Atomic file replacement: write to a temporary file beside the target, flush it to disk and
// rename it over the target, so readers see the old file or the complete new one.

// Outputs published together and the signal cleanup: exflow/outputs.hpp.
#pragma once

#include <string>
#include <string_view>

#include "exflow/outputs.hpp"

namespace exflow::io {

// Creates missing parent directories. Throws IoError naming the path on failure.
void write_file_atomically(const std::string& path, std::string_view contents);

}  // namespace exflow::io
