// One layer-direction's arguments, checked once, as the time loop reads them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "packed_layout.h"

namespace rnnkit::cpu {

struct LayerArgs {
  at::Tensor input;  // (N, I), contiguous
  PackedLayout layout;
  at::Tensor h0;     // (B, P): the initial h, one row per sequence
  at::Tensor c0;     // (B, H): the initial c (cells with a cell state), else undefined
  at::Tensor w_ih;   // (G*H, I)
  at::Tensor w_hh;   // (G*H, P)
  at::Tensor b_ih;   // (G*H) or undefined (bias=False)
  at::Tensor b_hh;   // (G*H) or undefined
  at::Tensor w_hr;   // (P, H): LSTM's projection (proj_size = P), else undefined
  int64_t hidden_size;  // H
  int64_t state_size;   // P: the width of h (H unless projected)
  at::Tensor w_hh_narrow = {};  // a half-precision layer's W_hh in its own dtype (loop_dtype_args), else undefined
};

namespace detail {

inline void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input,
                         int64_t dim) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.is_cpu(), op, ": ", name, " should be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but the input has ", input.scalar_type(), " (one dtype throughout)");
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " should be ", dim, "-D, got shape ", t.sizes());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " should have shape ", expected, ", got ", t.sizes());
}

}  // namespace detail

// Whether the layer is bfloat16 or float16: the loop then runs in float32 (loop_dtype_args).
inline bool is_half(const LayerArgs& a) {
  return a.input.scalar_type() == at::kBFloat16 || a.input.scalar_type() == at::kHalf;
}

// The arguments as the float32 loop reads a half-precision layer's: the states, W_hh, the biases and
// W_hr widened (exactly) to float32; the input and W_ih kept, for the products the loop takes in the
// input's dtype (time_loop.h: the hoisted input projection, dx and the weights' gradients).
inline LayerArgs loop_dtype_args(const LayerArgs& a) {
  LayerArgs wide = a;
  const auto widen = [](const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; };
  wide.h0 = widen(a.h0);
  wide.c0 = widen(a.c0);
  wide.w_hh = widen(a.w_hh);
  wide.w_hh_narrow = a.w_hh;  // what the recurrent product may pack (time_loop.h, packable_w_hh)
  wide.b_ih = widen(a.b_ih);
  wide.b_hh = widen(a.b_hh);
  wide.w_hr = widen(a.w_hr);
  return wide;
}

// Checks every shape, dtype and device against the input and the packed layout, so that the loops
// may index without bounds checks; returns contiguous tensors.  `gates` is the cell's G.
inline LayerArgs check_layer_args(const char* op, int64_t gates, const at::Tensor& input,
                                  const at::Tensor& batch_sizes, const at::Tensor& h0,
                                  const std::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                  const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
                                  bool reverse) {
  using detail::check_shape;
  using detail::check_tensor;
  TORCH_CHECK(input.is_cpu(), op, ": input should be on the CPU, got ", input.device());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble ||
                  input.scalar_type() == at::kBFloat16 || input.scalar_type() == at::kHalf,
              op, ": supports float32, float64, bfloat16 and float16, got ", input.scalar_type());
  TORCH_CHECK(input.dim() == 2, op, ": input should be 2-D (rows, input_size) in packed layout, got shape ",
              input.sizes());
  PackedLayout layout(batch_sizes, input.size(0), reverse, op);
  check_tensor(op, "w_hh", w_hh, input, 2);
  TORCH_CHECK(w_hh.size(0) % gates == 0, op, ": w_hh should have ", gates, " * hidden_size rows, got ",
              w_hh.size(0));
  const int64_t H = w_hh.size(0) / gates;
  const bool project = w_hr.has_value() && w_hr->defined();
  const int64_t P = project ? w_hr->size(0) : H;
  check_tensor(op, "h0", h0, input, 2);
  check_shape(op, "h0", h0, {layout.batch(), P});
  check_shape(op, "w_hh", w_hh, {gates * H, P});
  check_tensor(op, "w_ih", w_ih, input, 2);
  check_shape(op, "w_ih", w_ih, {gates * H, input.size(1)});
  LayerArgs args{input.contiguous(), std::move(layout), h0.contiguous(), at::Tensor(), w_ih.contiguous(),
                 w_hh.contiguous(), at::Tensor(), at::Tensor(), at::Tensor(), H, P};
  if (c0.has_value() && c0->defined()) {
    check_tensor(op, "c0", *c0, input, 2);
    check_shape(op, "c0", *c0, {args.layout.batch(), H});
    args.c0 = c0->contiguous();
  }
  const bool with_bias_ih = b_ih.has_value() && b_ih->defined();
  const bool with_bias_hh = b_hh.has_value() && b_hh->defined();
  TORCH_CHECK(with_bias_ih == with_bias_hh, op, ": b_ih and b_hh should both be given or both be None");
  if (with_bias_ih) {
    check_tensor(op, "b_ih", *b_ih, input, 1);
    check_shape(op, "b_ih", *b_ih, {gates * H});
    check_tensor(op, "b_hh", *b_hh, input, 1);
    check_shape(op, "b_hh", *b_hh, {gates * H});
    args.b_ih = b_ih->contiguous();
    args.b_hh = b_hh->contiguous();
  }
  if (project) {
    check_tensor(op, "w_hr", *w_hr, input, 2);
    check_shape(op, "w_hr", *w_hr, {P, H});
    args.w_hr = w_hr->contiguous();
  }
  return args;
}

}  // namespace rnnkit::cpu
