// PackedMatrix (recurrent_product.h): packing, and the kernel of each ISA behind one runtime choice.
#include "recurrent_product.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

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

#include "bf16_product_kernel.h"

#include <vector>

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

bool has_bf16_dot_product() {
  static const bool has = use_avx512() && __builtin_cpu_supports("avx512bf16");
  return has;
}

template <typename scalar_t>
PackedMatrix<scalar_t>::PackedMatrix(int64_t k, int64_t n, bool bf16_pairs)
    : k_(k), n_(n), panel_width_(bf16_pairs ? avx512_bf16::kWidth : active_panel_width<scalar_t>()),
      bf16_pairs_(bf16_pairs) {
  const int64_t panels = (n + panel_width_ - 1) / panel_width_;
  const int64_t rows = bf16_pairs ? (k + 1) / 2 * 2 : k;  // an odd K's last pair zero-padded
  panels_ = at::zeros({panels * rows * panel_width_},
                      at::TensorOptions().dtype(bf16_pairs ? at::kBFloat16 : c10::CppTypeToScalarType<scalar_t>::value));
}

template <typename scalar_t>
PackedMatrix<scalar_t> PackedMatrix<scalar_t>::pack(const at::Tensor& b) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (b.scalar_type() == at::kBFloat16) return pack_bf16_pairs(b);
  }
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
PackedMatrix<scalar_t> PackedMatrix<scalar_t>::pack_bf16_pairs(const at::Tensor& b) {
  // b (K, N) bfloat16, any strides: panel q, pair p, column c holds b[2p][j], b[2p + 1][j], j = q*width + c
  TORCH_CHECK(has_bf16_dot_product(), "rnnkit: a bfloat16 weight packed on a CPU without bfloat16 dot products");
  PackedMatrix packed(b.size(0), b.size(1), /*bf16_pairs=*/true);
  const int64_t K = packed.k_, N = packed.n_, width = packed.panel_width_, num_pairs = (K + 1) / 2;
  const at::BFloat16* from = b.const_data_ptr<at::BFloat16>();
  const int64_t row_stride = b.stride(0), column_stride = b.stride(1);
  at::BFloat16* to = packed.panels_.mutable_data_ptr<at::BFloat16>();
  for (int64_t j = 0; j < N; ++j) {
    at::BFloat16* column = to + (j / width) * num_pairs * 2 * width + (j % width) * 2;
    for (int64_t k = 0; k < K; ++k) column[(k / 2) * 2 * width + (k % 2)] = from[k * row_stride + j * column_stride];
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
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (bf16_pairs_) {  // A's rows rounded to bfloat16 pairs, in this thread's buffer
      thread_local std::vector<uint32_t> a_pairs;
      a_pairs.resize(static_cast<size_t>(rows * ((k_ + 1) / 2)));
      avx512_bf16::round_rows_to_pairs(a, lda, rows, k_, a_pairs.data());
      avx512_bf16::multiply(a_pairs.data(), rows, reinterpret_cast<const uint16_t*>(panels_.const_data_ptr()), k_,
                            n_, c, ldc, bias, accumulate);
      return;
    }
  }
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
