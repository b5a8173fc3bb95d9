// The register-blocked kernel of PackedMatrix::multiply for one ISA.  Included once per ISA by
// recurrent_product.cpp with RNNKIT_ISA (the namespace), RNNKIT_TARGET (the function attribute that
// lets the compiler use that ISA's instructions) and RNNKIT_VECTOR_BYTES (32 or 64) defined.
//
// A block of kRows rows of C times one panel (kPanelVectors vectors wide) lives in kRows *
// kPanelVectors vector registers for the whole k loop; each k step loads the panel's row once and
// broadcasts one element of A per row: kRows * kPanelVectors FMAs per (kPanelVectors loads + kRows
// broadcasts), and no horizontal sum anywhere.  4 x 2 vectors uses 8 accumulators + 2 + 1 registers,
// within AVX2's 16.
#include <cstdint>
#include <cstring>

namespace rnnkit::cpu::RNNKIT_ISA {

template <typename T>
struct VectorOf;
template <>
struct VectorOf<float> {
  typedef float type __attribute__((vector_size(RNNKIT_VECTOR_BYTES)));
};
template <>
struct VectorOf<double> {
  typedef double type __attribute__((vector_size(RNNKIT_VECTOR_BYTES)));
};

constexpr int kPanelVectors = 2;
constexpr int kRows = 4;

template <typename T>
constexpr int64_t panel_width() {
  return kPanelVectors * RNNKIT_VECTOR_BYTES / static_cast<int64_t>(sizeof(T));
}

// rows (1..kRows, a compile-time constant) rows of C times one panel; `cols` of the panel's columns
// are C's (the rest is the zero padding of the last panel).
template <typename T, int Rows>
RNNKIT_TARGET inline void block(const T* a, int64_t lda, const T* panel, int64_t K, T* c, int64_t ldc,
                                int64_t cols, const T* bias, bool accumulate) {
  using V = typename VectorOf<T>::type;
  constexpr int64_t kLanes = sizeof(V) / sizeof(T);
  constexpr int64_t kWidth = kPanelVectors * kLanes;
  const bool full = cols == kWidth;
  V acc[Rows][kPanelVectors];
  // The initial values: C's rows (accumulate), the bias, or zero; a partial panel through a buffer.
  for (int i = 0; i < Rows; ++i) {
    T init[kWidth] = {};
    const T* from = accumulate ? c + i * ldc : bias;
    if (from != nullptr) std::memcpy(init, from, sizeof(T) * cols);
    for (int v = 0; v < kPanelVectors; ++v) std::memcpy(&acc[i][v], init + v * kLanes, sizeof(V));
  }
  for (int64_t k = 0; k < K; ++k) {
    V b[kPanelVectors];
    for (int v = 0; v < kPanelVectors; ++v) std::memcpy(&b[v], panel + k * kWidth + v * kLanes, sizeof(V));
    for (int i = 0; i < Rows; ++i) {
      // The element broadcast to every lane.  (x - 0, not 0 + x: the compiler drops a subtraction of
      // zero, which keeps x's sign, and broadcasts straight from memory; the addition it must keep, and
      // its add-then-shuffle per element took issue slots from the FMAs: the LSTM forward at
      // (T, B, H) = (100, 32, 256) took 1.29x torch.nn's time before, 1.21x after.)
      const V a_ik = a[i * lda + k] - V{};
      for (int v = 0; v < kPanelVectors; ++v) acc[i][v] += a_ik * b[v];
    }
  }
  for (int i = 0; i < Rows; ++i) {
    if (full) {
      for (int v = 0; v < kPanelVectors; ++v) std::memcpy(c + i * ldc + v * kLanes, &acc[i][v], sizeof(V));
    } else {
      T out[kWidth];
      for (int v = 0; v < kPanelVectors; ++v) std::memcpy(out + v * kLanes, &acc[i][v], sizeof(V));
      std::memcpy(c + i * ldc, out, sizeof(T) * cols);
    }
  }
}

// C (rows x N) = init + A (rows x K) B, B packed in panels of panel_width<T>() columns.  Panel by
// panel, every block of rows: a panel (K * width elements: 64 KiB at K = 256 in float32) stays in the
// core's cache while all the rows pass over it, so B is read from memory once per product.
template <typename T>
RNNKIT_TARGET void multiply(const T* a, int64_t lda, int64_t rows, const T* panels, int64_t K, int64_t N, T* c,
                            int64_t ldc, const T* bias, bool accumulate) {
  constexpr int64_t kWidth = panel_width<T>();
  for (int64_t j = 0; j < N; j += kWidth) {
    const T* panel = panels + (j / kWidth) * K * kWidth;
    const int64_t cols = N - j < kWidth ? N - j : kWidth;
    const T* panel_bias = bias != nullptr ? bias + j : nullptr;
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows) {
      block<T, kRows>(a + r * lda, lda, panel, K, c + r * ldc + j, ldc, cols, panel_bias, accumulate);
    }
    switch (rows - r) {
      case 3: block<T, 3>(a + r * lda, lda, panel, K, c + r * ldc + j, ldc, cols, panel_bias, accumulate); break;
      case 2: block<T, 2>(a + r * lda, lda, panel, K, c + r * ldc + j, ldc, cols, panel_bias, accumulate); break;
      case 1: block<T, 1>(a + r * lda, lda, panel, K, c + r * ldc + j, ldc, cols, panel_bias, accumulate); break;
      default: break;
    }
  }
}

}  // namespace rnnkit::cpu::RNNKIT_ISA
