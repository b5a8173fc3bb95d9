// What every family's CPU operator does around the time loop: check the arguments, pick the dtype's
// instantiation, run the loop.  The family files (lstm_kernel.cpp, gru_kernel.cpp, rnn_kernel.cpp)
// only map their schema's arguments and returns onto these.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <array>

#include "layer_args.h"
#include "time_loop.h"

namespace rnnkit::cpu {

// The kernels run below autograd: the ATen products inside them record nothing.
using BelowAutograd = at::AutoDispatchBelowADInplaceOrView;

template <typename Cell>
ForwardResult run_forward(const char* op, const LayerArgs& args) {
  BelowAutograd below;
  ForwardResult result;
  AT_DISPATCH_FLOATING_TYPES(args.input.scalar_type(), "rnnkit recurrence", [&] { result = forward_loop<Cell, scalar_t>(args); });
  return result;
}

// Checks what the backward reads besides the layer's arguments (the output gradients and what the
// forward returned for it) against the layer's shapes: a caller of the op may pass anything.
template <typename Cell>
void check_backward_args(const char* op, const LayerArgs& a, const at::Tensor& grad_output,
                         const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& output,
                         const at::Tensor& saved, const at::Tensor& cells) {
  using detail::check_shape;
  using detail::check_tensor;
  const int64_t N = a.input.size(0), B = a.layout.batch(), H = a.hidden_size, P = a.state_size;
  check_tensor(op, "grad_output", grad_output, a.input, 2);
  check_shape(op, "grad_output", grad_output, {N, P});
  check_tensor(op, "grad_h_n", grad_h_n, a.input, 2);
  check_shape(op, "grad_h_n", grad_h_n, {B, P});
  check_tensor(op, "output", output, a.input, 2);
  check_shape(op, "output", output, {N, P});
  if constexpr (Cell::kSaved > 0) {
    check_tensor(op, "gates", saved, a.input, 2);
    check_shape(op, "gates", saved, {N, Cell::kSaved * H});
  }
  if constexpr (Cell::kHasCellState) {
    check_tensor(op, "grad_c_n", grad_c_n, a.input, 2);
    check_shape(op, "grad_c_n", grad_c_n, {B, H});
    check_tensor(op, "cells", cells, a.input, 2);
    check_shape(op, "cells", cells, {N, H});
  }
}

// output_mask: {dL/dinput wanted, the initial states' gradients wanted, the weights' and biases'
// gradients wanted}; what is not wanted comes back as an empty (0,) tensor.
template <typename Cell>
BackwardResult run_backward(const char* op, const LayerArgs& args, const at::Tensor& grad_output,
                            const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& output,
                            const at::Tensor& saved, const at::Tensor& cells, std::array<bool, 3> output_mask) {
  check_backward_args<Cell>(op, args, grad_output, grad_h_n, grad_c_n, output, saved, cells);
  BelowAutograd below;
  const at::Tensor output_c = output.contiguous();
  const at::Tensor saved_c = Cell::kSaved > 0 ? saved.contiguous() : saved;
  const at::Tensor cells_c = Cell::kHasCellState ? cells.contiguous() : cells;
  BackwardResult result;
  AT_DISPATCH_FLOATING_TYPES(args.input.scalar_type(), "rnnkit recurrence", [&] {
    result = backward_loop<Cell, scalar_t>(args, grad_output, grad_h_n, grad_c_n, output_c, saved_c, cells_c,
                                           output_mask[0], output_mask[1], output_mask[2]);
  });
  return result;
}

}  // namespace rnnkit::cpu
