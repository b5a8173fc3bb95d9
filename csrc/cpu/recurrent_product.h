// The recurrent product of the time loop, A_t = h_{t-1} W_hh^T (and the backward's dA_t W_hh), on a
// weight packed once per layer-direction call instead of once per step.
//
// Why not at::mm at every step, as the rest of the loop's products: MKL copies ("packs") its right
// operand into panels on every call, and with the small left operands of a time loop (a chunk's rows
// of one step) that copy is a large part of the product: measured on the AVX-512 EPYC at
// (T, B, H) = (100, 32, 256), 11% of the LSTM forward's time in mkl's sgemm_scopy alone, and the
// per-call overhead dominates the small sizes (0.6 us a step at H = 32).  Here the weight is packed
// once and every step multiplies the packed panels with a register-blocked kernel (vector FMAs, no
// horizontal sums).
//
// The kernel is compiled for AVX2 and for AVX-512 (product_kernel.h, included once per ISA by
// recurrent_product.cpp); the one the CPU runs is chosen at the first call, AVX-512 where the CPU has
// it unless ATEN_CPU_CAPABILITY (torch's own switch) names avx2 or default.  A bfloat16 weight packed
// for a float32 loop (a bfloat16 layer's) runs on bfloat16 dot products where the CPU has AVX512-BF16
// (bf16_product_kernel.h: A's rows rounded to bfloat16, float32 sums); elsewhere the loop packs the
// float32 W_hh it widened (time_loop.h, packable_w_hh).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rnnkit::cpu {

// A (K x N) matrix B packed for C = A B: column panels of `panel_width` columns, panel p holding
// B[k][p * panel_width + c] at panels[p][k][c], the last panel zero-padded.
template <typename scalar_t>
class PackedMatrix {
 public:
  // B = w^T for w (N, K) row-major: the forward's W_hh^T from torch.nn's (G*H, P) weight.  w is in
  // scalar_t, or bfloat16 for a float32 loop where has_bf16_dot_product() (see above).
  static PackedMatrix transpose_of(const at::Tensor& w);
  // B = w for w (K, N) row-major: the backward's W_hh.
  static PackedMatrix of(const at::Tensor& w);

  // c[r][j] = init[r][j] + sum_k a[r][k] B[k][j] for r < rows, j < N: a's rows `lda` apart, c's `ldc`.
  // init: c's own values when accumulate, else bias[j] (bias nullable: 0).
  void multiply(const scalar_t* a, int64_t lda, int64_t rows, scalar_t* c, int64_t ldc, const scalar_t* bias,
                bool accumulate) const;

  int64_t k() const { return k_; }
  int64_t n() const { return n_; }

 private:
  PackedMatrix(int64_t k, int64_t n, bool bf16_pairs = false);
  static PackedMatrix pack(const at::Tensor& b);  // B = b (K, N), whatever its strides
  static PackedMatrix pack_bf16_pairs(const at::Tensor& b);  // b bfloat16, for bf16_product_kernel.h
  at::Tensor panels_;
  int64_t k_ = 0, n_ = 0, panel_width_ = 0;
  bool bf16_pairs_ = false;  // panels_ holds bfloat16 k-pairs (bf16_product_kernel.h)
};

// Whether the packed kernel is worth its packing for a call: packing copies the weight once, about
// what MKL's own copy costs at each at::mm, so it pays from the second step on; a one-step call keeps
// at::mm (whose copy is better tuned than ours, and whose matrix-vector product copies nothing).
inline bool worth_packing(int64_t steps) { return steps >= 2; }

// "avx512" or "avx2": the kernel multiply() runs on this CPU.
const char* product_isa();

// Whether a bfloat16 weight runs on bfloat16 dot products here (AVX512-BF16, and AVX-512 chosen).
bool has_bf16_dot_product();

}  // namespace rnnkit::cpu
