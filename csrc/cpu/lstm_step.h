// The LSTM's pointwise step (torch.nn's gate order i, f, g, o), forward and backward.
//
// Forward, per hidden unit j, with a = input_projection + recurrent_product (both biases are in the
// input projection):
//   i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
//   c_t = f c_{t-1} + i g
//   h_t = o tanh(c_t)            (m_t, which the loop projects to h_t = m_t W_hr^T with proj_size)
// Saved: i, f, g, o over the input projection's row (gates), and c_t in the `cells` history.
//
// Backward, from dm = dL/dm_t (dL/dh_t unprojected) and the carried dc = dL/dc_t:
//   dc   += dm o (1 - tanh(c_t)^2)
//   da_i  = dc g i (1 - i)        da_f = dc c_{t-1} f (1 - f)
//   da_g  = dc i (1 - g^2)        da_o = dm tanh(c_t) o (1 - o)
//   dL/dc_{t-1} = dc f
// da is the gradient of both products (kSameProductGrads); dL/dh_{t-1} = da W_hh, which the loop
// computes.
#pragma once

#include <ATen/ATen.h>

#include "cell_step.h"
#include "vector_math.h"

namespace rnnkit::cpu {

struct LstmStep {
  static constexpr int64_t kGates = 4;
  static constexpr int64_t kSaved = 4;  // i, f, g, o
  static constexpr bool kHasCellState = true;
  static constexpr bool kRecurrentBiasInProduct = false;
  static constexpr bool kSavesOverInputProjection = true;
  static constexpr bool kSameProductGrads = true;
  static constexpr bool kDirectStateGrad = false;
  static constexpr bool kProjectable = true;

  template <typename scalar_t>
  static void forward(const ForwardRow<scalar_t>& row, int64_t H) {
    for_each_vector<scalar_t>(H, [&](int64_t j, int64_t n) {
      auto pre = [&](int64_t gate) {
        return load(row.input_projection + gate * H + j, n) + load(row.recurrent_product + gate * H + j, n);
      };
      const Vec<scalar_t> i = sigmoid(pre(0)), f = sigmoid(pre(1)), g = tanh(pre(2)), o = sigmoid(pre(3));
      const Vec<scalar_t> c = f * load(row.c + j, n) + i * g;
      const Vec<scalar_t> h = o * tanh(c);
      store(i, row.saved + j, n);
      store(f, row.saved + H + j, n);
      store(g, row.saved + 2 * H + j, n);
      store(o, row.saved + 3 * H + j, n);
      store(c, row.c + j, n);
      store(c, row.c_history + j, n);
      store(h, row.h + j, n);
      if (row.output != nullptr) store(h, row.output + j, n);
    });
  }

  template <typename scalar_t>
  static void backward(const BackwardRow<scalar_t>& row, int64_t H) {
    for_each_vector<scalar_t>(H, [&](int64_t j, int64_t n) {
      const Vec<scalar_t> i = load(row.saved + j, n), f = load(row.saved + H + j, n),
                          g = load(row.saved + 2 * H + j, n), o = load(row.saved + 3 * H + j, n);
      const Vec<scalar_t> tanh_c = tanh(load(row.c + j, n));
      const Vec<scalar_t> dm = load(row.grad_h + j, n);
      const Vec<scalar_t> dm_o = dm * o;
      const Vec<scalar_t> dc = load(row.grad_c + j, n) + (dm_o - dm_o * tanh_c * tanh_c);
      const Vec<scalar_t> dc_i = dc * i;
      scalar_t* da = row.grad_input_projection;
      store(dc * g * (i - i * i), da + j, n);
      store(dc * load(row.c_prev + j, n) * (f - f * f), da + H + j, n);
      store(dc_i - dc_i * g * g, da + 2 * H + j, n);
      store(dm * tanh_c * (o - o * o), da + 3 * H + j, n);
      store(dc * f, row.grad_c + j, n);
    });
  }

  // m_t = o_t tanh(c_t) of every row (N, H), recomputed from the saved gates and the cells history:
  // what W_hr multiplied, for dL/dW_hr = dL/dh^T M.
  static at::Tensor projected_states(const at::Tensor& saved, const at::Tensor& cells, int64_t H) {
    return saved.narrow(1, 3 * H, H) * cells.tanh();
  }
};

}  // namespace rnnkit::cpu
