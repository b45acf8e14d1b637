// The expert-parallel engines on MPI (include/exflow/expert_parallel.hpp).
//
// Every rank computes the same RoutePlan, so each knows, for every collective, what every other
// rank sends it: receive counts come from the plan, never from an extra exchange, and a
// collective that the plan says is empty everywhere is skipped by every rank alike. Buffers
// hold rows in row order (a step's rows are its tokens in token order), so the receiver unpacks
// them by walking the same rows. The kernels are the reference's (runtime.hpp), called on the
// same inputs, so the final states are the reference's bit for bit.
#include "exflow/expert_parallel.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "exflow/topology.hpp"
#include "exflow/trace.hpp"
#include "runtime/deepep_exchange.hpp"

namespace exflow::runtime {
namespace {

std::size_t sz(std::int64_t n) {
  return static_cast<std::size_t>(n);
}

int mpi_count(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX)) {
    throw UsageError(std::string(what) + ": " + std::to_string(n) +
                     " elements in one message exceed MPI's int count; use a smaller batch");
  }
  return static_cast<int>(n);
}

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

void check_mpi(int status, const char* call) {
  if (status != MPI_SUCCESS) throw IoError(std::string("MPI: ") + call + " failed");
}

// Adds the wall time of a scope to a counter.
class Timer {
 public:
  explicit Timer(double& into) : into_(into), start_(MPI_Wtime()) {}
  ~Timer() { into_ += MPI_Wtime() - start_; }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

 private:
  double& into_;
  double start_;
};

template <typename T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype mpi_type<std::int32_t>() {
  return MPI_INT32_T;
}

class Engine {
 public:
  Engine(const Trace& trace, const ModelConfig& config, const Workload& workload,
         const Placement& placement, const Topology& topology, ParallelMode mode)
      : config_(config),
        workload_(workload),
        topology_(topology),
        G_(topology.gpus()),
        L_(config.layers),
        K_(config.k),
        H_(sz(config.hidden)),
        rank_(world_rank()),
        routes_(workload_routes(trace, config, workload)),
        plan_(plan_routes(routes_, config, workload, placement, topology, mode)),
        mix_(combine_weights(config.combine, config.k)),
        weights_(config, served_here()),
        // Baseline: only the sequences this rank owns (s mod G == rank), at index s / G.
        cache_(L_, mode == ParallelMode::kExflow ? workload.batch : (workload.batch + G_ - 1) / G_,
               workload.seq_len, config.hidden) {
    result_.mode = mode;
    result_.ranks = G_;
    result_.layers = L_;
    result_.tokens = workload.tokens();
    sent_bytes_.assign(sz(L_) * 2 * sz(G_), 0);
    sent_messages_.assign(sent_bytes_.size(), 0);
    kv_bytes_.assign(sz(L_), 0);
    final_local_.assign(sz(workload.tokens()) * H_, 0.0f);
  }

  ParallelResult run(double setup_seconds);

 private:
  bool exflow() const { return plan_.mode == ParallelMode::kExflow; }
  bool deepep() const { return plan_.mode == ParallelMode::kDeepEP; }

  // hosted[l * E + e]: some token of the workload uses this rank's copy of expert e of layer l.
  std::vector<char> served_here() const;
  void step(const Step& step, StepRecord& record);
  // Rows whose attention runs here at layer l (exflow layer 0: the rows this rank serves).
  std::vector<int> attention_rows(int l) const;
  void attention(int l, const std::vector<int>& rows, bool every_row_kv, StepRecord& record);
  void dispatch(int l, StepRecord& record);
  // DeepEP mode's two-stage exchanges (deepep_exchange.hpp) of layer l.
  void deepep_dispatch_layer(int l, StepRecord& record);
  void deepep_combine_layer(int l, const std::vector<int>& served,
                            const std::vector<std::int64_t>& partial, StepRecord& record);
  void experts_and_combine(int l, StepRecord& record);
  // All-gathers the keys and values this rank computed at the given layers for the step's rows.
  void gather_kv(const std::vector<int>& layers, StepRecord& record);
  void gather_outputs();

  std::int64_t token(int r) const {
    return workload_.token(r / positions_, first_position_ + r % positions_);
  }
  int seq(int r) const { return r / positions_; }
  int pos(int r) const { return first_position_ + r % positions_; }
  int cache_seq(int r) const { return exflow() ? seq(r) : seq(r) / G_; }
  float* row(std::vector<float>& v, int r) { return v.data() + sz(r) * H_; }

  template <typename T>
  void all_to_all(Exchange<T>& x, int l, int phase, StepRecord& record);

  const ModelConfig& config_;
  const Workload& workload_;
  Topology topology_;
  int G_;
  int L_;
  int K_;
  std::size_t H_;
  int rank_;
  std::vector<std::int32_t> routes_;
  RoutePlan plan_;
  std::vector<float> mix_;
  ModelWeights weights_;
  KvCache cache_;

  // The current step.
  int first_position_ = 0;
  int positions_ = 0;
  int rows_ = 0;
  std::vector<float> h_;                  // [rows, H]: residuals of the rows held here
  std::vector<std::int64_t> row_tokens_;  // [rows]: the token of each row
  DeepEPStages deepep_stages_;            // DeepEP mode: the current layer's

  std::vector<std::int64_t> sent_bytes_;     // [L, 2, G] this rank's sends
  std::vector<std::int64_t> sent_messages_;  // [L, 2, G]
  std::vector<std::int64_t> kv_bytes_;       // [L]
  std::int64_t kv_messages_ = 0;
  std::int64_t expert_rows_ = 0;
  std::vector<float> final_local_;  // [tokens, H]: rows whose last home is here
  PhaseSeconds seconds_;
  ParallelResult result_;
};

std::vector<char> Engine::served_here() const {
  const int rank = rank_;
  std::vector<char> hosted(sz(L_) * sz(config_.experts), 0);
  for (std::int64_t t = 0; t < plan_.tokens; ++t) {
    for (int l = 0; l < L_; ++l) {
      for (int c = 0; c < K_; ++c) {
        if (plan_.gpu(t, l, c) != rank) continue;
        const std::int32_t e = routes_[(sz(t) * sz(L_) + sz(l)) * sz(K_) + sz(c)];
        hosted[sz(l) * sz(config_.experts) + sz(e)] = 1;
      }
    }
  }
  return hosted;
}

template <typename T>
void Engine::all_to_all(Exchange<T>& x, int l, int phase, StepRecord& record) {
  std::vector<int> send_counts(sz(G_)), send_displs(sz(G_)), recv_counts(sz(G_)),
      recv_displs(sz(G_));
  std::vector<T> send_data;
  std::size_t total_recv = 0;
  for (int g = 0; g < G_; ++g) {
    const std::size_t n = x.send[sz(g)].size();
    send_displs[sz(g)] = mpi_count(send_data.size(), "all-to-all");
    send_counts[sz(g)] = mpi_count(n, "all-to-all");
    send_data.insert(send_data.end(), x.send[sz(g)].begin(), x.send[sz(g)].end());
    x.recv_offset[sz(g)] = total_recv;
    recv_displs[sz(g)] = mpi_count(total_recv, "all-to-all");
    recv_counts[sz(g)] = mpi_count(x.recv[sz(g)], "all-to-all");
    total_recv += x.recv[sz(g)];
    if (n > 0) {
      const std::size_t i = (sz(l) * 2 + sz(phase)) * sz(G_) + sz(g);
      const auto bytes = static_cast<std::int64_t>(n * sizeof(T));
      sent_bytes_[i] += bytes;
      ++sent_messages_[i];
      record.alltoall_bytes += bytes;
      ++record.alltoall_messages;
    }
  }
  x.recv_data.resize(total_recv);
  check_mpi(MPI_Alltoallv(send_data.data(), send_counts.data(), send_displs.data(), mpi_type<T>(),
                          x.recv_data.data(), recv_counts.data(), recv_displs.data(), mpi_type<T>(),
                          MPI_COMM_WORLD),
            "MPI_Alltoallv");
}

std::vector<int> Engine::attention_rows(int l) const {
  std::vector<int> rows;
  for (int r = 0; r < rows_; ++r) {
    const std::int32_t at = plan_.attention_gpu(token(r), l);
    if (at == rank_ || (at == kEveryGpu && plan_.serves(token(r), l, rank_))) rows.push_back(r);
  }
  return rows;
}

void Engine::attention(int l, const std::vector<int>& rows, bool every_row_kv, StepRecord& record) {
  const LayerWeights& lw = weights_.layer(l);
  // The rows whose keys and values are computed here: all of them at exflow's layer 0.
  std::vector<int> kv_rows;
  if (every_row_kv) {
    for (int r = 0; r < rows_; ++r) kv_rows.push_back(r);
  } else {
    kv_rows = rows;
  }
  const auto n = static_cast<int>(kv_rows.size());
  std::vector<float> x(sz(n) * H_), q(x.size()), key(x.size()), value(x.size());
  {
    Timer timer(seconds_.attention);
    for (int i = 0; i < n; ++i) {
      std::copy_n(row(h_, kv_rows[sz(i)]), H_, x.begin() + static_cast<std::ptrdiff_t>(sz(i) * H_));
    }
    attention_qkv(lw, x, n, q, key, value);
    for (int i = 0; i < n; ++i) {
      const int r = kv_rows[sz(i)];
      std::copy_n(key.begin() + static_cast<std::ptrdiff_t>(sz(i) * H_), H_,
                  cache_.key(l, cache_seq(r), pos(r)).begin());
      std::copy_n(value.begin() + static_cast<std::ptrdiff_t>(sz(i) * H_), H_,
                  cache_.value(l, cache_seq(r), pos(r)).begin());
    }
  }
  // Later positions of this step attend over these keys: share them before attending.
  if (exflow() && !every_row_kv && positions_ > 1) gather_kv({l}, record);

  Timer timer(seconds_.attention);
  std::vector<float> attended(H_), out;
  std::vector<float> rows_attended(rows.size() * H_);
  std::size_t j = 0;
  for (std::size_t i = 0; i < kv_rows.size() && j < rows.size(); ++i) {
    if (kv_rows[i] != rows[j]) continue;
    const int r = rows[j];
    const int count = pos(r) + 1;
    attend(std::span<const float>(q.data() + i * H_, H_), cache_.keys(l, cache_seq(r), count),
           cache_.values(l, cache_seq(r), count), count, config_.heads,
           std::span<float>(rows_attended.data() + j * H_, H_));
    ++j;
  }
  std::vector<float> residual(rows.size() * H_);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(row(h_, rows[i]), H_, residual.begin() + static_cast<std::ptrdiff_t>(i * H_));
  }
  attention_output(lw, rows_attended, static_cast<int>(rows.size()), residual);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(residual.begin() + static_cast<std::ptrdiff_t>(i * H_), H_, row(h_, rows[i]));
  }
}

void Engine::dispatch(int l, StepRecord& record) {
  if (deepep()) {
    deepep_dispatch_layer(l, record);
    return;
  }
  // Skipped by every rank when no row moves anywhere (the plan is the same on every rank).
  bool any = false;
  for (int r = 0; r < rows_ && !any; ++r) {
    const std::int64_t t = token(r);
    const std::int32_t at = plan_.attention_gpu(t, l);
    if (at == kEveryGpu) continue;
    for (int c = 0; c < K_ && !any; ++c) any = plan_.gpu(t, l, c) != at;
  }
  if (!any) return;

  Timer timer(seconds_.alltoall);
  Exchange<float> x(G_);
  std::vector<char> to(sz(G_));
  for (int r = 0; r < rows_; ++r) {
    const std::int64_t t = token(r);
    const std::int32_t at = plan_.attention_gpu(t, l);
    if (at == kEveryGpu) continue;
    std::fill(to.begin(), to.end(), 0);
    for (int c = 0; c < K_; ++c) to[sz(plan_.gpu(t, l, c))] = 1;
    if (at == rank_) {
      for (int g = 0; g < G_; ++g) {
        if (g != rank_ && to[sz(g)]) {
          x.send[sz(g)].insert(x.send[sz(g)].end(), row(h_, r), row(h_, r) + H_);
        }
      }
    } else if (to[sz(rank_)]) {
      x.recv[sz(at)] += H_;
    }
  }
  all_to_all(x, l, 0, record);
  std::vector<std::size_t> next(x.recv_offset);
  for (int r = 0; r < rows_; ++r) {
    const std::int64_t t = token(r);
    const std::int32_t at = plan_.attention_gpu(t, l);
    if (at == kEveryGpu || at == rank_ || !plan_.serves(t, l, rank_)) continue;
    std::copy_n(x.recv_data.begin() + static_cast<std::ptrdiff_t>(next[sz(at)]), H_, row(h_, r));
    next[sz(at)] += H_;
  }
}

void Engine::experts_and_combine(int l, StepRecord& record) {
  const LayerWeights& lw = weights_.layer(l);
  std::vector<int> served;  // rows with an expert here
  for (int r = 0; r < rows_; ++r) {
    if (plan_.serves(token(r), l, rank_)) served.push_back(r);
  }
  const std::size_t n = served.size();
  std::vector<std::int64_t> partial(n * H_, 0);
  {
    Timer timer(seconds_.experts);
    std::vector<float> x(n * H_), m(n * H_);
    for (std::size_t i = 0; i < n; ++i) {
      std::copy_n(row(h_, served[i]), H_, x.begin() + static_cast<std::ptrdiff_t>(i * H_));
    }
    ffn_input(lw, x, static_cast<int>(n), m);
    // Each expert once over its rows, as the reference runs them.
    std::vector<std::vector<std::pair<std::size_t, int>>> by_expert(sz(config_.experts));
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t t = token(served[i]);
      for (int c = 0; c < K_; ++c) {
        if (plan_.gpu(t, l, c) != rank_) continue;
        const std::int32_t e = routes_[(sz(t) * sz(L_) + sz(l)) * sz(K_) + sz(c)];
        by_expert[sz(e)].emplace_back(i, c);
      }
    }
    std::vector<float> in, out;
    for (int e = 0; e < config_.experts; ++e) {
      const auto& slots = by_expert[sz(e)];
      if (slots.empty()) continue;
      in.resize(slots.size() * H_);
      out.resize(in.size());
      for (std::size_t s = 0; s < slots.size(); ++s) {
        std::copy_n(m.begin() + static_cast<std::ptrdiff_t>(slots[s].first * H_), H_,
                    in.begin() + static_cast<std::ptrdiff_t>(s * H_));
      }
      expert_ffn(weights_.expert(l, e), config_.activation, in, static_cast<int>(slots.size()),
                 out);
      expert_rows_ += static_cast<std::int64_t>(slots.size());
      for (std::size_t s = 0; s < slots.size(); ++s) {
        const auto [i, c] = slots[s];
        accumulate_expert_output(std::span<const float>(out.data() + s * H_, H_), mix_[sz(c)], K_,
                                 std::span<std::int64_t>(partial.data() + i * H_, H_));
      }
    }
  }

  if (deepep()) {
    deepep_combine_layer(l, served, partial, record);
    return;
  }
  // Combine: partial sums of the rows homed elsewhere travel as int32 to their home.
  bool any = false;
  for (int r = 0; r < rows_ && !any; ++r) {
    const std::int64_t t = token(r);
    for (int c = 0; c < K_ && !any; ++c) any = plan_.gpu(t, l, c) != plan_.home_gpu(t, l);
  }
  std::vector<std::int64_t> total(H_);
  std::vector<std::int32_t> wire(H_);
  if (!any) {
    Timer timer(seconds_.combine);
    for (std::size_t i = 0; i < n; ++i) {
      apply_combined(std::span<const std::int64_t>(partial.data() + i * H_, H_),
                     std::span<float>(row(h_, served[i]), H_));
    }
    return;
  }
  Exchange<std::int32_t> x(G_);
  {
    Timer timer(seconds_.alltoall);
    std::vector<char> from(sz(G_));
    std::size_t i = 0;
    for (int r = 0; r < rows_; ++r) {
      const std::int64_t t = token(r);
      const std::int32_t home = plan_.home_gpu(t, l);
      const bool here = i < n && served[i] == r;
      if (here && home != rank_) {
        narrow_partial(std::span<const std::int64_t>(partial.data() + i * H_, H_), wire);
        x.send[sz(home)].insert(x.send[sz(home)].end(), wire.begin(), wire.end());
      } else if (home == rank_) {
        std::fill(from.begin(), from.end(), 0);
        for (int c = 0; c < K_; ++c) from[sz(plan_.gpu(t, l, c))] = 1;
        for (int g = 0; g < G_; ++g) {
          if (g != rank_ && from[sz(g)]) x.recv[sz(g)] += H_;
        }
      }
      if (here) ++i;
    }
    all_to_all(x, l, 1, record);
  }
  Timer timer(seconds_.combine);
  std::vector<std::size_t> next(x.recv_offset);
  std::vector<char> from(sz(G_));
  std::size_t i = 0;
  for (int r = 0; r < rows_; ++r) {
    const bool here = i < n && served[i] == r;
    const std::int64_t t = token(r);
    if (plan_.home_gpu(t, l) == rank_) {
      // Exflow's home serves one of the row's experts; the baseline's owner may serve none.
      if (here) {
        std::copy_n(partial.begin() + static_cast<std::ptrdiff_t>(i * H_), H_, total.begin());
      } else {
        std::fill(total.begin(), total.end(), 0);
      }
      std::fill(from.begin(), from.end(), 0);
      for (int c = 0; c < K_; ++c) from[sz(plan_.gpu(t, l, c))] = 1;
      for (int g = 0; g < G_; ++g) {
        if (g == rank_ || !from[sz(g)]) continue;
        const std::int32_t* p = x.recv_data.data() + next[sz(g)];
        for (std::size_t e = 0; e < H_; ++e) total[e] += p[e];
        next[sz(g)] += H_;
      }
      apply_combined(total, std::span<float>(row(h_, r), H_));
    }
    if (here) ++i;
  }
}

void Engine::deepep_dispatch_layer(int l, StepRecord& record) {
  Timer timer(seconds_.alltoall);
  deepep_stages_ = deepep_stages(plan_, topology_, row_tokens_, l);
  deepep_dispatch(deepep_stages_, rank_, G_, h_, H_,
                  [&](Exchange<float>& x) { all_to_all(x, l, 0, record); });
}

void Engine::deepep_combine_layer(int l, const std::vector<int>& served,
                                  const std::vector<std::int64_t>& partial, StepRecord& record) {
  RowSums sums(rows_, H_);
  {
    Timer timer(seconds_.alltoall);
    for (std::size_t i = 0; i < served.size(); ++i) {
      std::copy_n(partial.begin() + static_cast<std::ptrdiff_t>(i * H_), H_,
                  sums.at(served[i]).begin());
    }
    deepep_combine(deepep_stages_, rank_, G_, sums, H_,
                   [&](Exchange<std::int32_t>& x) { all_to_all(x, l, 1, record); });
  }
  // The owner of a row serves one of its experts or receives a partial sum of them.
  Timer timer(seconds_.combine);
  for (int r = 0; r < rows_; ++r) {
    if (plan_.home_gpu(row_tokens_[sz(r)], l) == rank_) {
      apply_combined(sums.at(r), std::span<float>(row(h_, r), H_));
    }
  }
}

void Engine::gather_kv(const std::vector<int>& layers, StepRecord& record) {
  Timer timer(seconds_.allgather);
  // Rank q contributes, layer by layer and row by row, the rows whose attention ran on q.
  std::vector<int> counts(sz(G_), 0), displs(sz(G_), 0);
  std::vector<float> mine;
  std::vector<std::size_t> entries(sz(G_), 0);
  for (int l : layers) {
    for (int r = 0; r < rows_; ++r) {
      const std::int32_t at = plan_.attention_gpu(token(r), l);
      if (at < 0) continue;
      ++entries[sz(at)];
      if (at != rank_) continue;
      const auto k = cache_.key(l, cache_seq(r), pos(r));
      const auto v = cache_.value(l, cache_seq(r), pos(r));
      mine.insert(mine.end(), k.begin(), k.end());
      mine.insert(mine.end(), v.begin(), v.end());
      kv_bytes_[sz(l)] += static_cast<std::int64_t>(2 * H_ * sizeof(float)) * (G_ - 1);
    }
  }
  std::size_t total = 0;
  for (int g = 0; g < G_; ++g) {
    counts[sz(g)] = mpi_count(entries[sz(g)] * 2 * H_, "all-gather");
    displs[sz(g)] = mpi_count(total, "all-gather");
    total += entries[sz(g)] * 2 * H_;
    if (entries[sz(g)] > 0) record.allgather_messages += G_ - 1;
  }
  if (total == 0) return;
  if (!mine.empty()) kv_messages_ += G_ - 1;
  record.allgather_bytes +=
      static_cast<std::int64_t>(total * sizeof(float)) * static_cast<std::int64_t>(G_ - 1);
  std::vector<float> all(total);
  check_mpi(MPI_Allgatherv(mine.data(), counts[sz(rank_)], MPI_FLOAT, all.data(), counts.data(),
                           displs.data(), MPI_FLOAT, MPI_COMM_WORLD),
            "MPI_Allgatherv");
  std::vector<std::size_t> next(sz(G_));
  for (int g = 0; g < G_; ++g) next[sz(g)] = sz(displs[sz(g)]);
  for (int l : layers) {
    for (int r = 0; r < rows_; ++r) {
      const std::int32_t at = plan_.attention_gpu(token(r), l);
      if (at < 0) continue;
      const float* p = all.data() + next[sz(at)];
      next[sz(at)] += 2 * H_;
      if (at == rank_) continue;
      std::copy_n(p, H_, cache_.key(l, cache_seq(r), pos(r)).begin());
      std::copy_n(p + H_, H_, cache_.value(l, cache_seq(r), pos(r)).begin());
    }
  }
}

void Engine::step(const Step& s, StepRecord& record) {
  first_position_ = s.first_position;
  positions_ = s.positions;
  rows_ = workload_.batch * s.positions;
  h_.assign(sz(rows_) * H_, 0.0f);
  row_tokens_.resize(sz(rows_));
  for (int r = 0; r < rows_; ++r) row_tokens_[sz(r)] = token(r);
  // Inputs: exflow's layer 0 runs on every GPU serving the token (and every GPU computes
  // layer 0's keys and values), the baseline's on the owner.
  for (int r = 0; r < rows_; ++r) {
    if (exflow() || plan_.attention_gpu(token(r), 0) == rank_) {
      const std::vector<float> input = make_input(config_, token(r));
      std::copy(input.begin(), input.end(), row(h_, r));
    }
  }
  for (int l = 0; l < L_; ++l) {
    attention(l, attention_rows(l), exflow() && l == 0, record);
    dispatch(l, record);
    experts_and_combine(l, record);
  }
  for (int r = 0; r < rows_; ++r) {
    if (plan_.final_gpu(token(r)) == rank_) {
      std::copy_n(row(h_, r), H_,
                  final_local_.begin() + static_cast<std::ptrdiff_t>(sz(token(r)) * H_));
    }
  }
  if (exflow() && positions_ == 1 && L_ > 1) {
    std::vector<int> layers;
    for (int l = 1; l < L_; ++l) layers.push_back(l);
    gather_kv(layers, record);
  }
}

void Engine::gather_outputs() {
  std::vector<float> mine;
  for (std::int64_t t = 0; t < plan_.tokens; ++t) {
    if (plan_.final_gpu(t) != rank_) continue;
    mine.insert(mine.end(), final_local_.begin() + static_cast<std::ptrdiff_t>(sz(t) * H_),
                final_local_.begin() + static_cast<std::ptrdiff_t>(sz(t) * H_ + H_));
  }
  std::vector<int> counts(sz(G_), 0), displs(sz(G_), 0);
  std::size_t total = 0;
  for (std::int64_t t = 0; t < plan_.tokens; ++t) counts[sz(plan_.final_gpu(t))] += 1;
  for (int g = 0; g < G_; ++g) {
    counts[sz(g)] = mpi_count(sz(counts[sz(g)]) * H_, "output gather");
    displs[sz(g)] = mpi_count(total, "output gather");
    total += sz(counts[sz(g)]);
    if (g != 0) result_.output_bytes += static_cast<std::int64_t>(counts[sz(g)]) * 4;
  }
  std::vector<float> all(rank_ == 0 ? total : 0);
  check_mpi(MPI_Gatherv(mine.data(), counts[sz(rank_)], MPI_FLOAT, all.data(), counts.data(),
                        displs.data(), MPI_FLOAT, 0, MPI_COMM_WORLD),
            "MPI_Gatherv");
  if (rank_ != 0) return;
  result_.final_hidden.assign(sz(plan_.tokens) * H_, 0.0f);
  std::vector<std::size_t> next(sz(G_));
  for (int g = 0; g < G_; ++g) next[sz(g)] = sz(displs[sz(g)]);
  for (std::int64_t t = 0; t < plan_.tokens; ++t) {
    const auto g = sz(plan_.final_gpu(t));
    std::copy_n(all.begin() + static_cast<std::ptrdiff_t>(next[g]), H_,
                result_.final_hidden.begin() + static_cast<std::ptrdiff_t>(sz(t) * H_));
    next[g] += H_;
  }
  result_.checksum = checksum(result_.final_hidden);
  result_.final_rms = root_mean_square(result_.final_hidden);
}

ParallelResult Engine::run(double setup_seconds) {
  std::vector<StepRecord> records;
  for (const Step& s : schedule(workload_)) {
    StepRecord record;
    record.first_position = s.first_position;
    record.positions = s.positions;
    check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    const double start = MPI_Wtime();
    step(s, record);
    record.seconds = MPI_Wtime() - start;
    records.push_back(record);
  }
  gather_outputs();

  // Steps: the slowest rank's time, every rank's bytes and messages.
  const std::size_t S = records.size();
  std::vector<double> secs(S), max_secs(S);
  // All-to-all counts are this rank's sends; all-gather counts are global on every rank.
  std::vector<std::int64_t> counts(2 * S), sums(2 * S);
  for (std::size_t s = 0; s < S; ++s) {
    secs[s] = records[s].seconds;
    counts[2 * s] = records[s].alltoall_bytes;
    counts[2 * s + 1] = records[s].alltoall_messages;
  }
  check_mpi(MPI_Allreduce(secs.data(), max_secs.data(), static_cast<int>(S), MPI_DOUBLE, MPI_MAX,
                          MPI_COMM_WORLD),
            "MPI_Allreduce");
  check_mpi(MPI_Allreduce(counts.data(), sums.data(), static_cast<int>(2 * S), MPI_INT64_T, MPI_SUM,
                          MPI_COMM_WORLD),
            "MPI_Allreduce");
  for (std::size_t s = 0; s < S; ++s) {
    records[s].seconds = max_secs[s];
    records[s].alltoall_bytes = sums[2 * s];
    records[s].alltoall_messages = sums[2 * s + 1];
    result_.seconds += max_secs[s];
  }
  result_.steps = records;

  // Per-rank counts, gathered on every rank.
  const std::size_t A = sent_bytes_.size();  // [L, 2, G] of one source
  std::vector<std::int64_t> mine(2 * A + sz(L_) + 3);
  std::copy(sent_bytes_.begin(), sent_bytes_.end(), mine.begin());
  std::copy(sent_messages_.begin(), sent_messages_.end(),
            mine.begin() + static_cast<std::ptrdiff_t>(A));
  std::copy(kv_bytes_.begin(), kv_bytes_.end(), mine.begin() + static_cast<std::ptrdiff_t>(2 * A));
  mine[2 * A + sz(L_)] = kv_messages_;
  mine[2 * A + sz(L_) + 1] = weights_.hosted_experts();
  mine[2 * A + sz(L_) + 2] = expert_rows_;
  std::vector<std::int64_t> all(mine.size() * sz(G_));
  check_mpi(MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_INT64_T, all.data(),
                          static_cast<int>(mine.size()), MPI_INT64_T, MPI_COMM_WORLD),
            "MPI_Allgather");
  const std::size_t G = sz(G_);
  result_.alltoall_bytes.assign(sz(L_) * 2 * G * G, 0);
  result_.alltoall_messages.assign(result_.alltoall_bytes.size(), 0);
  result_.allgather_bytes.assign(sz(L_) * G, 0);
  result_.allgather_messages.assign(G, 0);
  result_.experts_per_rank.assign(G, 0);
  for (std::size_t src = 0; src < G; ++src) {
    const std::int64_t* p = all.data() + src * mine.size();
    for (std::size_t lp = 0; lp < sz(L_) * 2; ++lp) {
      for (std::size_t dst = 0; dst < G; ++dst) {
        result_.alltoall_bytes[(lp * G + src) * G + dst] = p[lp * G + dst];
        result_.alltoall_messages[(lp * G + src) * G + dst] = p[A + lp * G + dst];
      }
    }
    for (std::size_t l = 0; l < sz(L_); ++l) result_.allgather_bytes[l * G + src] = p[2 * A + l];
    result_.allgather_messages[src] = p[2 * A + sz(L_)];
    result_.experts_per_rank[src] = p[2 * A + sz(L_) + 1];
    result_.expert_rows += p[2 * A + sz(L_) + 2];
  }

  std::vector<double> phases = {seconds_.attention, seconds_.experts, seconds_.combine,
                                seconds_.alltoall, seconds_.allgather};
  std::vector<double> every(phases.size() * G);
  check_mpi(MPI_Allgather(phases.data(), static_cast<int>(phases.size()), MPI_DOUBLE, every.data(),
                          static_cast<int>(phases.size()), MPI_DOUBLE, MPI_COMM_WORLD),
            "MPI_Allgather");
  for (std::size_t g = 0; g < G; ++g) {
    const double* p = every.data() + g * phases.size();
    result_.seconds_per_rank.push_back(PhaseSeconds{p[0], p[1], p[2], p[3], p[4]});
  }
  double slowest_setup = 0;
  check_mpi(MPI_Allreduce(&setup_seconds, &slowest_setup, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
            "MPI_Allreduce");
  result_.setup_seconds = slowest_setup;
  return result_;
}

}  // namespace

std::int64_t ParallelResult::total_alltoall_bytes() const {
  std::int64_t total = 0;
  for (std::int64_t b : alltoall_bytes) total += b;
  return total;
}

std::int64_t ParallelResult::total_allgather_bytes() const {
  std::int64_t total = 0;
  for (std::int64_t b : allgather_bytes) total += b;
  return total;
}

ParallelResult run_expert_parallel(const Trace& trace, const ModelConfig& config,
                                   const Workload& workload, const Placement& placement,
                                   const Topology& topology, ParallelMode mode) {
  int size = 0;
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
  if (size != topology.gpus()) {
    throw UsageError("the topology has " + std::to_string(topology.gpus()) + " GPUs, MPI " +
                     std::to_string(size) + " ranks");
  }
  validate(config);
  validate(workload);
  check_fits(trace, config, workload);
  const double start = MPI_Wtime();
  Engine engine(trace, config, workload, placement, topology, mode);
  return engine.run(MPI_Wtime() - start);
}

}  // namespace exflow::runtime
