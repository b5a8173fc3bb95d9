// The contract between the generic time loop (time_loop.h) and a cell's pointwise step.
//
// Per step the loop does the matrix products (through ATen, so MKL/oneDNN do them) and calls the
// cell for each row (one sequence at one step) with pointers to that row's slices of the loop's
// buffers.  A cell is a struct (lstm_step.h, gru_step.h, elman_step.h) holding:
//
//   kGates                     G: the blocks of H rows in W_ih and W_hh (LSTM 4, GRU 3, Elman 1)
//   kSaved                     how many H-wide blocks per row the forward saves for the backward
//   kHasCellState              a second state c beside h (LSTM)
//   kRecurrentBiasInProduct    b_hh stays in the recurrent product (the step needs W_hh h + b_hh on
//                              its own: GRU); false folds b_hh into the hoisted input projection
//   kSavesOverInputProjection  the saved blocks overwrite the input projection's row (kSaved == G)
//   kSameProductGrads          the gradients of the two products' pre-activations are the same
//                              (the step adds them before using them: LSTM, Elman)
//   kDirectStateGrad           h_{t-1} also reaches h_t outside W_hh (GRU's z h_{t-1}): the step
//                              writes that part of dL/dh_{t-1}, and the loop adds the product's part
//   kProjectable               the loop may project h_t = W_hr m_t (LSTM's proj_size)
//   forward(const ForwardRow<scalar_t>&, H) and backward(const BackwardRow<scalar_t>&, H)
//
// Everything a later code generator has to emit for a new cell is such a struct: the loop, the
// products and the packed layout stay as they are.  All blocks are H wide; a row of G blocks holds
// them in the order of the weights' rows (LSTM i, f, g, o).
#pragma once

#include <cstdint>

namespace rnnkit::cpu {

template <typename scalar_t>
struct ForwardRow {
  // [G*H] x_t W_ih^T + b_ih (+ b_hh unless kRecurrentBiasInProduct): the hoisted input projection.
  const scalar_t* input_projection;
  // [G*H] h_{t-1} W_hh^T (+ b_hh when kRecurrentBiasInProduct).
  const scalar_t* recurrent_product;
  // [H] h_{t-1} (read by cells that use it pointwise, GRU; P == H for them). May alias `h`.
  const scalar_t* h_prev;
  // [H] out: h_t, or m_t = o_t tanh(c_t) when the loop projects (it then computes h_t = m_t W_hr^T).
  scalar_t* h;
  // [H] out: a second copy of h_t (the row of the layer's output), or nullptr when projecting.
  scalar_t* output;
  // [H] in: c_{t-1}, out: c_t (kHasCellState), else nullptr.
  scalar_t* c;
  // [H] out: a copy of c_t, its row of the `cells` history the backward reads (kHasCellState).
  scalar_t* c_history;
  // [kSaved*H] out: what the backward step reads. Aliases input_projection with
  // kSavesOverInputProjection (the step reads a block there before writing it).
  scalar_t* saved;
};

template <typename scalar_t>
struct BackwardRow {
  // [kSaved*H] what the forward step saved.
  const scalar_t* saved;
  // [H] h_t, the step's output row (Elman reads its activation there; P == H for unprojected cells).
  const scalar_t* h;
  // [H] h_{t-1}: the previous step's output row, or the initial state's.
  const scalar_t* h_prev;
  // [H] c_t and c_{t-1} (kHasCellState), else nullptr.
  const scalar_t* c;
  const scalar_t* c_prev;
  // [H] in: dL/dh_t (dL/dm_t when projected), every later use summed. Out, with kDirectStateGrad:
  // the part of dL/dh_{t-1} that does not pass through W_hh; untouched otherwise.
  scalar_t* grad_h;
  // [H] in: dL/dc_t, out: dL/dc_{t-1} (kHasCellState), else nullptr.
  scalar_t* grad_c;
  // [G*H] out: dL/d(input projection) of this row.
  scalar_t* grad_input_projection;
  // [G*H] out: dL/d(recurrent product) of this row; nullptr with kSameProductGrads (the loop uses
  // grad_input_projection for both).
  scalar_t* grad_recurrent_product;
};

}  // namespace rnnkit::cpu
