// The packed layout of one layer-direction's input, as rnnkit's Kernel interface passes it.
//
// The rows of all steps lie one after the other: step t owns rows
// offsets[t] .. offsets[t] + batch_sizes[t] - 1 of the input (N, I), the output (N, P) and every
// per-row buffer, and row r of a step belongs to sequence r.  batch_sizes never grows (sequences
// sorted longest first), so the sequences running at a step are always the first rows of the
// state: going forward the batch shrinks as sequences end, going in reverse each sequence starts at
// its own last step and rows join as the batch grows.  A padded (T, B, I) input is this layout
// with every batch size equal to B.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

namespace rnnkit::cpu {

class PackedLayout {
 public:
  // Reads and checks `batch_sizes` (1-D int64 on the CPU) against the `rows` of the input:
  // at least one step, none negative, none larger than the step before, summing to `rows`.
  // The loops index rows by these sizes without further checks, so nothing else may reach them.
  PackedLayout(const at::Tensor& batch_sizes, int64_t rows, bool reverse, const char* op)
      : reverse_(reverse) {
    TORCH_CHECK(batch_sizes.dim() == 1 && batch_sizes.scalar_type() == at::kLong && batch_sizes.is_cpu(), op,
                ": batch_sizes should be a 1-D int64 tensor on the CPU, got a ", batch_sizes.dim(), "-D ",
                batch_sizes.scalar_type(), " tensor on ", batch_sizes.device());
    const at::Tensor sizes = batch_sizes.contiguous();
    const int64_t* data = sizes.const_data_ptr<int64_t>();
    const int64_t steps = sizes.numel();
    TORCH_CHECK(steps > 0, op, ": batch_sizes should hold at least one step");
    batch_sizes_.assign(data, data + steps);
    offsets_.resize(steps + 1, 0);
    for (int64_t t = 0; t < steps; ++t) {
      TORCH_CHECK(batch_sizes_[t] >= 0 && (t == 0 || batch_sizes_[t] <= batch_sizes_[t - 1]), op,
                  ": batch_sizes should be non-negative and non-increasing, got ", sizes);
      offsets_[t + 1] = offsets_[t] + batch_sizes_[t];
    }
    TORCH_CHECK(offsets_[steps] == rows, op, ": batch_sizes sum to ", offsets_[steps], " rows but the input has ",
                rows);
  }

  int64_t steps() const { return static_cast<int64_t>(batch_sizes_.size()); }
  // Rows of the state: the batch of the longest step, the first.
  int64_t batch() const { return batch_sizes_[0]; }
  int64_t batch_size(int64_t t) const { return batch_sizes_[t]; }
  int64_t offset(int64_t t) const { return offsets_[t]; }
  bool reverse() const { return reverse_; }

  // The time of the s-th step the forward recurrence runs (s = 0 first): t = s, or T-1-s in reverse.
  int64_t forward_time(int64_t s) const { return reverse_ ? steps() - 1 - s : s; }
  // The time of the s-th step the backward runs: the forward order reversed.
  int64_t backward_time(int64_t s) const { return forward_time(steps() - 1 - s); }

  // The step whose state step t read, for the rows that had one: t - 1 forward, t + 1 in reverse.
  int64_t previous_time(int64_t t) const { return reverse_ ? t + 1 : t - 1; }
  // How many of step t's rows read the state a previous step wrote; the rest (rows from this count
  // up to the step's batch size) read the initial state: none at the first step; in reverse, the
  // rows of sequences that begin at step t.
  int64_t rows_with_previous_step(int64_t t) const {
    const int64_t tp = previous_time(t);
    if (tp < 0 || tp >= steps()) return 0;
    return std::min(batch_sizes_[tp], batch_sizes_[t]);
  }

  // Row r of the state step t read, as a pointer: row `offset(tp) + r` of `history` (N rows, what
  // every step wrote) when sequence r ran at the previous step tp, else row r of `initial`.
  template <typename scalar_t>
  const scalar_t* previous_row(const scalar_t* history, const scalar_t* initial, int64_t width, int64_t t,
                               int64_t r) const {
    if (r < rows_with_previous_step(t)) return history + (offset(previous_time(t)) + r) * width;
    return initial + r * width;
  }

 private:
  std::vector<int64_t> batch_sizes_;
  std::vector<int64_t> offsets_;
  bool reverse_;
};

}  // namespace rnnkit::cpu
