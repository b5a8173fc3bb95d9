// The one time loop of every recurrence, forward and backward, over the packed layout, in either
// direction; templated on a cell's pointwise step (cell_step.h says what a cell provides).
//
// Forward (one layer-direction):
//   X = x W_ih^T + b          one product for all steps (no time dependence: hoisted out of the loop)
//   for each step t, in the direction's order, over its b_t rows:
//     A_t = h[:b_t] W_hh^T (+ b_hh)                           the recurrent product, through ATen
//     cell.forward(row) for each row                          the pointwise step
//     h[:b_t] = m[:b_t] W_hr^T, output rows = h[:b_t]         only with a projection (LSTM proj_size)
// With a batch of 8 rows or more and 2+ threads, each thread runs the whole loop on its own chunk of
// rows (row_split.h: no barrier at any step); otherwise one loop, the products on all threads.
// The state buffers h (B, P) and c (B, H) start as h0 and c0 and are updated in place for the
// running rows only, so each sequence's last state stays in its row: the final state is the buffer.
//
// Backward, the steps in the opposite order, with dh (B, P) and dc (B, H) starting as dL/dh_n, dL/dc_n:
//   dh[:b_t] += dL/doutput rows                                the output's own gradient
//   dm[:b_t] = dh[:b_t] W_hr                                   only with a projection
//   cell.backward(row) for each row: dX_t, dA_t (and dc, and dh's direct part for GRU)
//   dh[:b_t] = dA_t W_hh (+ the direct part)                    dL/dh_{t-1}
// in blocks of steps (kBackwardBlockBytes of gate gradients each), and after each block the products
// over its steps at once: dx = dX W_ih, dW_ih += dX^T x, db_ih += sum dX, dW_hh += dA^T H_prev
// (H_prev: the state each row read), db_hh += sum dA, dW_hr += dH^T M.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <optional>
#include <vector>

#include "cell_step.h"
#include "few_rows_product.h"
#include "layer_args.h"
#include "packed_layout.h"
#include "recurrent_product.h"
#include "row_split.h"
#include "vector_math.h"

namespace rnnkit::cpu {

// Elements of a step's pointwise work below which its rows stay on one thread: forking torch's
// OpenMP workers costs a few microseconds, which a small step does not repay.  (Inside a chunk of
// the batch split, row_split.h, the rows run on the chunk's thread whatever their number.)
constexpr int64_t kMinParallelElements = 16384;

// body(begin, end) over rows [0, rows), split across torch's threads when the step is large enough.
// Rows are independent, so the split changes no result.
// A step too small to split calls body directly: at::parallel_for's own set-up (its thread-local guards)
// cost a one-row step about as much as its math.
template <typename F>
inline void for_rows(int64_t rows, int64_t elements_per_row, const F& body) {
  const int64_t grain = std::max<int64_t>(1, kMinParallelElements / std::max<int64_t>(elements_per_row, 1));
  if (rows <= grain) {
    if (rows > 0) body(0, rows);
    return;
  }
  at::parallel_for(0, rows, grain, body);
}

// The batch split of a call's loop (row_split.h), with the weight packed once for all steps; a call
// too short to pack runs one chunk, its products on all threads: split, every thread's at::mm would
// copy the whole weight again (MKL packs it per call), which at one step of 32 rows (H = 256) made
// the GRU's products take 1.6x as long.
inline std::vector<int64_t> loop_chunks(const PackedLayout& layout, bool weight_packed) {
  return weight_packed ? row_chunks(layout) : std::vector<int64_t>{0, layout.batch()};
}

struct ForwardResult {
  at::Tensor output;  // (N, P): h_t of every row
  at::Tensor h_n;     // (B, P): each sequence's last h
  at::Tensor c_n;     // (B, H): each sequence's last c (kHasCellState), else undefined
  at::Tensor saved;   // (N, kSaved*H): what the cell saved for the backward
  at::Tensor cells;   // (N, H): c_t of every row (kHasCellState), else undefined
};

struct BackwardResult {
  at::Tensor grad_input;  // (N, I), or empty (0,) when not asked for
  at::Tensor grad_h0;     // (B, P)
  at::Tensor grad_c0;     // (B, H) (kHasCellState), else undefined
  at::Tensor grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh;  // or empty (0,) when not asked for
  at::Tensor grad_w_hr;   // (P, H) with a projection, else empty (0,)
};

// The bias added to the hoisted input projection: b_ih, plus b_hh where the cell folds it in.
template <typename Cell>
at::Tensor hoisted_bias(const LayerArgs& a) {
  if (!a.b_ih.defined()) return at::Tensor();
  return Cell::kRecurrentBiasInProduct ? a.b_ih : a.b_ih + a.b_hh;
}

// The W_hh the recurrent product packs: a bfloat16 layer's own where the CPU has bfloat16 dot products
// (recurrent_product.h), else the loop's (a half-precision layer's widened to float32 once, by
// loop_dtype_args).
inline const at::Tensor& packable_w_hh(const LayerArgs& a) {
  return a.w_hh_narrow.defined() && a.w_hh_narrow.scalar_type() == at::kBFloat16 && has_bf16_dot_product()
             ? a.w_hh_narrow
             : a.w_hh;
}

// Whether a half-precision layer's large products (the hoisted W_ih x; the backward's per-block dx, dW_ih,
// dW_hh) run in its dtype: bfloat16 where the CPU has bfloat16 dot products (float32 accumulation, about
// 2.3x float32's speed there).  Elsewhere they run in float32 on widened operands: ATen's bfloat16 matrix
// products without those instructions took about 60x float32's time (AVX2 EPYC, Zen 3: an LSTM's
// forward+backward at (T, B, I, H) = (100, 32, 256, 256) in bfloat16, 1.9 s, in float32 30 ms).
inline bool narrow_products(const LayerArgs& a) {
  return a.input.scalar_type() == at::kBFloat16 && has_bf16_dot_product();
}

template <typename Cell, typename scalar_t>
ForwardResult forward_loop(const LayerArgs& a) {
  constexpr int64_t G = Cell::kGates;
  const PackedLayout& layout = a.layout;
  const int64_t H = a.hidden_size, P = a.state_size, B = layout.batch(), N = a.input.size(0);
  const bool project = a.w_hr.defined();
  TORCH_CHECK(!project || Cell::kProjectable, "this cell has no projection");
  const auto options = a.h0.options();  // the loop's dtype (the input's, or float32 for a half-precision one)
  const bool half_input = a.input.scalar_type() != a.h0.scalar_type();

  const at::Tensor bias = hoisted_bias<Cell>(a);
  at::Tensor gx;
  if (half_input) {  // the hoisted product in the input's dtype (float32 accumulation inside), or in float32
    gx = narrow_products(a) ? at::mm(a.input, a.w_ih.t()).to(options.dtype())
                            : at::mm(a.input.to(options.dtype()), a.w_ih.to(options.dtype()).t());
    if (bias.defined()) gx.add_(bias);
  } else if (few_rows_product(N, G * H, a.input.size(1))) {  // a one-step call of a few rows (few_rows_product.h)
    gx = at::empty({N, G * H}, options);
    few_rows_times_transpose(a.input.const_data_ptr<scalar_t>(), a.input.size(1), N, a.w_ih.const_data_ptr<scalar_t>(),
                             G * H, a.input.size(1), bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                             gx.mutable_data_ptr<scalar_t>(), G * H);
  } else {
    gx = bias.defined() ? at::addmm(bias, a.input, a.w_ih.t()) : at::mm(a.input, a.w_ih.t());
  }
  const at::Tensor recurrent_bias = Cell::kRecurrentBiasInProduct ? a.b_hh : at::Tensor();

  ForwardResult result;
  result.h_n = a.h0.clone(at::MemoryFormat::Contiguous);
  result.output = at::empty({N, P}, options);
  if constexpr (Cell::kHasCellState) {
    result.c_n = a.c0.clone(at::MemoryFormat::Contiguous);
    result.cells = at::empty({N, H}, options);
  }
  result.saved = Cell::kSavesOverInputProjection ? gx : at::empty({N, Cell::kSaved * H}, options);
  const at::Tensor product = at::empty({B, G * H}, options);  // A_t: row r holds batch row r's
  const at::Tensor m = project ? at::empty({B, H}, options) : at::Tensor();  // what W_hr projects
  const at::Tensor w_hh_t = a.w_hh.t(), w_hr_t = project ? a.w_hr.t() : at::Tensor();
  // W_hh^T packed once for all steps (recurrent_product.h), unless the call is too small to repay it
  std::optional<PackedMatrix<scalar_t>> w_hh_packed;
  if (worth_packing(layout.steps())) w_hh_packed.emplace(PackedMatrix<scalar_t>::transpose_of(packable_w_hh(a)));
  const scalar_t* recurrent_bias_data = recurrent_bias.defined() ? recurrent_bias.const_data_ptr<scalar_t>() : nullptr;

  const scalar_t* gx_data = gx.const_data_ptr<scalar_t>();
  scalar_t* product_data = product.mutable_data_ptr<scalar_t>();
  scalar_t* h_data = result.h_n.mutable_data_ptr<scalar_t>();
  scalar_t* m_data = project ? m.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* output_data = result.output.mutable_data_ptr<scalar_t>();
  scalar_t* c_data = Cell::kHasCellState ? result.c_n.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* cells_data = Cell::kHasCellState ? result.cells.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* saved_data = result.saved.mutable_data_ptr<scalar_t>();

  // The whole time loop over the batch rows [lo, hi): of step t, rows lo .. lo + n - 1.
  for_each_chunk(loop_chunks(layout, w_hh_packed.has_value()), [&](int64_t lo, int64_t hi) {
    RowsView product_rows(product), h_rows(result.h_n), m_rows(m);
    for (int64_t s = 0; s < layout.steps(); ++s) {
      const int64_t t = layout.forward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
      if (n == 0) continue;
      if (w_hh_packed) {  // product rows lo.. = h rows lo.. W_hh^T (+ b_hh)
        w_hh_packed->multiply(h_data + lo * P, P, n, product_data + lo * G * H, G * H, recurrent_bias_data, false);
      } else if (few_rows_product(n, G * H, P)) {
        few_rows_times_transpose(h_data + lo * P, P, n, a.w_hh.const_data_ptr<scalar_t>(), G * H, P,
                                 recurrent_bias_data, product_data + lo * G * H, G * H);
      } else if (recurrent_bias.defined()) {
        at::addmm_out(product_rows.rows(lo, n), recurrent_bias, h_rows.rows(lo, n), w_hh_t);
      } else {
        at::mm_out(product_rows.rows(lo, n), h_rows.rows(lo, n), w_hh_t);
      }
      for_rows(n, G * H, [&](int64_t begin, int64_t end) {
        for (int64_t r = lo + begin; r < lo + end; ++r) {
          const int64_t row = o0 + r;
          ForwardRow<scalar_t> step{
              gx_data + row * G * H,
              product_data + r * G * H,
              h_data + r * P,
              project ? m_data + r * H : h_data + r * P,
              project ? nullptr : output_data + row * P,
              Cell::kHasCellState ? c_data + r * H : nullptr,
              Cell::kHasCellState ? cells_data + row * H : nullptr,
              saved_data + row * Cell::kSaved * H,
          };
          Cell::template forward<scalar_t>(step, H);
        }
      });
      if (project) {
        at::Tensor& h_out = h_rows.rows(lo, n);
        at::mm_out(h_out, m_rows.rows(lo, n), w_hr_t);
        std::memcpy(output_data + (o0 + lo) * P, h_data + lo * P, sizeof(scalar_t) * n * P);
      }
    }
  });
  return result;
}

// dst[r] += src row (o0 + r), r in [begin, end): the output's own gradient joins the carried one.
// `src` rows are `src_row_stride` apart (0 for a gradient broadcast along the rows) and contiguous.
template <typename scalar_t>
void add_rows(scalar_t* dst, const scalar_t* src, int64_t src_row_stride, int64_t width, int64_t o0,
              int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    scalar_t* d = dst + r * width;
    const scalar_t* from = src + (o0 + r) * src_row_stride;
    for_each_vector<scalar_t>(width, [&](int64_t j, int64_t n) { store(load(d + j, n) + load(from + j, n), d + j, n); });
  }
}

// The backward runs the steps in blocks: the gate gradients (dX, and dA where it differs) are kept
// for one block of steps at a time, and each block's products (dx, the weights' gradients) are
// taken before the next block starts, so the backward's memory does not grow with the sequence
// beyond its inputs and results.  A block holds whole steps, at least one, and about this many
// bytes of gate gradients, and at least kMinBackwardBlockRows rows: enough that the block's products run
// at full speed (at (T, B, H) = (50, 64, 512) a block of 1 MiB held one step, 64 rows, and the LSTM's
// forward+backward took 1.23x the time it takes with blocks of 512 rows or more).
constexpr int64_t kBackwardBlockBytes = int64_t{1} << 20;
constexpr int64_t kMinBackwardBlockRows = 512;

// A block of the backward's steps: s in [first_step, end_step) in backward order, whose rows are
// the packed rows [first_row, end_row) (consecutive steps' rows are adjacent in either direction).
struct StepBlock {
  int64_t first_step, end_step, first_row, end_row;
  int64_t rows() const { return end_row - first_row; }
};

inline std::vector<StepBlock> backward_blocks(const PackedLayout& layout, int64_t bytes_per_row) {
  const int64_t max_rows =
      std::max<int64_t>(kMinBackwardBlockRows, kBackwardBlockBytes / std::max<int64_t>(bytes_per_row, 1));
  std::vector<StepBlock> blocks;
  int64_t s = 0;
  while (s < layout.steps()) {
    const int64_t first = s;
    int64_t rows = layout.batch_size(layout.backward_time(s++));
    while (s < layout.steps() && rows + layout.batch_size(layout.backward_time(s)) <= max_rows) {
      rows += layout.batch_size(layout.backward_time(s++));
    }
    const int64_t t_a = layout.backward_time(first), t_b = layout.backward_time(s - 1);
    const int64_t first_row = layout.offset(std::min(t_a, t_b));
    blocks.push_back({first, s, first_row, first_row + rows});
  }
  return blocks;
}

// (rows, P) into `result`: for the steps of `block`, the state each row read (a previous step's row
// of `history`, else its row of `initial`).  The rows of a step that read a previous step are that
// step's first rows, contiguous in `history`.
template <typename scalar_t>
void previous_states(const PackedLayout& layout, const StepBlock& block, const at::Tensor& history,
                     const at::Tensor& initial, at::Tensor& result) {
  const int64_t width = history.size(1);
  const scalar_t* from_history = history.const_data_ptr<scalar_t>();
  const scalar_t* from_initial = initial.const_data_ptr<scalar_t>();
  scalar_t* to = result.mutable_data_ptr<scalar_t>();
  for (int64_t s = block.first_step; s < block.end_step; ++s) {
    const int64_t t = layout.backward_time(s);
    const int64_t rows = layout.batch_size(t), continued = layout.rows_with_previous_step(t);
    scalar_t* dst = to + (layout.offset(t) - block.first_row) * width;
    if (continued > 0) {
      std::memcpy(dst, from_history + layout.offset(layout.previous_time(t)) * width,
                  sizeof(scalar_t) * continued * width);
    }
    if (rows > continued) {
      std::memcpy(dst + continued * width, from_initial + continued * width,
                  sizeof(scalar_t) * (rows - continued) * width);
    }
  }
}

template <typename Cell, typename scalar_t>
BackwardResult backward_loop(const LayerArgs& a, const at::Tensor& grad_output_in, const at::Tensor& grad_h_n,
                             const at::Tensor& grad_c_n, const at::Tensor& output, const at::Tensor& saved,
                             const at::Tensor& cells, bool need_input_grad, bool need_state_grads,
                             bool need_weight_grads) {
  constexpr int64_t G = Cell::kGates;
  const PackedLayout& layout = a.layout;
  const int64_t H = a.hidden_size, P = a.state_size, B = layout.batch(), N = a.input.size(0);
  const int64_t I = a.input.size(1);
  const bool project = a.w_hr.defined();
  const auto options = a.h0.options();  // the loop's dtype (the input's, or float32 for a half-precision one)
  const bool half_input = a.input.scalar_type() != a.h0.scalar_type();
  // A gradient not asked for: a fresh empty tensor each (an operator's results must not alias).
  const auto none = [&] { return at::empty({0}, options); };

  // Rows of the output's gradient are read through a row stride; within a row it must be contiguous.
  // A gradient broadcast along the rows (the gradient of output.sum() arrives expanded, every stride
  // 0) is read as its one row with row stride 0, not copied out to N rows.
  const bool same_rows = N > 1 && grad_output_in.stride(0) == 0;
  const at::Tensor grad_output =
      same_rows ? grad_output_in.narrow(0, 0, 1).contiguous()
                : (grad_output_in.stride(1) == 1 || P <= 1) ? grad_output_in : grad_output_in.contiguous();
  const int64_t grad_output_stride = same_rows ? 0 : grad_output.size(0) > 1 ? grad_output.stride(0) : P;

  BackwardResult result;
  result.grad_h0 = grad_h_n.clone(at::MemoryFormat::Contiguous);  // dh, carried backwards in time
  if constexpr (Cell::kHasCellState) result.grad_c0 = grad_c_n.clone(at::MemoryFormat::Contiguous);
  result.grad_input = need_input_grad ? at::empty({N, I}, a.input.options()) : none();
  result.grad_w_hr = none();
  if (!need_weight_grads) {  // else: the first block's, then the later blocks' added
    result.grad_w_ih = none();
    result.grad_w_hh = none();
    result.grad_b_ih = none();
    result.grad_b_hh = none();
  }

  // One block's buffers, reused by every block (a block's rows: 0 .. block.rows() - 1).
  const bool keep_grad_h = project && need_weight_grads;
  const int64_t bytes_per_row =
      sizeof(scalar_t) * (G * H * (Cell::kSameProductGrads ? 1 : 2) + (need_weight_grads ? P : 0) +
                          (keep_grad_h ? P : 0));
  const std::vector<StepBlock> blocks = backward_blocks(layout, bytes_per_row);
  int64_t block_rows = 0;
  for (const StepBlock& block : blocks) block_rows = std::max(block_rows, block.rows());
  at::Tensor grad_x = at::empty({block_rows, G * H}, options);                                   // dX
  at::Tensor grad_a = Cell::kSameProductGrads ? grad_x : at::empty({block_rows, G * H}, options);  // dA
  at::Tensor states = need_weight_grads ? at::empty({block_rows, P}, options) : at::Tensor();   // H_prev
  at::Tensor grad_h_history = keep_grad_h ? at::empty({block_rows, P}, options) : at::Tensor();
  at::Tensor grad_m = project ? at::empty({B, H}, options) : at::Tensor();

  const scalar_t* saved_data = saved.const_data_ptr<scalar_t>();
  const scalar_t* output_data = output.const_data_ptr<scalar_t>();
  const scalar_t* h0_data = a.h0.const_data_ptr<scalar_t>();
  const scalar_t* cells_data = Cell::kHasCellState ? cells.const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* c0_data = Cell::kHasCellState ? a.c0.const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* grad_output_data = grad_output.const_data_ptr<scalar_t>();
  scalar_t* grad_h_data = result.grad_h0.mutable_data_ptr<scalar_t>();
  scalar_t* grad_c_data = Cell::kHasCellState ? result.grad_c0.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* grad_m_data = project ? grad_m.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* grad_x_data = grad_x.mutable_data_ptr<scalar_t>();
  scalar_t* grad_a_data = grad_a.mutable_data_ptr<scalar_t>();
  scalar_t* grad_h_history_data = keep_grad_h ? grad_h_history.mutable_data_ptr<scalar_t>() : nullptr;
  // W_hh packed once for all steps' dL/dh_{t-1} = dA_t W_hh (recurrent_product.h)
  std::optional<PackedMatrix<scalar_t>> w_hh_packed;
  if (worth_packing(layout.steps())) w_hh_packed.emplace(PackedMatrix<scalar_t>::of(packable_w_hh(a)));
  const std::vector<int64_t> chunks = loop_chunks(layout, w_hh_packed.has_value());

  // total = a b at the first block (no zeros written and read back), total += a b after it; the same
  // for the bias gradients' sums over the rows.
  // With a half-precision input the block's large products run in its dtype where narrow_products (its
  // products accumulate in float32), else in float32 on widened operands; the totals in float32.
  bool first_block = true;
  const at::ScalarType product_type = narrow_products(a) ? a.input.scalar_type() : options.dtype().toScalarType();
  const auto in_product_dtype = [&](const at::Tensor& t) {
    return t.scalar_type() == product_type ? t : t.to(product_type);
  };
  const at::Tensor w_ih_for_products = in_product_dtype(a.w_ih);  // (widened once, not per block)
  const auto add_product = [&](at::Tensor& total, const at::Tensor& lhs, const at::Tensor& rhs) {
    if (half_input) {
      at::Tensor product = at::mm(in_product_dtype(lhs), in_product_dtype(rhs));
      if (first_block) {
        total = product.to(options.dtype());
      } else {
        total.add_(product);
      }
    } else if (first_block) {
      total = at::mm(lhs, rhs);  // (at::mm_out into a buffer measured slower here than a fresh result)
    } else {
      total.addmm_(lhs, rhs);
    }
  };
  const auto add_row_sum = [&](at::Tensor& total, const at::Tensor& rows_of) {
    if (first_block) {
      total = rows_of.sum(0);
    } else {
      total.add_(rows_of.sum(0));
    }
  };
  for (const StepBlock& block : blocks) {
    const int64_t first_row = block.first_row;
    // The time loop over the block's steps and the batch rows [lo, hi): of step t, rows lo .. lo + n - 1.
    for_each_chunk(chunks, [&](int64_t lo, int64_t hi) {
      RowsView grad_h_rows(result.grad_h0), grad_m_rows(grad_m);
      for (int64_t s = block.first_step; s < block.end_step; ++s) {
        const int64_t t = layout.backward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
        const int64_t b0 = o0 - first_row;  // the step's first row in the block's buffers
        if (n == 0) continue;
        for_rows(n, P, [&](int64_t begin, int64_t end) {
          add_rows(grad_h_data, grad_output_data, grad_output_stride, P, o0, lo + begin, lo + end);
        });
        if (project) {
          if (keep_grad_h) {
            std::memcpy(grad_h_history_data + (b0 + lo) * P, grad_h_data + lo * P, sizeof(scalar_t) * n * P);
          }
          at::mm_out(grad_m_rows.rows(lo, n), grad_h_rows.rows(lo, n), a.w_hr);
        }
        for_rows(n, G * H, [&](int64_t begin, int64_t end) {
          for (int64_t r = lo + begin; r < lo + end; ++r) {
            const int64_t row = o0 + r;
            BackwardRow<scalar_t> step{
                saved_data + row * Cell::kSaved * H,
                output_data + row * P,
                layout.previous_row(output_data, h0_data, P, t, r),
                Cell::kHasCellState ? cells_data + row * H : nullptr,
                Cell::kHasCellState ? layout.previous_row(cells_data, c0_data, H, t, r) : nullptr,
                project ? grad_m_data + r * H : grad_h_data + r * P,
                Cell::kHasCellState ? grad_c_data + r * H : nullptr,
                grad_x_data + (b0 + r) * G * H,
                Cell::kSameProductGrads ? nullptr : grad_a_data + (b0 + r) * G * H,
            };
            Cell::template backward<scalar_t>(step, H);
          }
        });
        // The last step's rows all read the initial state (forward: t = 0; in reverse, t = T - 1,
        // which no step precedes), so its product feeds dL/dh0 alone: skipped when that is not
        // asked for, a whole product in a one-step call.
        if (!need_state_grads && s == layout.steps() - 1) continue;
        if (w_hh_packed) {
          w_hh_packed->multiply(grad_a_data + (b0 + lo) * G * H, G * H, n, grad_h_data + lo * P, P, nullptr,
                                Cell::kDirectStateGrad);
          continue;
        }
        if (few_rows_product(n, G * H, P)) {
          few_rows_times(grad_a_data + (b0 + lo) * G * H, G * H, n, a.w_hh.const_data_ptr<scalar_t>(), G * H, P,
                         grad_h_data + lo * P, P, Cell::kDirectStateGrad);
          continue;
        }
        const at::Tensor grad_a_rows = grad_a.narrow(0, b0 + lo, n);
        at::Tensor& grad_h_out = grad_h_rows.rows(lo, n);
        if (Cell::kDirectStateGrad) {
          grad_h_out.addmm_(grad_a_rows, a.w_hh);
        } else {
          at::mm_out(grad_h_out, grad_a_rows, a.w_hh);
        }
      }
    });

    // The block's products, on all threads: dx = dX W_ih, dW_ih += dX^T x, db_ih += sum dX,
    // dW_hh += dA^T H_prev, db_hh += sum dA, dW_hr += dH^T M.
    const int64_t rows = block.rows();
    const at::Tensor block_grad_x = grad_x.narrow(0, 0, rows);
    const at::Tensor block_grad_a = grad_a.narrow(0, 0, rows);
    // dX (and dA) as the products read them: narrowed to a half-precision input's dtype once per block
    // (the bias gradients sum the loop's own values)
    const at::Tensor product_grad_x = in_product_dtype(block_grad_x);
    if (need_input_grad && !half_input && few_rows_product(rows, G * H, I)) {
      few_rows_times(grad_x_data, G * H, rows, a.w_ih.const_data_ptr<scalar_t>(), G * H, I,
                     result.grad_input.mutable_data_ptr<scalar_t>() + first_row * I, I, false);
    } else if (need_input_grad) {
      at::Tensor block_grad_input = result.grad_input.narrow(0, first_row, rows);
      if (product_type == block_grad_input.scalar_type()) {
        at::mm_out(block_grad_input, product_grad_x, w_ih_for_products);
      } else {  // float32 products for a half-precision input's gradient (narrow_products)
        block_grad_input.copy_(at::mm(product_grad_x, w_ih_for_products));
      }
    }
    if (!need_weight_grads) continue;
    add_product(result.grad_w_ih, product_grad_x.t(), a.input.narrow(0, first_row, rows));
    add_row_sum(result.grad_b_ih, block_grad_x);
    at::Tensor block_states = states.narrow(0, 0, rows);
    previous_states<scalar_t>(layout, block, output, a.h0, block_states);
    add_product(result.grad_w_hh, (Cell::kSameProductGrads ? product_grad_x : in_product_dtype(block_grad_a)).t(),
                block_states);
    if (!Cell::kSameProductGrads) add_row_sum(result.grad_b_hh, block_grad_a);
    if constexpr (Cell::kProjectable) {
      if (project) {
        add_product(result.grad_w_hr, grad_h_history.narrow(0, 0, rows).t(),
                    Cell::projected_states(saved.narrow(0, first_row, rows), cells.narrow(0, first_row, rows), H));
      }
    }
    first_block = false;
  }
  if (need_weight_grads && Cell::kSameProductGrads) result.grad_b_hh = result.grad_b_ih.clone();
  if (!need_state_grads) {
    result.grad_h0 = none();
    if constexpr (Cell::kHasCellState) result.grad_c0 = none();
  }
  return result;
}

}  // namespace rnnkit::cpu
