// The pieces a cell's pointwise step is written with: a loop over a row in SIMD vectors, loads and
// stores that handle the row's tail, and the activations, written as torch writes them (so the
// roundings are those of torch's own vectorized kernels).
//
// at::vec::Vectorized<scalar_t> is ATen's SIMD vector: 8 floats / 4 doubles with AVX2 (the ISA
// setup.py compiles for), and its exp/tanh are SLEEF's (1-ulp) ones, the same torch's CPU kernels call.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace rnnkit::cpu {

template <typename scalar_t>
using Vec = at::vec::Vectorized<scalar_t>;

// Calls f(j, count) for j = 0, V, 2V, ... < n (V: the vector width), count = V except in the last,
// partial chunk: the row's tail goes through the same code, with masked loads and stores.
template <typename scalar_t, typename F>
inline void for_each_vector(int64_t n, const F& f) {
  constexpr int64_t width = Vec<scalar_t>::size();
  int64_t j = 0;
  for (; j + width <= n; j += width) f(j, width);
  if (j < n) f(j, n - j);
}

// count elements from p (the rest of the vector zero).
template <typename scalar_t>
inline Vec<scalar_t> load(const scalar_t* p, int64_t count) {
  return count == Vec<scalar_t>::size() ? Vec<scalar_t>::loadu(p) : Vec<scalar_t>::loadu(p, count);
}

// The first count elements of v to p.
template <typename scalar_t>
inline void store(const Vec<scalar_t>& v, scalar_t* p, int64_t count) {
  if (count == Vec<scalar_t>::size()) {
    v.store(p);
  } else {
    v.store(p, count);
  }
}

// sigmoid(x) = 1 / (1 + exp(-x)), as torch's vectorized sigmoid computes it.
template <typename scalar_t>
inline Vec<scalar_t> sigmoid(const Vec<scalar_t>& x) {
  return (Vec<scalar_t>(scalar_t(1)) + x.neg().exp()).reciprocal();
}

// tanh: float64 as torch's vectorized tanh (SLEEF, 1 ulp); float32 by Eigen's rational approximation
// p(x)/q(x) on [-7.9, 7.9], a few ulp, the one rnnkit's numba kernels use: SLEEF's float32 tanh took
// 15% of the LSTM forward at (T, B, H) = (200, 16, 64), the largest single cost after the products.
// It is exactly +-1 where float32's tanh rounds to +-1 (|x| >= 9.0109), so 1 - tanh^2 is exactly 0
// there, as torch's; NaN stays NaN.
template <typename scalar_t>
inline Vec<scalar_t> tanh(const Vec<scalar_t>& x) {
  return x.tanh();
}

template <>
inline Vec<float> tanh(const Vec<float>& x) {
  using V = Vec<float>;
  constexpr float kClamp = 7.90531110763549805f, kSaturate = 9.0109f;
  const V v = at::vec::clamp(x, V(-kClamp), V(kClamp));
  const V v2 = v * v;
  V p = at::vec::fmadd(v2, V(-2.76076847742355e-16f), V(2.00018790482477e-13f));
  p = at::vec::fmadd(p, v2, V(-8.60467152213735e-11f));
  p = at::vec::fmadd(p, v2, V(5.12229709037114e-08f));
  p = at::vec::fmadd(p, v2, V(1.48572235717979e-05f));
  p = at::vec::fmadd(p, v2, V(6.37261928875436e-04f));
  p = at::vec::fmadd(p, v2, V(4.89352455891786e-03f));
  p = p * v;
  V q = at::vec::fmadd(v2, V(1.19825839466702e-06f), V(1.18534705686654e-04f));
  q = at::vec::fmadd(q, v2, V(2.26843463243900e-03f));
  q = at::vec::fmadd(q, v2, V(4.89352518554385e-03f));
  V y = p / q;
  y = V::blendv(y, V(1.0f), x >= V(kSaturate));
  return V::blendv(y, V(-1.0f), x <= V(-kSaturate));
}

// relu(x) = max(x, 0), NaN kept (torch's clamp_min(0)).
template <typename scalar_t>
inline Vec<scalar_t> relu(const Vec<scalar_t>& x) {
  return at::vec::clamp_min(x, Vec<scalar_t>(scalar_t(0)));
}

// relu's backward as torch's threshold_backward: the gradient, zero where the result is <= 0.
template <typename scalar_t>
inline Vec<scalar_t> relu_backward(const Vec<scalar_t>& grad, const Vec<scalar_t>& result) {
  const Vec<scalar_t> zero(scalar_t(0));
  return Vec<scalar_t>::blendv(grad, zero, result <= zero);
}

}  // namespace rnnkit::cpu
