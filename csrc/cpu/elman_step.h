// The Elman RNN's pointwise step: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh
// or relu (both biases in the input projection).
//
// Forward, per hidden unit j:  h_t = act(input_projection + recurrent_product).  Nothing is saved:
// the backward reads h_t from the output.
// Backward, from dh = dL/dh_t:  da = dh (1 - h_t^2) for tanh, dh [h_t > 0] for relu (torch's
// threshold_backward: zero where h_t <= 0).  da is the gradient of both products; dL/dh_{t-1} = da W_hh,
// which the loop computes.
#pragma once

#include "cell_step.h"
#include "vector_math.h"

namespace rnnkit::cpu {

enum class Nonlinearity { kTanh, kRelu };

template <Nonlinearity kActivation>
struct ElmanStep {
  static constexpr int64_t kGates = 1;
  static constexpr int64_t kSaved = 0;
  static constexpr bool kHasCellState = false;
  static constexpr bool kRecurrentBiasInProduct = false;
  static constexpr bool kSavesOverInputProjection = false;
  static constexpr bool kSameProductGrads = true;
  static constexpr bool kDirectStateGrad = false;
  static constexpr bool kProjectable = false;

  template <typename scalar_t>
  static void forward(const ForwardRow<scalar_t>& row, int64_t H) {
    for_each_vector<scalar_t>(H, [&](int64_t j, int64_t n) {
      const Vec<scalar_t> pre = load(row.input_projection + j, n) + load(row.recurrent_product + j, n);
      const Vec<scalar_t> h = kActivation == Nonlinearity::kTanh ? tanh(pre) : relu(pre);
      store(h, row.h + j, n);
      if (row.output != nullptr) store(h, row.output + j, n);
    });
  }

  template <typename scalar_t>
  static void backward(const BackwardRow<scalar_t>& row, int64_t H) {
    for_each_vector<scalar_t>(H, [&](int64_t j, int64_t n) {
      const Vec<scalar_t> h = load(row.h + j, n);
      const Vec<scalar_t> dh = load(row.grad_h + j, n);
      const Vec<scalar_t> da = kActivation == Nonlinearity::kTanh ? dh - dh * h * h : relu_backward(dh, h);
      store(da, row.grad_input_projection + j, n);
    });
  }
};

using ElmanTanhStep = ElmanStep<Nonlinearity::kTanh>;
using ElmanReluStep = ElmanStep<Nonlinearity::kRelu>;

}  // namespace rnnkit::cpu
