// The recurrent product of a bfloat16 layer on CPUs with AVX512-BF16: PackedMatrix<float>::multiply
// when its B was packed from a bfloat16 weight (recurrent_product.h).  Included once, by
// recurrent_product.cpp.
//
// Why a kernel of its own: a bfloat16 layer's loop runs in float32, and its recurrent product in
// float32 took most of its time at large sizes: at (T, B, H) = (50, 64, 512) the LSTM's forward+backward
// took 1.45x the time of torch.nn's bfloat16 LSTM (oneDNN, whose products are bfloat16).  vdpbf16ps
// multiplies 32 bfloat16 pairs per instruction into 16 float32 sums, twice the float32 FMA's work.
//
// B (K x N, bfloat16) is packed in panels of kWidth columns whose rows hold k-pairs: pair p, column c
// at panel[(p * kWidth + c) * 2 + {0, 1}] = B[2p][c], B[2p + 1][c] (the last pair zero-padded for odd K).
// Each row of A is rounded to bfloat16 (round to nearest even) once per call, also in pairs, so one
// 32-bit broadcast gives a row's pair to every lane; the sums are float32, as torch's bfloat16 products'.
// The register blocking is product_kernel.h's: kRows rows x 2 vectors of 16 columns.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace rnnkit::cpu::avx512_bf16 {

#define RNNKIT_BF16_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16,fma")))

constexpr int kRows = 4;
constexpr int64_t kWidth = 32;  // columns per panel: two vectors of 16 float32 sums

// A's `rows` rows (float32, `lda` apart, K columns) rounded to bfloat16 pairs: row r's pair p at
// pairs[r * num_pairs + p], as one 32-bit word (k = 2p in the low half).
RNNKIT_BF16_TARGET inline void round_rows_to_pairs(const float* a, int64_t lda, int64_t rows, int64_t K,
                                                   uint32_t* pairs) {
  const int64_t num_pairs = (K + 1) / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = a + r * lda;
    uint16_t* to = reinterpret_cast<uint16_t*>(pairs + r * num_pairs);
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m512bh both = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + k + 16), _mm512_loadu_ps(row + k));
      _mm512_storeu_si512(to + k, reinterpret_cast<__m512i>(both));
    }
    if (k < K) {  // the rest through a zero-padded buffer (also pads an odd K's last pair)
      float rest[32] = {};
      std::memcpy(rest, row + k, sizeof(float) * (K - k));
      uint16_t rounded[32];
      const __m512bh both = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(rest + 16), _mm512_loadu_ps(rest));
      _mm512_storeu_si512(rounded, reinterpret_cast<__m512i>(both));
      std::memcpy(to + k, rounded, sizeof(uint16_t) * (2 * num_pairs - k));
    }
  }
}

template <int Rows>
RNNKIT_BF16_TARGET inline void block(const uint32_t* a_pairs, int64_t num_pairs, const uint16_t* panel, float* c,
                                     int64_t ldc, int64_t cols, const float* bias, bool accumulate) {
  __m512 acc[Rows][2];
  for (int i = 0; i < Rows; ++i) {
    float init[kWidth] = {};
    const float* from = accumulate ? c + i * ldc : bias;
    if (from != nullptr) std::memcpy(init, from, sizeof(float) * cols);
    acc[i][0] = _mm512_loadu_ps(init);
    acc[i][1] = _mm512_loadu_ps(init + 16);
  }
  for (int64_t p = 0; p < num_pairs; ++p) {
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(panel + p * 2 * kWidth));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(panel + p * 2 * kWidth + kWidth));
    for (int i = 0; i < Rows; ++i) {
      const __m512bh a_ip = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a_pairs[i * num_pairs + p])));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a_ip, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a_ip, b1);
    }
  }
  for (int i = 0; i < Rows; ++i) {
    if (cols == kWidth) {
      _mm512_storeu_ps(c + i * ldc, acc[i][0]);
      _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
    } else {
      float out[kWidth];
      _mm512_storeu_ps(out, acc[i][0]);
      _mm512_storeu_ps(out + 16, acc[i][1]);
      std::memcpy(c + i * ldc, out, sizeof(float) * cols);
    }
  }
}

// C (rows x N) = init + A B: A's rows already in bfloat16 pairs (round_rows_to_pairs), B packed as above.
RNNKIT_BF16_TARGET inline void multiply(const uint32_t* a_pairs, int64_t rows, const uint16_t* panels, int64_t K,
                                        int64_t N, float* c, int64_t ldc, const float* bias, bool accumulate) {
  const int64_t num_pairs = (K + 1) / 2;
  for (int64_t j = 0; j < N; j += kWidth) {
    const uint16_t* panel = panels + (j / kWidth) * num_pairs * 2 * kWidth;
    const int64_t cols = N - j < kWidth ? N - j : kWidth;
    const float* panel_bias = bias != nullptr ? bias + j : nullptr;
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows) {
      block<kRows>(a_pairs + r * num_pairs, num_pairs, panel, c + r * ldc + j, ldc, cols, panel_bias, accumulate);
    }
    switch (rows - r) {
      case 3: block<3>(a_pairs + r * num_pairs, num_pairs, panel, c + r * ldc + j, ldc, cols, panel_bias, accumulate); break;
      case 2: block<2>(a_pairs + r * num_pairs, num_pairs, panel, c + r * ldc + j, ldc, cols, panel_bias, accumulate); break;
      case 1: block<1>(a_pairs + r * num_pairs, num_pairs, panel, c + r * ldc + j, ldc, cols, panel_bias, accumulate); break;
      default: break;
    }
  }
}

#undef RNNKIT_BF16_TARGET

}  // namespace rnnkit::cpu::avx512_bf16
