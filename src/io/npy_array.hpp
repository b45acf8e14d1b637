// Small integer .npy arrays of any rank (count tensors, load tables), read whole into int64.
//
// parse_npy (npy.hpp) accepts only trace shapes: 2 or 3 dimensions, the third at most 64. This
// reader lifts the shape limits and keeps every other check and message of parse_npy: it
// presents parse_npy the same header with the shape flattened to (1, N), then decodes the data
// with the real shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace exflow::io {

struct IntArray {
  std::vector<std::int64_t> shape;   // at least one dimension, none zero
  std::vector<std::int64_t> values;  // C order, whatever the file's order
};

// Throws IoError if the file cannot be opened, InputError naming `path` if it is not an integer
// npy array, has a zero or negative dimension, holds more than 2^31 - 1 values, or holds a
// uint64 value above INT64_MAX.
IntArray read_int_npy(const std::string& path);

}  // namespace exflow::io
