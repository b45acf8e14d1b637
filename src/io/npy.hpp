// The .npy header (format versions 1.0, 2.0 and 3.0), restricted to what a trace may be:
// a plain integer dtype of 1, 2, 4 or 8 bytes and 2 or 3 non-zero dimensions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace exflow::io {

struct NpyHeader {
  int major_version = 0;
  int minor_version = 0;
  std::string descr;       // e.g. "<i2"
  bool is_signed = true;   // 'i' or 'u'
  int item_size = 0;       // bytes per element
  bool byte_swap = false;  // stored in the opposite byte order to this machine's
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  std::size_t data_offset = 0;  // where the array data starts
  std::size_t data_bytes = 0;   // product(shape) * item_size
};

// Parses and checks the header of an .npy file held in memory (`size` bytes) and checks that
// the data that follows has exactly the size the header implies. Throws InputError with a
// message that starts with `path`.
NpyHeader parse_npy(const std::uint8_t* data, std::size_t size, const std::string& path);

class InputFile;

// The header of an .npy file on disk, checked as parse_npy checks it against the file's size;
// reads only the header. A header longer than 1 MiB is refused (numpy's are a few hundred
// bytes).
NpyHeader read_npy_header(const InputFile& file);

// Serialises a C- or Fortran-ordered integer array as .npy (for tests, tools and converters).
// `descr` is a numpy dtype string such as "<i2"; `values` are converted to that dtype.
std::string encode_npy(const std::vector<std::int64_t>& values,
                       const std::vector<std::int64_t>& shape, const std::string& descr,
                       bool fortran_order = false, int major_version = 1);

// "(15, 64, 64)", as numpy prints shapes.
std::string npy_shape_text(const std::vector<std::int64_t>& shape);

}  // namespace exflow::io
