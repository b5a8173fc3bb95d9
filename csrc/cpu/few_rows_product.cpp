// The few-rows products (few_rows_product.h): matrix-vector kernels on ATen's vectors, one call
// split across torch's threads.
#include "few_rows_product.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "vector_math.h"

namespace rnnkit::cpu {

bool few_rows_product(int64_t rows, int64_t m, int64_t k) {
  return rows <= kFewRows && at::get_num_threads() > 1 && !at::in_parallel_region() && m * k >= 16384;
}

namespace {

// Each thread takes a contiguous share of `count` (rows or columns of w), in multiples of `align`.
template <typename F>
void split(int64_t count, int64_t align, const F& body) {
  const int64_t threads = at::get_num_threads();
  const int64_t share = ((count + threads - 1) / threads + align - 1) / align * align;
  at::parallel_for(0, count, share, body);
}

}  // namespace

template <typename scalar_t>
void few_rows_times_transpose(const scalar_t* a, int64_t lda, int64_t rows, const scalar_t* w, int64_t m,
                              int64_t k, const scalar_t* bias, scalar_t* c, int64_t ldc) {
  constexpr int64_t kRowsAtOnce = 4;  // rows of w sharing each load of a's row
  split(m, kRowsAtOnce, [&](int64_t first, int64_t last) {
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* x = a + r * lda;
      int64_t j = first;
      for (; j + kRowsAtOnce <= last; j += kRowsAtOnce) {
        Vec<scalar_t> sum0(0), sum1(0), sum2(0), sum3(0);
        const scalar_t* w0 = w + j * k;
        for_each_vector<scalar_t>(k, [&](int64_t i, int64_t n) {
          const Vec<scalar_t> xv = load(x + i, n);
          sum0 = at::vec::fmadd(load(w0 + i, n), xv, sum0);
          sum1 = at::vec::fmadd(load(w0 + k + i, n), xv, sum1);
          sum2 = at::vec::fmadd(load(w0 + 2 * k + i, n), xv, sum2);
          sum3 = at::vec::fmadd(load(w0 + 3 * k + i, n), xv, sum3);
        });
        const Vec<scalar_t>* sums[kRowsAtOnce] = {&sum0, &sum1, &sum2, &sum3};
        for (int64_t q = 0; q < kRowsAtOnce; ++q) {
          const scalar_t total = at::vec::vec_reduce_all<scalar_t>(
              [](const Vec<scalar_t>& u, const Vec<scalar_t>& v) { return u + v; }, *sums[q]);
          c[r * ldc + j + q] = (bias != nullptr ? bias[j + q] : scalar_t(0)) + total;
        }
      }
      for (; j < last; ++j) {  // rows of w past the last group of kRowsAtOnce
        Vec<scalar_t> sum(0);
        for_each_vector<scalar_t>(k, [&](int64_t i, int64_t n) { sum = at::vec::fmadd(load(w + j * k + i, n), load(x + i, n), sum); });
        c[r * ldc + j] = (bias != nullptr ? bias[j] : scalar_t(0)) +
                         at::vec::vec_reduce_all<scalar_t>(
                             [](const Vec<scalar_t>& u, const Vec<scalar_t>& v) { return u + v; }, sum);
      }
    }
  });
}

template <typename scalar_t>
void few_rows_times(const scalar_t* a, int64_t lda, int64_t rows, const scalar_t* w, int64_t m, int64_t k,
                    scalar_t* c, int64_t ldc, bool accumulate) {
  // Each thread owns columns [first, last) of w and of c: c[r][first:last] = sum_i a[r][i] w[i][first:last].
  split(k, Vec<scalar_t>::size(), [&](int64_t first, int64_t last) {
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* x = a + r * lda;
      scalar_t* out = c + r * ldc;
      if (!accumulate) std::fill(out + first, out + last, scalar_t(0));
      int64_t i = 0;
      for (; i + 4 <= m; i += 4) {  // four rows of w per pass over c's columns
        const Vec<scalar_t> x0(x[i]), x1(x[i + 1]), x2(x[i + 2]), x3(x[i + 3]);
        const scalar_t* w0 = w + i * k;
        for_each_vector<scalar_t>(last - first, [&](int64_t o, int64_t n) {
          const int64_t j = first + o;
          Vec<scalar_t> sum = load(out + j, n);
          sum = at::vec::fmadd(load(w0 + j, n), x0, sum);
          sum = at::vec::fmadd(load(w0 + k + j, n), x1, sum);
          sum = at::vec::fmadd(load(w0 + 2 * k + j, n), x2, sum);
          sum = at::vec::fmadd(load(w0 + 3 * k + j, n), x3, sum);
          store(sum, out + j, n);
        });
      }
      for (; i < m; ++i) {
        const Vec<scalar_t> xi(x[i]);
        for_each_vector<scalar_t>(last - first, [&](int64_t o, int64_t n) {
          const int64_t j = first + o;
          store(at::vec::fmadd(load(w + i * k + j, n), xi, load(out + j, n)), out + j, n);
        });
      }
    }
  });
}

template void few_rows_times_transpose<float>(const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                                              const float*, float*, int64_t);
template void few_rows_times_transpose<double>(const double*, int64_t, int64_t, const double*, int64_t, int64_t,
                                               const double*, double*, int64_t);
template void few_rows_times<float>(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t,
                                    bool);
template void few_rows_times<double>(const double*, int64_t, int64_t, const double*, int64_t, int64_t, double*,
                                     int64_t, bool);

}  // namespace rnnkit::cpu
