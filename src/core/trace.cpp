#include "exflow/trace.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <limits>
#include <thread>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "exflow/error.hpp"
#include "exflow/progress.hpp"
#include "io/input_file.hpp"
#include "io/npy.hpp"

namespace exflow {

namespace {
// Largest expert count accepted; ids at or above it are reported as out of range.
constexpr int kMaxExperts = 1 << 16;

// The first (token, layer) row of `block` that names one expert in two columns, or false.
// Compares every pair of columns over the whole block first: a branch-free loop the compiler
// vectorises, so the common case (no repeat) costs k(k-1)/2 cheap passes per block.
struct RepeatedExpert {
  std::int64_t token = -1;
  int layer = 0;
  int first_col = 0;
  int col = 0;
};
bool find_repeated_expert(const TraceBlock& block, RepeatedExpert& out) {
  bool any = false;
  for (int l = 0; l < block.layers && !any; ++l) {
    for (int c = 1; c < block.k && !any; ++c) {
      const std::int32_t* b = block.column(l, c);
      for (int c0 = 0; c0 < c; ++c0) {
        const std::int32_t* a = block.column(l, c0);
        int equal = 0;
        for (std::int64_t i = 0; i < block.tokens; ++i) equal |= static_cast<int>(a[i] == b[i]);
        any |= equal != 0;
      }
    }
  }
  if (!any) return false;
  for (std::int64_t i = 0; i < block.tokens; ++i) {
    for (int l = 0; l < block.layers; ++l) {
      for (int c = 1; c < block.k; ++c) {
        for (int c0 = 0; c0 < c; ++c0) {
          if (block.column(l, c0)[i] == block.column(l, c)[i]) {
            out = RepeatedExpert{block.first_token + i, l, c0, c};
            return true;
          }
        }
      }
    }
  }
  return false;
}
}  // namespace

namespace {

// How ids lie in memory: element (t, l, c) at base + index(t, l, c) * item size.
struct IdLayout {
  const std::uint8_t* base = nullptr;
  bool fortran_order = false;
  std::int64_t tokens = 0;
  std::int64_t layers = 0;
  std::int64_t k = 0;

  std::int64_t index(std::int64_t t, std::int64_t l, std::int64_t c) const {
    return fortran_order ? t + tokens * (l + layers * c) : (t * layers + l) * k + c;
  }
};

}  // namespace

// Where the ids live and how they are laid out: an .npy file read block by block, or memory
// (an owned int32 buffer, C order, native byte order, or a caller's buffer).
struct Trace::Storage {
  std::unique_ptr<io::InputFile> file;  // when set, ids start at data_offset in it
  std::size_t data_offset = 0;
  std::vector<std::int32_t> owned;
  std::shared_ptr<const void> borrowed;  // from_buffer: keeps the caller's memory alive
  IdLayout layout;                       // layout.base is null for a file
  bool is_signed = true;
  int item_size = 4;
  bool byte_swap = false;

  // The ids of tokens [begin, begin + n), columns [0, k), where a decoder can read them: in
  // memory as they are, or from the file into `staged` (then laid out for tokens 0 .. n-1).
  IdLayout view(std::int64_t begin, std::int64_t n, int k, std::vector<std::uint8_t>& staged,
                std::int64_t& first) const {
    first = begin;
    if (!file) return layout;
    IdLayout v = layout;
    const auto item = static_cast<std::size_t>(item_size);
    if (!layout.fortran_order) {
      // Rows of tokens are contiguous: one read.
      const auto row = static_cast<std::size_t>(layout.layers * layout.k) * item;
      staged.resize(static_cast<std::size_t>(n) * row);
      file->read_at(data_offset + static_cast<std::size_t>(begin) * row, staged.size(),
                    staged.data());
    } else {
      // Each (layer, column) run of tokens is contiguous: one read per run that is used.
      v.tokens = n;
      staged.resize(static_cast<std::size_t>(n * layout.layers * layout.k) * item);
      for (std::int64_t c = 0; c < k; ++c) {
        for (std::int64_t l = 0; l < layout.layers; ++l) {
          file->read_at(data_offset + static_cast<std::size_t>(layout.index(begin, l, c)) * item,
                        static_cast<std::size_t>(n) * item,
                        staged.data() + static_cast<std::size_t>(v.index(0, l, c)) * item);
        }
      }
    }
    v.base = staged.data();
    first = 0;
    return v;
  }

  // The exact stored value (for error messages), widened without clamping.
  std::string raw_text(std::int64_t t, int l, int c) const {
    std::uint8_t bytes[8];
    const auto at = static_cast<std::size_t>(layout.index(t, l, c) * item_size);
    if (file) {
      file->read_at(data_offset + at, static_cast<std::size_t>(item_size), bytes);
    } else {
      std::memcpy(bytes, layout.base + at, static_cast<std::size_t>(item_size));
    }
    const std::uint8_t* p = bytes;
    std::uint64_t u = 0;
    for (int b = 0; b < item_size; ++b) {
      bool big = (std::endian::native == std::endian::big) != byte_swap;
      int src = big ? b : item_size - 1 - b;
      u = (u << 8) | p[src];
    }
    if (!is_signed) return std::to_string(u);
    int shift = 64 - 8 * item_size;
    auto s = static_cast<std::int64_t>(u << shift) >> shift;
    return std::to_string(s);
  }
};

namespace {

template <typename T>
T load(const std::uint8_t* p, bool swap) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if (swap) {
    if constexpr (sizeof(T) == 2)
      v = static_cast<T>(__builtin_bswap16(static_cast<std::uint16_t>(v)));
    if constexpr (sizeof(T) == 4)
      v = static_cast<T>(__builtin_bswap32(static_cast<std::uint32_t>(v)));
    if constexpr (sizeof(T) == 8)
      v = static_cast<T>(__builtin_bswap64(static_cast<std::uint64_t>(v)));
  }
  return v;
}

// Widens to int32, mapping anything outside [-1, INT32_MAX] onto -1 or INT32_MAX so that
// validation still sees it as out of range.
template <typename T>
std::int32_t narrow(T v) {
  if constexpr (std::is_signed_v<T> && sizeof(T) <= 4) {
    return static_cast<std::int32_t>(v);
  } else if constexpr (std::is_signed_v<T>) {
    if (v < 0) return -1;
    return v > std::numeric_limits<std::int32_t>::max() ? std::numeric_limits<std::int32_t>::max()
                                                        : static_cast<std::int32_t>(v);
  } else {
    return v > static_cast<T>(std::numeric_limits<std::int32_t>::max())
               ? std::numeric_limits<std::int32_t>::max()
               : static_cast<std::int32_t>(v);
  }
}

#if defined(__SSE2__)
// Tokens [0, m) of the C-order rows at `src` (`row` bytes apart), 16-bit ids, all `columns` of
// each row, into the layer-major columns of `dst` (column j at dst + j * n): 8 x 8 tiles
// transposed in SSE2 registers and widened to int32 (sign- or zero-extended), the edges one id
// at a time.
template <typename T>
void transpose_16bit_rows(const std::uint8_t* src, std::int64_t row, std::int64_t m,
                          std::int64_t columns, std::int32_t* dst, std::int64_t n) {
  static_assert(sizeof(T) == 2, "16-bit ids");
  const std::int64_t m8 = m - m % 8;
  const std::int64_t columns8 = columns - columns % 8;
  for (std::int64_t j = 0; j < columns8; j += 8) {
    for (std::int64_t i = 0; i < m8; i += 8) {
      const std::uint8_t* p = src + i * row + j * 2;
      __m128i r[8];
      for (int a = 0; a < 8; ++a) {
        r[a] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + a * row));
      }
      __m128i t[8], u[8];
      for (int a = 0; a < 4; ++a) {
        t[a] = _mm_unpacklo_epi16(r[2 * a], r[2 * a + 1]);
        t[a + 4] = _mm_unpackhi_epi16(r[2 * a], r[2 * a + 1]);
      }
      // t[0..3]: columns 0-3 of row pairs (0,1) .. (6,7); t[4..7]: columns 4-7.
      for (int h = 0; h < 2; ++h) {
        u[4 * h + 0] = _mm_unpacklo_epi32(t[4 * h + 0], t[4 * h + 1]);
        u[4 * h + 1] = _mm_unpackhi_epi32(t[4 * h + 0], t[4 * h + 1]);
        u[4 * h + 2] = _mm_unpacklo_epi32(t[4 * h + 2], t[4 * h + 3]);
        u[4 * h + 3] = _mm_unpackhi_epi32(t[4 * h + 2], t[4 * h + 3]);
      }
      // u[4h]: columns 4h, 4h+1 of rows 0-3, u[4h + 1]: columns 4h+2, 4h+3 of rows 0-3;
      // u[4h + 2] and u[4h + 3]: the same of rows 4-7.
      for (int c = 0; c < 8; ++c) {
        const int h = c / 4, q = (c % 4) / 2;
        const __m128i lo = u[4 * h + q], hi = u[4 * h + 2 + q];
        const __m128i column = c % 2 == 0 ? _mm_unpacklo_epi64(lo, hi) : _mm_unpackhi_epi64(lo, hi);
        __m128i first, second;
        if constexpr (std::is_signed_v<T>) {
          first = _mm_srai_epi32(_mm_unpacklo_epi16(column, column), 16);
          second = _mm_srai_epi32(_mm_unpackhi_epi16(column, column), 16);
        } else {
          first = _mm_unpacklo_epi16(column, _mm_setzero_si128());
          second = _mm_unpackhi_epi16(column, _mm_setzero_si128());
        }
        std::int32_t* out = dst + (j + c) * n + i;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), first);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4), second);
      }
    }
  }
  for (std::int64_t j = 0; j < columns; ++j) {
    for (std::int64_t i = j < columns8 ? m8 : 0; i < m; ++i) {
      dst[j * n + i] = narrow(load<T>(src + i * row + j * 2, false));
    }
  }
}
#endif

// Decodes tokens [begin, begin + n), columns [0, k) into layer-major out.
template <typename T, bool Swap>
void decode_typed(const IdLayout& s, std::int64_t begin, std::int64_t n, int layers, int k,
                  std::int32_t* out) {
  const std::uint8_t* base = s.base;
  constexpr auto size = static_cast<std::int64_t>(sizeof(T));
  if (s.fortran_order) {
    for (int l = 0; l < layers; ++l) {
      for (int c = 0; c < k; ++c) {
        const std::uint8_t* src = base + s.index(begin, l, c) * size;
        std::int32_t* dst = out + (static_cast<std::int64_t>(l) * k + c) * n;
        for (std::int64_t i = 0; i < n; ++i) dst[i] = narrow(load<T>(src + i * size, Swap));
      }
    }
    return;
  }
  // C order: transpose in tiles of kTile tokens. A tile's rows stay in L1 while each output
  // column receives kTile consecutive ids. Going one token at a time instead writes one id to
  // each of layers * k output columns per token; the columns lie n * 4 bytes apart (8 KiB in
  // a full block), map to the same L1 sets and evict one another before their lines fill.
  constexpr std::int64_t kTile = 64;
  const std::int64_t row = s.layers * s.k * size;
  for (std::int64_t t0 = 0; t0 < n; t0 += kTile) {
    const std::int64_t m = std::min(kTile, n - t0);
    const std::uint8_t* tile = base + (begin + t0) * row;
#if defined(__SSE2__)
    if constexpr (sizeof(T) == 2 && !Swap) {
      if (k == s.k) {
        transpose_16bit_rows<T>(tile, row, m, layers * s.k, out + t0, n);
        continue;
      }
    }
#endif
    for (int l = 0; l < layers; ++l) {
      for (int c = 0; c < k; ++c) {
        const std::uint8_t* src = tile + (l * s.k + c) * size;
        std::int32_t* dst = out + (static_cast<std::int64_t>(l) * k + c) * n + t0;
        for (std::int64_t i = 0; i < m; ++i) dst[i] = narrow(load<T>(src + i * row, Swap));
      }
    }
  }
}

using DecodeFn = void (*)(const IdLayout&, std::int64_t, std::int64_t, int, int, std::int32_t*);

template <typename T>
DecodeFn pick(bool swap) {
  return swap ? &decode_typed<T, true> : &decode_typed<T, false>;
}

DecodeFn decoder_for(const Trace::Storage& s) {
  switch (s.item_size) {
    case 1:
      return s.is_signed ? pick<std::int8_t>(false) : pick<std::uint8_t>(false);
    case 2:
      return s.is_signed ? pick<std::int16_t>(s.byte_swap) : pick<std::uint16_t>(s.byte_swap);
    case 4:
      return s.is_signed ? pick<std::int32_t>(s.byte_swap) : pick<std::uint32_t>(s.byte_swap);
    default:
      return s.is_signed ? pick<std::int64_t>(s.byte_swap) : pick<std::uint64_t>(s.byte_swap);
  }
}

// Calls run(worker, begin, end) for `workers` contiguous ranges of tokens [0, tokens), worker 0
// on the calling thread and each other on its own; returns the first worker's exception, if any.
std::exception_ptr run_workers(int workers, std::int64_t tokens,
                               const std::function<void(int, std::int64_t, std::int64_t)>& run) {
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(workers));
  auto guarded = [&](int worker) {
    try {
      run(worker, tokens * worker / workers, tokens * (worker + 1) / workers);
    } catch (...) {
      errors[static_cast<std::size_t>(worker)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < workers; ++i) pool.emplace_back(guarded, i);
  guarded(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors) {
    if (e) return e;
  }
  return nullptr;
}

// Widens lo and hi to the smallest and largest of n native-order T ids stored at `ids`.
template <typename T>
void widen_range(const std::uint8_t* ids, std::int64_t n, std::int32_t& lo, std::int32_t& hi) {
  T smallest = std::numeric_limits<T>::max();
  T largest = std::numeric_limits<T>::min();
  for (std::int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, ids + i * static_cast<std::int64_t>(sizeof(T)), sizeof(T));
    smallest = std::min(smallest, v);
    largest = std::max(largest, v);
  }
  lo = std::min<std::int32_t>(lo, smallest);
  hi = std::max<std::int32_t>(hi, largest);
}

// Top-1 16-bit C-order ids in native byte order: whether every stored id of the `tokens` rows of
// `layers` ids lies in [0, limit), read without decoding, over `workers` ranges of tokens (max_id:
// the largest); false, without reading, for other layouts.
bool stored_ids_in_range(const Trace::Storage& s, std::int64_t tokens, int layers, int workers,
                         std::int32_t limit, std::int32_t& max_id) {
  if (s.layout.k != 1 || s.item_size != 2 || s.byte_swap || s.layout.fortran_order) return false;
  std::vector<std::int32_t> lows(static_cast<std::size_t>(workers), limit);
  std::vector<std::int32_t> highs(static_cast<std::size_t>(workers), -1);
  const std::exception_ptr error =
      run_workers(workers, tokens, [&](int worker, std::int64_t begin, std::int64_t end) {
        std::vector<std::uint8_t> staged;
        auto& lo = lows[static_cast<std::size_t>(worker)];
        auto& hi = highs[static_cast<std::size_t>(worker)];
        for (std::int64_t b = begin; b < end; b += kTraceBlockTokens) {
          const std::int64_t n = std::min(end, b + kTraceBlockTokens) - b;
          std::int64_t first = 0;
          const IdLayout view = s.view(b, n, 1, staged, first);
          const std::uint8_t* ids = view.base + view.index(first, 0, 0) * 2;
          if (s.is_signed) {
            widen_range<std::int16_t>(ids, n * layers, lo, hi);
          } else {
            widen_range<std::uint16_t>(ids, n * layers, lo, hi);
          }
        }
      });
  if (error) std::rethrow_exception(error);
  const std::int32_t lo = *std::min_element(lows.begin(), lows.end());
  max_id = *std::max_element(highs.begin(), highs.end());
  return lo >= 0 && max_id < limit;
}

}  // namespace

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

Trace Trace::open(const std::string& path, const TraceOpenOptions& options) {
  auto storage = std::make_shared<Storage>();
  storage->file = std::make_unique<io::InputFile>(path);
  io::NpyHeader h = io::read_npy_header(*storage->file);
  storage->data_offset = h.data_offset;
  storage->is_signed = h.is_signed;
  storage->item_size = h.item_size;
  storage->byte_swap = h.byte_swap;
  storage->layout.fortran_order = h.fortran_order;
  storage->layout.tokens = h.shape[0];
  storage->layout.layers = h.shape[1];
  storage->layout.k = h.shape.size() == 3 ? h.shape[2] : 1;

  Trace trace;
  trace.storage_ = storage;
  trace.source_ = path;
  trace.tokens_ = storage->layout.tokens;
  trace.layers_ = static_cast<int>(storage->layout.layers);
  trace.k_ = static_cast<int>(storage->layout.k);
  if (options.topk) {
    if (*options.topk < 1 || *options.topk > trace.k_) {
      throw UsageError(path + ": top-k " + std::to_string(*options.topk) +
                       " requested but the trace has k = " + std::to_string(trace.k_));
    }
    trace.k_ = *options.topk;
  }
  trace.validate_ids(options.experts, options.threads);
  return trace;
}

Trace Trace::from_ids(std::vector<std::int32_t> ids, std::int64_t tokens, int layers, int k,
                      std::optional<int> experts) {
  if (tokens < 1 || layers < 1 || k < 1) {
    throw InputError("in-memory trace: tokens, layers and k must be positive (got " +
                     std::to_string(tokens) + ", " + std::to_string(layers) + ", " +
                     std::to_string(k) + ")");
  }
  if (ids.size() != static_cast<std::size_t>(tokens) * layers * k) {
    throw InputError("in-memory trace: " + std::to_string(ids.size()) + " ids for shape (" +
                     std::to_string(tokens) + ", " + std::to_string(layers) + ", " +
                     std::to_string(k) + ")");
  }
  auto storage = std::make_shared<Storage>();
  storage->owned = std::move(ids);
  storage->layout.base = reinterpret_cast<const std::uint8_t*>(storage->owned.data());
  storage->layout.tokens = tokens;
  storage->layout.layers = layers;
  storage->layout.k = k;
  Trace trace;
  trace.storage_ = storage;
  trace.source_ = "in-memory trace";
  trace.tokens_ = tokens;
  trace.layers_ = layers;
  trace.k_ = k;
  trace.validate_ids(experts, 1);
  return trace;
}

Trace Trace::from_buffer(const Buffer& b, const TraceOpenOptions& options) {
  if (b.tokens < 1 || b.layers < 1 || b.k < 1) {
    throw InputError(b.source + ": tokens, layers and k must be positive (got " +
                     std::to_string(b.tokens) + ", " + std::to_string(b.layers) + ", " +
                     std::to_string(b.k) + ")");
  }
  if (b.item_size != 1 && b.item_size != 2 && b.item_size != 4 && b.item_size != 8) {
    throw InputError(b.source + ": ids must be 1, 2, 4 or 8-byte integers, got " +
                     std::to_string(b.item_size) + " bytes");
  }
  if (b.data == nullptr) throw InputError(b.source + ": no data");
  auto storage = std::make_shared<Storage>();
  storage->borrowed = b.keepalive;
  storage->layout.base = static_cast<const std::uint8_t*>(b.data);
  storage->is_signed = b.is_signed;
  storage->item_size = b.item_size;
  storage->layout.fortran_order = b.fortran_order;
  storage->layout.tokens = b.tokens;
  storage->layout.layers = b.layers;
  storage->layout.k = b.k;
  Trace trace;
  trace.storage_ = storage;
  trace.source_ = b.source;
  trace.tokens_ = b.tokens;
  trace.layers_ = b.layers;
  trace.k_ = b.k;
  if (options.topk) {
    if (*options.topk < 1 || *options.topk > trace.k_) {
      throw UsageError(b.source + ": top-k " + std::to_string(*options.topk) +
                       " requested but the trace has k = " + std::to_string(trace.k_));
    }
    trace.k_ = *options.topk;
  }
  trace.validate_ids(options.experts, options.threads);
  return trace;
}

Trace Trace::prefix(std::int64_t n) const {
  if (n < 1 || n > tokens_) {
    throw UsageError(source_ + ": prefix of " + std::to_string(n) +
                     " tokens requested, trace has " + std::to_string(tokens_));
  }
  Trace t = *this;
  t.tokens_ = n;
  return t;
}

Trace Trace::slice(std::int64_t begin, std::int64_t end) const {
  if (begin < 0 || end <= begin || end > tokens_) {
    throw UsageError(source_ + ": tokens [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") requested, trace has " + std::to_string(tokens_));
  }
  Trace t = *this;
  t.first_ = first_ + begin;
  t.tokens_ = end - begin;
  return t;
}

std::int32_t Trace::at(std::int64_t t, int layer, int col) const {
  if (t < 0 || t >= tokens_ || layer < 0 || layer >= layers_ || col < 0 || col >= k_) {
    throw UsageError(source_ + ": no element at token " + std::to_string(t) + ", layer " +
                     std::to_string(layer) + ", column " + std::to_string(col));
  }
  std::vector<std::int32_t> buffer;
  return decode(t, t + 1, buffer).column(layer, col)[0];
}

TraceBlock Trace::decode(std::int64_t begin, std::int64_t end,
                         std::vector<std::int32_t>& out) const {
  std::int64_t n = end - begin;
  out.resize(static_cast<std::size_t>(n) * layers_ * k_);
  thread_local std::vector<std::uint8_t> staged;  // a file's bytes of this block
  std::int64_t first = 0;
  const IdLayout view = storage_->view(first_ + begin, n, k_, staged, first);
  decoder_for (*storage_)(view, first, n, layers_, k_, out.data());
  return TraceBlock{out.data(), begin, n, layers_, k_};
}

int Trace::workers(int threads) const {
  std::int64_t blocks = (tokens_ + kTraceBlockTokens - 1) / kTraceBlockTokens;
  return static_cast<int>(
      std::max<std::int64_t>(1, std::min<std::int64_t>(resolve_threads(threads), blocks)));
}

void Trace::for_each_block(int threads, const std::function<void(int, const TraceBlock&)>& body,
                           Progress* progress, const char* what) const {
  if (progress != nullptr) progress->begin(what, tokens_);
  const std::exception_ptr error =
      run_workers(workers(threads), tokens_, [&](int worker, std::int64_t begin, std::int64_t end) {
        std::vector<std::int32_t> buffer;
        for (std::int64_t b = begin; b < end; b += kTraceBlockTokens) {
          TraceBlock block = decode(b, std::min(end, b + kTraceBlockTokens), buffer);
          body(worker, block);
          if (progress != nullptr) progress->advance(block.tokens);
        }
      });
  if (progress != nullptr) progress->end();
  if (error) std::rethrow_exception(error);
}

void Trace::validate_ids(std::optional<int> experts, int threads) {
  if (experts && (*experts < 1 || *experts > kMaxExperts)) {
    throw UsageError(source_ + ": experts = " + std::to_string(*experts) + " is out of range [1, " +
                     std::to_string(kMaxExperts) + "]");
  }
  const std::int32_t limit = experts ? *experts : kMaxExperts;
  std::int32_t stored_max = -1;
  if (stored_ids_in_range(*storage_, tokens_, layers_, workers(threads), limit, stored_max)) {
    experts_ = experts ? *experts : stored_max + 1;
    return;
  }
  struct Scan {
    std::int32_t max = -1;
    std::int64_t bad_token = -1;  // first token (in this worker's range) with an id out of range
    int bad_layer = 0;
    int bad_col = 0;
    RepeatedExpert repeat;  // first row (in this worker's range) naming an expert twice
  };
  std::vector<Scan> scans(static_cast<std::size_t>(workers(threads)));
  for_each_block(threads, [&](int worker, const TraceBlock& block) {
    Scan& scan = scans[static_cast<std::size_t>(worker)];
    const std::int64_t count = block.tokens * block.layers * block.k;
    std::int32_t lo = std::numeric_limits<std::int32_t>::max();
    std::int32_t hi = -1;
    for (std::int64_t i = 0; i < count; ++i) {
      lo = std::min(lo, block.ids[i]);
      hi = std::max(hi, block.ids[i]);
    }
    scan.max = std::max(scan.max, hi);
    if (scan.repeat.token < 0 && block.k > 1) find_repeated_expert(block, scan.repeat);
    if (scan.bad_token >= 0 || (lo >= 0 && hi < limit)) return;
    for (std::int64_t i = 0; i < block.tokens && scan.bad_token < 0; ++i) {
      for (int l = 0; l < block.layers && scan.bad_token < 0; ++l) {
        for (int c = 0; c < block.k; ++c) {
          std::int32_t v = block.column(l, c)[i];
          if (v < 0 || v >= limit) {
            scan = Scan{scan.max, block.first_token + i, l, c, scan.repeat};
            break;
          }
        }
      }
    }
  });
  std::int32_t max_id = -1;
  for (const Scan& s : scans) max_id = std::max(max_id, s.max);
  for (const Scan& s : scans) {
    if (s.bad_token < 0) continue;
    std::string where = " at token " + std::to_string(s.bad_token) + ", layer " +
                        std::to_string(s.bad_layer) +
                        (k_ > 1 ? ", column " + std::to_string(s.bad_col) : std::string());
    std::string value = storage_->raw_text(s.bad_token, s.bad_layer, s.bad_col);
    if (value[0] == '-')
      throw InputError(source_ + ": expert id " + value + where + " is negative");
    if (experts) {
      throw InputError(source_ + ": expert id " + value + where + " is out of range for " +
                       std::to_string(*experts) + " experts (largest id in the trace: " +
                       (max_id == std::numeric_limits<std::int32_t>::max()
                            ? std::string("beyond int32")
                            : std::to_string(max_id)) +
                       ")");
    }
    throw InputError(source_ + ": expert id " + value + where + " exceeds the largest supported " +
                     "expert count (" + std::to_string(kMaxExperts) + ")");
  }
  for (const Scan& s : scans) {
    const RepeatedExpert& r = s.repeat;
    if (r.token < 0) continue;
    throw InputError(source_ + ": token " + std::to_string(r.token) + ", layer " +
                     std::to_string(r.layer) + " names expert " +
                     storage_->raw_text(r.token, r.layer, r.col) + " twice (columns " +
                     std::to_string(r.first_col) + " and " + std::to_string(r.col) +
                     "); a top-k row holds k distinct experts");
  }
  experts_ = experts ? *experts : max_id + 1;
}

}  // namespace exflow
