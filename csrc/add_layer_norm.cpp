// add_layer_norm.cpp: out = LayerNorm(x + y) * gamma + beta over rows, in one pass per row.
//
// What: BERT's post-LayerNorm residual step (after the attention output and the FFN down
// projection) for the host CPU of the int8 targets, where PyTorch spends two memory passes and
// two kernels (add, then layer_norm) on it. fp32 throughout: the sum, the mean, the variance
// (two-pass, of the values minus the mean) in 16 partial sums per row, 1 / sqrt(var + eps) in
// fp32. Not bit-identical to torch.nn.functional.layer_norm (summation order), within a few fp32
// ulps of it; tests bound the difference. An AVX-512 path and a portable one (chosen at run time).
#include "add_layer_norm.h"

#include <cmath>
#include <stdexcept>

#include "simd.h"

#include "thread_pool.h"

namespace bertqa {
namespace {

#define LN_AVX512_TARGET __attribute__((target("avx512f,avx512dq,fma")))

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

LN_AVX512_TARGET void row_avx512(const float* x, const float* y, const float* gamma,
                                 const float* beta, float eps, int64_t N, float* out) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < N; i += 16) {
    const __mmask16 m = tail_mask(N - i);
    const __m512 t = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
    _mm512_mask_storeu_ps(out + i, m, t);
    sum = _mm512_add_ps(sum, t);
  }
  const float mean = _mm512_reduce_add_ps(sum) / float(N);
  const __m512 vmean = _mm512_set1_ps(mean);
  __m512 sq = _mm512_setzero_ps();
  for (int64_t i = 0; i < N; i += 16) {
    const __mmask16 m = tail_mask(N - i);
    const __m512 c = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, out + i), vmean);
    sq = _mm512_fmadd_ps(c, c, sq);
  }
  const float rstd = 1.0f / std::sqrt(_mm512_reduce_add_ps(sq) / float(N) + eps);
  const __m512 vrstd = _mm512_set1_ps(rstd);
  for (int64_t i = 0; i < N; i += 16) {
    const __mmask16 m = tail_mask(N - i);
    const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, out + i), vmean), vrstd);
    const __m512 r = _mm512_fmadd_ps(c, _mm512_maskz_loadu_ps(m, gamma + i), _mm512_maskz_loadu_ps(m, beta + i));
    _mm512_mask_storeu_ps(out + i, m, r);
  }
}

void row_portable(const float* x, const float* y, const float* gamma, const float* beta, float eps,
                  int64_t N, float* out) {
  float part[16] = {0};
  for (int64_t i = 0; i < N; ++i) {
    out[i] = x[i] + y[i];
    part[i % 16] += out[i];
  }
  float sum = 0;
  for (float p : part) sum += p;
  const float mean = sum / float(N);
  float sq[16] = {0};
  for (int64_t i = 0; i < N; ++i) sq[i % 16] += (out[i] - mean) * (out[i] - mean);
  float var = 0;
  for (float p : sq) var += p;
  const float rstd = 1.0f / std::sqrt(var / float(N) + eps);
  for (int64_t i = 0; i < N; ++i) out[i] = (out[i] - mean) * rstd * gamma[i] + beta[i];
}

bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
}

}  // namespace

void add_layer_norm(const float* x, const float* y, const float* gamma, const float* beta,
                    float eps, int64_t M, int64_t N, float* out, int nthreads, bool portable) {
  if (N < 1) throw std::invalid_argument("add_layer_norm needs rows of at least one value");
  static const bool avx512 = has_avx512();
  const auto row = avx512 && !portable ? row_avx512 : row_portable;
  const bool parallel = nthreads > 1 && M * N >= (1 << 15);
  run_team(parallel ? nthreads : 1, [&](const Team& team) {
    int64_t begin, end;
    team.share(M, &begin, &end);
    for (int64_t m = begin; m < end; ++m) row(x + m * N, y + m * N, gamma, beta, eps, N, out + m * N);
  });
}

}  // namespace bertqa
