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

// The kernels run below autograd, and below autocast: the ATen products inside them record nothing,
// and stay in the dtypes the loop chose (autocast would turn its float32 products into bfloat16 ones).
struct BelowAutogradAndAutocast {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  c10::impl::ExcludeDispatchKeyGuard below_autocast{c10::autocast_dispatch_keyset};
};

// A tensor in `dtype`; one broadcast along the rows (every row the same: stride 0) stays broadcast.
inline at::Tensor in_dtype(const at::Tensor& t, at::ScalarType dtype) {
  if (!t.defined() || t.scalar_type() == dtype) return t;
  if (t.dim() == 2 && t.size(0) > 1 && t.stride(0) == 0) return t.narrow(0, 0, 1).to(dtype).expand(t.sizes());
  return t.to(dtype);
}

template <typename Cell>
ForwardResult run_forward(const char* op, const LayerArgs& args) {
  BelowAutogradAndAutocast below;
  ForwardResult result;
  if (is_half(args)) {  // the float32 loop; the layer's results rounded back to its dtype once
    result = forward_loop<Cell, float>(loop_dtype_args(args));
    const at::ScalarType dtype = args.input.scalar_type();
    result.output = result.output.to(dtype);
    result.h_n = result.h_n.to(dtype);
    if (result.c_n.defined()) result.c_n = result.c_n.to(dtype);
    return result;  // saved and cells stay float32: only the backward reads them
  }
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
  // what the forward saved is in the loop's dtype: float32 for a half-precision layer
  const at::Tensor loop_dtype = is_half(a) ? at::empty({0}, a.input.options().dtype(at::kFloat)) : a.input;
  if constexpr (Cell::kSaved > 0) {
    check_tensor(op, "gates", saved, loop_dtype, 2);
    check_shape(op, "gates", saved, {N, Cell::kSaved * H});
  }
  if constexpr (Cell::kHasCellState) {
    check_tensor(op, "grad_c_n", grad_c_n, a.input, 2);
    check_shape(op, "grad_c_n", grad_c_n, {B, H});
    check_tensor(op, "cells", cells, loop_dtype, 2);
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
  BelowAutogradAndAutocast below;
  BackwardResult result;
  if (is_half(args)) {  // the float32 loop (the forward's saved tensors are float32); gradients rounded back
    const at::ScalarType dtype = args.input.scalar_type();
    result = backward_loop<Cell, float>(
        loop_dtype_args(args), in_dtype(grad_output, at::kFloat), in_dtype(grad_h_n, at::kFloat),
        in_dtype(grad_c_n, at::kFloat), output.to(at::kFloat).contiguous(),
        in_dtype(saved, at::kFloat).contiguous(),  // (an Elman layer's is an empty one in the input's dtype)
        Cell::kHasCellState ? cells.contiguous() : cells, output_mask[0], output_mask[1], output_mask[2]);
    for (at::Tensor* grad : {&result.grad_input, &result.grad_h0, &result.grad_c0, &result.grad_w_ih,
                             &result.grad_w_hh, &result.grad_b_ih, &result.grad_b_hh, &result.grad_w_hr}) {
      if (grad->defined()) *grad = grad->to(dtype);  // (grad_input, when asked for, is already)
    }
    return result;
  }
  const at::Tensor output_c = output.contiguous();
  const at::Tensor saved_c = Cell::kSaved > 0 ? saved.contiguous() : saved;
  const at::Tensor cells_c = Cell::kHasCellState ? cells.contiguous() : cells;
  AT_DISPATCH_FLOATING_TYPES(args.input.scalar_type(), "rnnkit recurrence", [&] {
    result = backward_loop<Cell, scalar_t>(args, grad_output, grad_h_n, grad_c_n, output_c, saved_c, cells_c,
                                           output_mask[0], output_mask[1], output_mask[2]);
  });
  return result;
}

}  // namespace rnnkit::cpu
