// The batch split across threads: each thread runs the whole time loop on its own rows of the batch.
//
// The rows of a recurrence never mix (row r of every step belongs to sequence r), so a chunk of rows
// needs no barrier at any step: one parallel region per layer-direction instead of one or two per
// step, each thread doing its rows' products (single-threaded, inside the region) and pointwise steps.
// On a machine with few cores shared with other work, a per-step barrier waits for the slowest
// thread at every step; measured here, splitting the work of each step across 2 threads made the
// loop slower than one thread.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "packed_layout.h"

namespace rnnkit::cpu {

// Rows per chunk below which splitting does not pay.
constexpr int64_t kMinChunkRows = 4;

// The chunks' boundaries: chunk k holds the batch rows cuts[k] .. cuts[k+1]-1.  One chunk (no split)
// with one thread, a batch under 2 * kMinChunkRows, or when already inside a parallel region.
// Packed rows are sorted by length, longest first, so the cuts balance row-steps (the work), not rows.
inline std::vector<int64_t> row_chunks(const PackedLayout& layout) {
  const int64_t B = layout.batch();
  const int64_t parts = at::in_parallel_region() ? 1 : std::min<int64_t>(at::get_num_threads(), B / kMinChunkRows);
  if (parts < 2) return {0, B};
  std::vector<int64_t> work(B, 0);  // work[r]: the steps rows 0..r run, summed
  for (int64_t r = 0; r < B; ++r) {
    int64_t steps = 0;  // the steps sequence r runs: those whose batch holds row r
    while (steps < layout.steps() && layout.batch_size(steps) > r) ++steps;
    work[r] = (r > 0 ? work[r - 1] : 0) + steps;
  }
  std::vector<int64_t> cuts{0};
  for (int64_t k = 1; k < parts; ++k) {
    const int64_t share = work[B - 1] * k / parts;
    const int64_t cut = std::upper_bound(work.begin(), work.end(), share) - work.begin();
    if (cut > cuts.back() && cut < B) cuts.push_back(cut);
  }
  cuts.push_back(B);
  return cuts;
}

// How many of step t's rows fall in the chunk [begin, end): the chunk's rows that run at step t
// are begin .. begin + count - 1 (the running rows are always the first of the batch).
inline int64_t rows_in_chunk(const PackedLayout& layout, int64_t t, int64_t begin, int64_t end) {
  return std::clamp<int64_t>(layout.batch_size(t) - begin, 0, end - begin);
}

// body(begin, end) for each chunk, the chunks on torch's threads (directly when there is one chunk,
// so that the products inside may use all threads).  Each worker runs with the caller's thread-local
// state (dispatch keys excluded, grad mode): the kernels run below autograd, and so must the ATen
// products their chunks call on other threads.
template <typename F>
void for_each_chunk(const std::vector<int64_t>& cuts, const F& body) {
  const int64_t chunks = static_cast<int64_t>(cuts.size()) - 1;
  if (chunks == 1) {
    body(cuts[0], cuts[1]);
    return;
  }
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    at::ThreadLocalStateGuard guard(caller_state);
    for (int64_t k = first; k < last; ++k) body(cuts[k], cuts[k + 1]);
  });
}

// A tensor's rows [begin, begin + count) as a view, made again only when the rows change: the rows
// of a padded step are the same at every step, and a view costs about as much as a small step's math.
class RowsView {
 public:
  explicit RowsView(const at::Tensor& base) : base_(base) {}
  at::Tensor& rows(int64_t begin, int64_t count) {
    if (begin != begin_ || count != count_) {
      view_ = base_.narrow(0, begin, count);
      begin_ = begin;
      count_ = count;
    }
    return view_;
  }

 private:
  const at::Tensor& base_;
  at::Tensor view_;
  int64_t begin_ = -1, count_ = -1;
};

}  // namespace rnnkit::cpu
