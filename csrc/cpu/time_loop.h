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
// then the products over all steps at once: dx = dX W_ih, dW_ih = dX^T x, db_ih = sum dX,
// dW_hh = dA^T H_prev (H_prev: the state each row read), db_hh = sum dA, dW_hr = dH^T M.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <optional>
#include <vector>

#include "cell_step.h"
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
template <typename F>
inline void for_rows(int64_t rows, int64_t elements_per_row, const F& body) {
  const int64_t grain = std::max<int64_t>(1, kMinParallelElements / std::max<int64_t>(elements_per_row, 1));
  at::parallel_for(0, rows, grain, body);
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

// (N, P): the state each row read (a previous step's row of `history`, else its row of `initial`),
// gathered step by step in blocks: the rows of a step that read a previous step are that step's
// first rows, contiguous in `history`.
template <typename scalar_t>
at::Tensor previous_states(const PackedLayout& layout, const at::Tensor& history, const at::Tensor& initial) {
  const int64_t width = history.size(1);
  at::Tensor result = at::empty_like(history, at::MemoryFormat::Contiguous);
  const scalar_t* from_history = history.const_data_ptr<scalar_t>();
  const scalar_t* from_initial = initial.const_data_ptr<scalar_t>();
  scalar_t* to = result.mutable_data_ptr<scalar_t>();
  for (int64_t t = 0; t < layout.steps(); ++t) {
    const int64_t rows = layout.batch_size(t), continued = layout.rows_with_previous_step(t);
    scalar_t* dst = to + layout.offset(t) * width;
    if (continued > 0) {
      std::memcpy(dst, from_history + layout.offset(layout.previous_time(t)) * width,
                  sizeof(scalar_t) * continued * width);
    }
    if (rows > continued) {
      std::memcpy(dst + continued * width, from_initial + continued * width,
                  sizeof(scalar_t) * (rows - continued) * width);
    }
  }
  return result;
}

template <typename Cell, typename scalar_t>
ForwardResult forward_loop(const LayerArgs& a) {
  constexpr int64_t G = Cell::kGates;
  const PackedLayout& layout = a.layout;
  const int64_t H = a.hidden_size, P = a.state_size, B = layout.batch(), N = a.input.size(0);
  const bool project = a.w_hr.defined();
  TORCH_CHECK(!project || Cell::kProjectable, "this cell has no projection");
  const auto options = a.input.options();

  const at::Tensor bias = hoisted_bias<Cell>(a);
  at::Tensor gx = bias.defined() ? at::addmm(bias, a.input, a.w_ih.t()) : at::mm(a.input, a.w_ih.t());
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
  if (worth_packing(layout.steps())) w_hh_packed.emplace(PackedMatrix<scalar_t>::transpose_of(a.w_hh));
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
  for_each_chunk(row_chunks(layout), [&](int64_t lo, int64_t hi) {
    RowsView product_rows(product), h_rows(result.h_n), m_rows(m);
    for (int64_t s = 0; s < layout.steps(); ++s) {
      const int64_t t = layout.forward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
      if (n == 0) continue;
      if (w_hh_packed) {  // product rows lo.. = h rows lo.. W_hh^T (+ b_hh)
        w_hh_packed->multiply(h_data + lo * P, P, n, product_data + lo * G * H, G * H, recurrent_bias_data, false);
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

template <typename Cell, typename scalar_t>
BackwardResult backward_loop(const LayerArgs& a, const at::Tensor& grad_output_in, const at::Tensor& grad_h_n,
                             const at::Tensor& grad_c_n, const at::Tensor& output, const at::Tensor& saved,
                             const at::Tensor& cells, bool need_input_grad, bool need_weight_grads) {
  constexpr int64_t G = Cell::kGates;
  const PackedLayout& layout = a.layout;
  const int64_t H = a.hidden_size, P = a.state_size, B = layout.batch(), N = a.input.size(0);
  const bool project = a.w_hr.defined();
  const auto options = a.input.options();
  // A gradient not asked for: a fresh empty tensor each (an operator's results must not alias).
  const auto none = [&] { return at::empty({0}, options); };

  // Rows of the output's gradient are read through a row stride; within a row it must be contiguous.
  const at::Tensor grad_output =
      (grad_output_in.stride(1) == 1 || P <= 1) ? grad_output_in : grad_output_in.contiguous();
  const int64_t grad_output_stride = grad_output.size(0) > 1 ? grad_output.stride(0) : P;

  BackwardResult result;
  result.grad_h0 = grad_h_n.clone(at::MemoryFormat::Contiguous);  // dh, carried backwards in time
  if constexpr (Cell::kHasCellState) result.grad_c0 = grad_c_n.clone(at::MemoryFormat::Contiguous);
  at::Tensor grad_x = at::empty({N, G * H}, options);                                   // dX
  at::Tensor grad_a = Cell::kSameProductGrads ? grad_x : at::empty({N, G * H}, options);  // dA
  at::Tensor grad_m = project ? at::empty({B, H}, options) : at::Tensor();
  at::Tensor grad_h_history = (project && need_weight_grads) ? at::empty({N, P}, options) : at::Tensor();

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
  scalar_t* grad_h_history_data = grad_h_history.defined() ? grad_h_history.mutable_data_ptr<scalar_t>() : nullptr;
  // W_hh packed once for all steps' dL/dh_{t-1} = dA_t W_hh (recurrent_product.h)
  std::optional<PackedMatrix<scalar_t>> w_hh_packed;
  if (worth_packing(layout.steps())) w_hh_packed.emplace(PackedMatrix<scalar_t>::of(a.w_hh));

  // The whole backward time loop over the batch rows [lo, hi): of step t, rows lo .. lo + n - 1.
  for_each_chunk(row_chunks(layout), [&](int64_t lo, int64_t hi) {
    RowsView grad_h_rows(result.grad_h0), grad_m_rows(grad_m);
    for (int64_t s = 0; s < layout.steps(); ++s) {
      const int64_t t = layout.backward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
      if (n == 0) continue;
      for_rows(n, P, [&](int64_t begin, int64_t end) {
        add_rows(grad_h_data, grad_output_data, grad_output_stride, P, o0, lo + begin, lo + end);
      });
      if (project) {
        if (grad_h_history.defined()) {
          std::memcpy(grad_h_history_data + (o0 + lo) * P, grad_h_data + lo * P, sizeof(scalar_t) * n * P);
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
              grad_x_data + row * G * H,
              Cell::kSameProductGrads ? nullptr : grad_a_data + row * G * H,
          };
          Cell::template backward<scalar_t>(step, H);
        }
      });
      if (w_hh_packed) {
        w_hh_packed->multiply(grad_a_data + (o0 + lo) * G * H, G * H, n, grad_h_data + lo * P, P, nullptr,
                              Cell::kDirectStateGrad);
        continue;
      }
      const at::Tensor grad_a_rows = grad_a.narrow(0, o0 + lo, n);
      at::Tensor& grad_h_out = grad_h_rows.rows(lo, n);
      if (Cell::kDirectStateGrad) {
        grad_h_out.addmm_(grad_a_rows, a.w_hh);
      } else {
        at::mm_out(grad_h_out, grad_a_rows, a.w_hh);
      }
    }
  });

  result.grad_input = need_input_grad ? at::mm(grad_x, a.w_ih) : none();
  result.grad_w_hr = none();
  if (!need_weight_grads) {
    result.grad_w_ih = none();
    result.grad_w_hh = none();
    result.grad_b_ih = none();
    result.grad_b_hh = none();
  } else {
    result.grad_w_ih = at::mm(grad_x.t(), a.input);
    result.grad_b_ih = grad_x.sum(0);
    result.grad_w_hh = at::mm(grad_a.t(), previous_states<scalar_t>(layout, output, a.h0));
    result.grad_b_hh = Cell::kSameProductGrads ? result.grad_b_ih.clone() : grad_a.sum(0);
    if (project) {
      if constexpr (Cell::kProjectable) {
        result.grad_w_hr = at::mm(grad_h_history.t(), Cell::projected_states(saved, cells, H));
      }
    }
  }
  return result;
}

}  // namespace rnnkit::cpu
