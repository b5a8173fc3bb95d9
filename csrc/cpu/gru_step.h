// The GRU's pointwise step (torch.nn's: gate order r, z, n, the reset gate on the recurrent product).
//
// Forward, per hidden unit j, with x = input_projection (x_t W_ih^T + b_ih) and
// a = recurrent_product (h_{t-1} W_hh^T + b_hh, which the step needs apart: kRecurrentBiasInProduct):
//   r = sigmoid(x_r + a_r)   z = sigmoid(x_z + a_z)   n = tanh(x_n + r a_n)
//   h_t = (h_{t-1} - n) z + n          ( = (1 - z) n + z h_{t-1}, written as torch computes it)
// Saved: r, z, n and a_n (4 blocks).
//
// Backward, from dh = dL/dh_t:
//   dn_pre = dh (1 - z) (1 - n^2)
//   dz_pre = dh (h_{t-1} - n) z (1 - z)
//   dr_pre = dn_pre a_n r (1 - r)
//   dL/dx     = (dr_pre, dz_pre, dn_pre)
//   dL/da     = (dr_pre, dz_pre, dn_pre r)
//   dL/dh_{t-1} = dh z  (kDirectStateGrad: written here)  + dL/da W_hh  (added by the loop)
#pragma once

#include "cell_step.h"
#include "vector_math.h"

namespace rnnkit::cpu {

struct GruStep {
  static constexpr int64_t kGates = 3;
  static constexpr int64_t kSaved = 4;  // r, z, n, a_n
  static constexpr bool kHasCellState = false;
  static constexpr bool kRecurrentBiasInProduct = true;
  static constexpr bool kSavesOverInputProjection = false;
  static constexpr bool kSameProductGrads = false;
  static constexpr bool kDirectStateGrad = true;
  static constexpr bool kProjectable = false;

  template <typename scalar_t>
  static void forward(const ForwardRow<scalar_t>& row, int64_t H) {
    for_each_vector<scalar_t>(H, [&](int64_t j, int64_t n) {
      const scalar_t* x = row.input_projection;
      const scalar_t* a = row.recurrent_product;
      const Vec<scalar_t> a_n = load(a + 2 * H + j, n);
      const Vec<scalar_t> r = sigmoid(load(x + j, n) + load(a + j, n));
      const Vec<scalar_t> z = sigmoid(load(x + H + j, n) + load(a + H + j, n));
      const Vec<scalar_t> nv = tanh(load(x + 2 * H + j, n) + r * a_n);
      const Vec<scalar_t> h = (load(row.h_prev + j, n) - nv) * z + nv;
      store(r, row.saved + j, n);
      store(z, row.saved + H + j, n);
      store(nv, row.saved + 2 * H + j, n);
      store(a_n, row.saved + 3 * H + j, n);
      store(h, row.h + j, n);
      if (row.output != nullptr) store(h, row.output + j, n);
    });
  }

  template <typename scalar_t>
  static void backward(const BackwardRow<scalar_t>& row, int64_t H) {
    for_each_vector<scalar_t>(H, [&](int64_t j, int64_t n) {
      const Vec<scalar_t> r = load(row.saved + j, n), z = load(row.saved + H + j, n),
                          nv = load(row.saved + 2 * H + j, n), a_n = load(row.saved + 3 * H + j, n);
      const Vec<scalar_t> dh = load(row.grad_h + j, n);
      const Vec<scalar_t> dn = dh - dh * z;
      const Vec<scalar_t> dn_pre = dn - dn * nv * nv;
      const Vec<scalar_t> dz_pre = dh * (load(row.h_prev + j, n) - nv) * (z - z * z);
      const Vec<scalar_t> dr_pre = dn_pre * a_n * (r - r * r);
      store(dr_pre, row.grad_input_projection + j, n);
      store(dz_pre, row.grad_input_projection + H + j, n);
      store(dn_pre, row.grad_input_projection + 2 * H + j, n);
      store(dr_pre, row.grad_recurrent_product + j, n);
      store(dz_pre, row.grad_recurrent_product + H + j, n);
      store(dn_pre * r, row.grad_recurrent_product + 2 * H + j, n);
      store(dh * z, row.grad_h + j, n);
    });
  }
};

}  // namespace rnnkit::cpu
