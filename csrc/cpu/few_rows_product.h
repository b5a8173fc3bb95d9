// The products of a call with few rows (a one-step call of a batch of 1 to 4: a decoder's step),
// split across threads by the weight's rows or columns.
//
// Why not at::mm, as the loop's other products: with a single row the product is a matrix-vector
// one, bound by reading the weight, and MKL runs it on one thread whatever torch's thread count.
// Measured on the AVX-512 EPYC (2 threads), x W^T with W (768, 256) float32 (a GRU's W_hh at H = 256)
// took 19.5 us in MKL at one row; W_ih and W_hh together (1.5 MB) do not stay in one core's 1 MB L2,
// so every call reads them from L3.  Split across the threads, each core reads its own half of both,
// which stays in its L2 from one call to the next.
#pragma once

#include <cstdint>

namespace rnnkit::cpu {

// Rows at most this many take these products (more rows reuse each weight element enough for MKL's
// blocked kernels to win).
constexpr int64_t kFewRows = 4;

// Whether a product of `rows` rows against a (M, K) weight takes the few-rows kernels: few rows, more
// than one thread to split across, and a weight large enough to repay the fork (16K elements).
bool few_rows_product(int64_t rows, int64_t m, int64_t k);

// c[r][j] = bias[j] + sum_k a[r][k] w[j][k]  (c = a w^T + bias; bias nullable: 0), r < rows, j < M:
// w (M, K) row-major; a's rows `lda` apart, c's `ldc`.  Split by the rows of w.
template <typename scalar_t>
void few_rows_times_transpose(const scalar_t* a, int64_t lda, int64_t rows, const scalar_t* w, int64_t m,
                              int64_t k, const scalar_t* bias, scalar_t* c, int64_t ldc);

// c[r][j] (+)= sum_i a[r][i] w[i][j]  (c = a w, or c += a w when accumulate), r < rows, j < K:
// w (M, K) row-major; a's rows `lda` apart, c's `ldc`.  Split by the columns of w.
template <typename scalar_t>
void few_rows_times(const scalar_t* a, int64_t lda, int64_t rows, const scalar_t* w, int64_t m, int64_t k,
                    scalar_t* c, int64_t ldc, bool accumulate);

}  // namespace rnnkit::cpu
