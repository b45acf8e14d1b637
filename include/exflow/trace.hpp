// Expert-routing traces.
//
// A trace records, for every token and every MoE layer, the expert(s) the router chose:
//   ids[t, l]      top-1 (the original ExFlow format), shape [tokens, layers]
//   ids[t, l, c]   top-k, shape [tokens, layers, k]; column 0 is the highest-scoring expert.
// Values are local expert ids in [0, experts). A Trace is a read-only view over an .npy file
// read block by block (any integer dtype, byte order, C or Fortran order) or an in-memory
// array; every id is validated when the trace is opened, so consumers never re-check.
// Consumers read it in blocks of tokens (TraceBlock), decoded to int32 in layer-major order,
// which keeps memory at O(block) whatever the file size.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace exflow {

class Progress;

// Decoded ids of tokens [first_token, first_token + tokens), layer-major:
// ids[(layer * k + column) * tokens + i] is the expert of token first_token + i.
struct TraceBlock {
  const std::int32_t* ids = nullptr;
  std::int64_t first_token = 0;
  std::int64_t tokens = 0;
  int layers = 0;
  int k = 0;

  // The `tokens` ids of one (layer, column) pair, contiguous.
  const std::int32_t* column(int layer, int col) const {
    return ids + (static_cast<std::int64_t>(layer) * k + col) * tokens;
  }
};

struct TraceOpenOptions {
  std::optional<int> experts;  // E; default: largest id + 1
  std::optional<int> topk;     // use only the first K columns; default: all
  int threads = 0;             // for validation; 0 = hardware concurrency
};

class Trace {
 public:
  struct Storage;  // input file or owned buffer plus element layout (src/core/trace.cpp)

  // Opens a .npy trace. Throws InputError / IoError naming the file on any defect.
  static Trace open(const std::string& path, const TraceOpenOptions& options = {});

  // Builds a trace from ids laid out C-order [tokens, layers, k] (k = 1 for top-1 traces).
  static Trace from_ids(std::vector<std::int32_t> ids, std::int64_t tokens, int layers, int k,
                        std::optional<int> experts = std::nullopt);

  std::int64_t tokens() const { return tokens_; }
  int layers() const { return layers_; }
  int k() const { return k_; }
  int experts() const { return experts_; }
  const std::string& source() const { return source_; }

  // A view over integer ids another owner holds (a NumPy array, say), without copying: native
  // byte order, `item_size` 1, 2, 4 or 8 bytes, signed or not, C order [tokens, layers, k] or
  // Fortran order; `keepalive` keeps the memory valid as long as the trace (or a copy) lives.
  // `source` names the array in error messages. Throws InputError like open().
  struct Buffer {
    const void* data = nullptr;
    int item_size = 4;
    bool is_signed = true;
    bool fortran_order = false;
    std::int64_t tokens = 0;
    int layers = 0;
    int k = 1;
    std::shared_ptr<const void> keepalive;
    std::string source = "in-memory trace";
  };
  static Trace from_buffer(const Buffer& buffer, const TraceOpenOptions& options = {});

  // The same trace restricted to its first `n` tokens (n <= tokens()).
  Trace prefix(std::int64_t n) const;
  // The same trace restricted to tokens [begin, end) (0 <= begin < end <= tokens()): its token
  // t is token begin + t of this one. Shares the storage; nothing is copied or re-validated.
  Trace slice(std::int64_t begin, std::int64_t end) const;

  // Expert id of token t at (layer, column). For tests and small look-ups; use blocks for passes.
  std::int32_t at(std::int64_t t, int layer, int col = 0) const;

  // Decodes tokens [begin, end) into `out` (resized) and returns the block view.
  TraceBlock decode(std::int64_t begin, std::int64_t end, std::vector<std::int32_t>& out) const;

  // Calls body(worker, block) for consecutive blocks covering every token exactly once.
  // Tokens are split into `threads` contiguous ranges (0 = hardware concurrency, at most one
  // per block); worker w always receives blocks of range w in order, so per-worker
  // accumulators merged in worker order give deterministic results.
  void for_each_block(int threads, const std::function<void(int worker, const TraceBlock&)>& body,
                      Progress* progress = nullptr, const char* what = "reading trace") const;

  // Number of workers for_each_block will use for a `threads` request.
  int workers(int threads) const;

 private:
  Trace() = default;
  void validate_ids(std::optional<int> experts, int threads);

  std::shared_ptr<const Storage> storage_;
  std::int64_t first_ = 0;  // the storage's token that is this trace's token 0 (slice)
  std::int64_t tokens_ = 0;
  int layers_ = 0;
  int k_ = 0;
  int experts_ = 0;
  std::string source_;
};

// Tokens decoded per block by for_each_block.
inline constexpr std::int64_t kTraceBlockTokens = 2048;

// Hardware concurrency (at least 1) when `threads` <= 0, else `threads`.
int resolve_threads(int threads);

}  // namespace exflow
