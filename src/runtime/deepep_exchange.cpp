// DeepEP mode's two-stage dispatch and combine (deepep_exchange.hpp).
#include "runtime/deepep_exchange.hpp"

#include <algorithm>

#include "exflow/runtime.hpp"

namespace exflow::runtime {
namespace {

std::size_t sz(std::int64_t n) {
  return static_cast<std::size_t>(n);
}

// One exchange of a stage: every transfer leaving this rank packs its row (pack(row, out),
// `hidden` values) into the buffer of its destination; then every transfer reaching this rank
// is unpacked (unpack(row, in)). Sender and receiver walk the same list, so the k-th row from a
// source is the k-th transfer from it in the list.
template <typename T, typename Pack, typename Unpack>
void move_rows(const std::vector<RowTransfer>& stage, int rank, int gpus, std::size_t hidden,
               Pack&& pack, Unpack&& unpack, const AllToAll<T>& all_to_all) {
  if (stage.empty()) return;
  Exchange<T> x(gpus);
  std::vector<T> wire(hidden);
  for (const RowTransfer& tr : stage) {
    if (tr.src == rank) {
      pack(tr.row, std::span<T>(wire));
      std::vector<T>& to = x.send[sz(tr.dst)];
      to.insert(to.end(), wire.begin(), wire.end());
    } else if (tr.dst == rank) {
      x.recv[sz(tr.src)] += hidden;
    }
  }
  all_to_all(x);
  std::vector<std::size_t> next(x.recv_offset);
  for (const RowTransfer& tr : stage) {
    if (tr.dst != rank) continue;
    unpack(tr.row, std::span<const T>(x.recv_data.data() + next[sz(tr.src)], hidden));
    next[sz(tr.src)] += hidden;
  }
}

}  // namespace

std::span<std::int64_t> RowSums::at(int row) {
  std::size_t& slot = slot_[sz(row)];
  if (slot == kNone) {
    slot = sums_.size() / hidden_;
    sums_.resize(sums_.size() + hidden_, 0);
  }
  return {sums_.data() + slot * hidden_, hidden_};
}

void deepep_dispatch(const DeepEPStages& stages, int rank, int gpus, std::span<float> residuals,
                     std::size_t hidden, const AllToAll<float>& all_to_all) {
  auto row = [&](int r) { return residuals.subspan(sz(r) * hidden, hidden); };
  auto pack = [&](int r, std::span<float> out) { std::ranges::copy(row(r), out.begin()); };
  auto unpack = [&](int r, std::span<const float> in) { std::ranges::copy(in, row(r).begin()); };
  // A relay forwards in stage 2 the rows it received in stage 1.
  move_rows(stages.dispatch_from_owner, rank, gpus, hidden, pack, unpack, all_to_all);
  move_rows(stages.dispatch_forward, rank, gpus, hidden, pack, unpack, all_to_all);
}

void deepep_combine(const DeepEPStages& stages, int rank, int gpus, RowSums& sums,
                    std::size_t hidden, const AllToAll<std::int32_t>& all_to_all) {
  // Partial sums of at most k distinct columns fit in int32 (runtime.hpp), a relay's sum of its
  // own and its node's columns included.
  auto pack = [&](int r, std::span<std::int32_t> out) { narrow_partial(sums.at(r), out); };
  auto unpack = [&](int r, std::span<const std::int32_t> in) {
    const std::span<std::int64_t> total = sums.at(r);
    for (std::size_t i = 0; i < hidden; ++i) total[i] += in[i];
  };
  // Stage 1 completes every relay's sum before stage 2 sends it.
  move_rows(stages.combine_to_relay, rank, gpus, hidden, pack, unpack, all_to_all);
  move_rows(stages.combine_to_owner, rank, gpus, hidden, pack, unpack, all_to_all);
}

}  // namespace exflow::runtime
