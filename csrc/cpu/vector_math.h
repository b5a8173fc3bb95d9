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
