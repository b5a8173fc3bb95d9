// PackedMatrix (recurrent_product.h): packing, and the kernel of each ISA behind one runtime choice.
#include "recurrent_product.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <string>

#define RNNKIT_ISA avx2
#define RNNKIT_TARGET __attribute__((target("avx2,fma")))
#define RNNKIT_VECTOR_BYTES 32
#include "product_kernel.h"
#undef RNNKIT_ISA
#undef RNNKIT_TARGET
#undef RNNKIT_VECTOR_BYTES

#define RNNKIT_ISA avx512
#define RNNKIT_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma")))
#define RNNKIT_VECTOR_BYTES 64
#include "product_kernel.h"
#undef RNNKIT_ISA
#undef RNNKIT_TARGET
#undef RNNKIT_VECTOR_BYTES

namespace rnnkit::cpu {
namespace {

// AVX-512 where the CPU has it, unless ATEN_CPU_CAPABILITY asks torch for less (then rnnkit follows:
// one switch for both, as the tests that run a machine as an AVX2 one set it).
bool use_avx512() {
  static const bool chosen = [] {
    const char* capability = std::getenv("ATEN_CPU_CAPABILITY");
    if (capability != nullptr) {
      const std::string name(capability);
      if (name == "avx2" || name == "default") return false;
    }
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  }();
  return chosen;
}

template <typename scalar_t>
int64_t active_panel_width() {
  return use_avx512() ? avx512::panel_width<scalar_t>() : avx2::panel_width<scalar_t>();
}

}  // namespace

const char* product_isa() { return use_avx512() ? "avx512" : "avx2"; }

template <typename scalar_t>
PackedMatrix<scalar_t>::PackedMatrix(int64_t k, int64_t n) : k_(k), n_(n), panel_width_(active_panel_width<scalar_t>()) {
  const int64_t panels = (n + panel_width_ - 1) / panel_width_;
  panels_ = at::zeros({panels * k * panel_width_}, at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value));
}

template <typename scalar_t>
PackedMatrix<scalar_t> PackedMatrix<scalar_t>::pack(const at::Tensor& b) {
  // b (K, N), any strides: panel p, row k holds b[k][p*width .. p*width + width)
  PackedMatrix packed(b.size(0), b.size(1));
  const scalar_t* from = b.const_data_ptr<scalar_t>();
  const int64_t row_stride = b.stride(0), column_stride = b.stride(1);
  scalar_t* to = packed.panels_.template mutable_data_ptr<scalar_t>();
  const int64_t K = packed.k_, N = packed.n_, width = packed.panel_width_;
  for (int64_t j = 0; j < N; ++j) {
    scalar_t* column = to + (j / width) * K * width + (j % width);
    for (int64_t k = 0; k < K; ++k) column[k * width] = from[k * row_stride + j * column_stride];
  }
  return packed;
}

template <typename scalar_t>
PackedMatrix<scalar_t> PackedMatrix<scalar_t>::transpose_of(const at::Tensor& w) {
  return pack(w.t());  // w (N, K): B = w^T, read through the transposed view
}

template <typename scalar_t>
PackedMatrix<scalar_t> PackedMatrix<scalar_t>::of(const at::Tensor& w) {
  return pack(w);
}

template <typename scalar_t>
void PackedMatrix<scalar_t>::multiply(const scalar_t* a, int64_t lda, int64_t rows, scalar_t* c, int64_t ldc,
                                      const scalar_t* bias, bool accumulate) const {
  const scalar_t* panels = panels_.template const_data_ptr<scalar_t>();
  if (use_avx512()) {
    avx512::multiply<scalar_t>(a, lda, rows, panels, k_, n_, c, ldc, bias, accumulate);
  } else {
    avx2::multiply<scalar_t>(a, lda, rows, panels, k_, n_, c, ldc, bias, accumulate);
  }
}

template class PackedMatrix<float>;
template class PackedMatrix<double>;

}  // namespace rnnkit::cpu
