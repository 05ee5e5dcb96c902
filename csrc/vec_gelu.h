// vec_gelu.h: exact (erf) GELU on 16 (AVX-512) or 8 (AVX2) fp32 lanes, fused into the GEMM store,
// and the exp it is built on (the native attention's softmax uses it too).
//
//   gelu(y) = y * Phi(y),  z = |y| / sqrt(2),  h = erfc(z) / 2,  Phi = (y >= 0) ? 1 - h : h
//   erfc(z) = exp(-z^2) * R(t),  t = 1 / (1 + z/2),  R a degree-9 polynomial fitted by
//   csrc/fit_gelu_erfc.py (relative error ~4e-7 in fp32), exp by Cody-Waite reduction and a
//   degree-7 Taylor polynomial. Taking the tail from erfc keeps y < 0 accurate relative to the
//   tiny result; for y >= 0 the error is ~2e-7 * |y|. Included only by the ISA files, after
//   <immintrin.h>; the functions are static so no other translation unit can pick them up.
#pragma once

#include "simd.h"

namespace bertqa {
namespace vec_gelu {

constexpr float kR[10] = {-7.845733424e-06f, 2.822605320e-01f, 2.807443047e-01f,
                          2.515767118e-01f,  1.757294532e-01f, 2.800084485e-02f,
                          2.073377452e-01f,  -4.305871590e-01f, 2.590737764e-01f,
                          -5.412839379e-02f};
constexpr float kExp[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720,
                           1.0f / 5040};
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;         // few mantissa bits: n * kLn2Hi is exact
constexpr float kLn2Lo = 1.428606765330187045e-06f;
constexpr float kExpMin = -87.0f;                    // exp(-87) is still a normal fp32
constexpr float kRsqrt2 = 0.70710678118654752f;

}  // namespace vec_gelu

// exp(x) for x <= 0 (NaN stays NaN): Cody-Waite reduction to |f| <= ln2/2 and a Taylor
// polynomial of degree `Degree` (7: ~1e-7 relative, what the GELU needs; 5: ~3e-6), x clamped at
// kExpMin (exp(-87) ~ 1.6e-38, the smallest result; callers that need 0 mask it).
template <int Degree = 7>
__attribute__((target("avx512f,avx512dq,fma"))) static inline __m512 exp_nonpositive_avx512(__m512 x) {
  using namespace vec_gelu;
  static_assert(Degree >= 1 && Degree <= 7, "kExp holds the Taylor coefficients up to degree 7");
  x = _mm512_max_ps(x, _mm512_set1_ps(kExpMin));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  f = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), f);
  __m512 p = _mm512_set1_ps(kExp[Degree]);
  for (int i = Degree - 1; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp[i]));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f,avx512dq,fma"))) static inline __m512 gelu_avx512(__m512 y) {
  using namespace vec_gelu;
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(y), _mm512_set1_ps(kRsqrt2));
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), one));
  __m512 r = _mm512_set1_ps(kR[9]);
  for (int i = 8; i >= 0; --i) r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(kR[i]));
  const __m512 e = exp_nonpositive_avx512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
  const __m512 h = _mm512_mul_ps(_mm512_mul_ps(e, r), _mm512_set1_ps(0.5f));
  const __mmask16 nonneg = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __m512 phi = _mm512_mask_sub_ps(h, nonneg, one, h);
  return _mm512_mul_ps(y, phi);
}

// exp_nonpositive_avx512 on 8 lanes (AVX2 has no scalef: 2^n is built in the exponent field),
// for G vectors at once in place: each step runs on all G before the next (see gelu_avx2_n).
template <int Degree, int G>
__attribute__((target("avx2,fma"))) static inline void exp_nonpositive_avx2_n(__m256* x) {
  using namespace vec_gelu;
  static_assert(Degree >= 1 && Degree <= 7, "kExp holds the Taylor coefficients up to degree 7");
  __m256 n[G], p[G];
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) {
    x[j] = _mm256_max_ps(x[j], _mm256_set1_ps(kExpMin));
    n[j] = _mm256_round_ps(_mm256_mul_ps(x[j], _mm256_set1_ps(kLog2e)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) x[j] = _mm256_fnmadd_ps(n[j], _mm256_set1_ps(kLn2Hi), x[j]);
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) x[j] = _mm256_fnmadd_ps(n[j], _mm256_set1_ps(kLn2Lo), x[j]);
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) p[j] = _mm256_set1_ps(kExp[Degree]);
  #pragma GCC unroll 16
  for (int i = Degree - 1; i >= 0; --i)
    #pragma GCC unroll 16
    for (int j = 0; j < G; ++j) p[j] = _mm256_fmadd_ps(p[j], x[j], _mm256_set1_ps(kExp[i]));
  // 2^n for n in [-126, 0]: the exponent field (n + 127) << 23
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) {
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n[j]), _mm256_set1_epi32(127)), 23);
    x[j] = _mm256_mul_ps(p[j], _mm256_castsi256_ps(bits));
  }
}

template <int Degree = 7>
__attribute__((target("avx2,fma"))) static inline __m256 exp_nonpositive_avx2(__m256 x) {
  exp_nonpositive_avx2_n<Degree, 1>(&x);
  return x;
}

// gelu_avx512 on 8 lanes, for G vectors at once in place. One vector's chain (a division, then
// the erfc polynomial, beside the exp) is ~60 cycles of latency against ~40 operations: one at a
// time, the out-of-order window fills with its waiting operations and the epilogue runs at the
// chain's latency. In lockstep, each step's G operations are independent. Each lane's
// arithmetic is the same whatever G: the results are bit for bit those of gelu_avx2.
template <int G>
__attribute__((target("avx2,fma"))) static inline void gelu_avx2_n(__m256* y) {
  using namespace vec_gelu;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 z[G], t[G], r[G];
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) {
    z[j] = _mm256_mul_ps(_mm256_andnot_ps(sign, y[j]), _mm256_set1_ps(kRsqrt2));
    t[j] = _mm256_div_ps(one, _mm256_fmadd_ps(z[j], _mm256_set1_ps(0.5f), one));
    z[j] = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z[j], z[j]));   // -z^2: exp's input
  }
  exp_nonpositive_avx2_n<7, G>(z);
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) r[j] = _mm256_set1_ps(kR[9]);
  #pragma GCC unroll 16
  for (int i = 8; i >= 0; --i)
    #pragma GCC unroll 16
    for (int j = 0; j < G; ++j) r[j] = _mm256_fmadd_ps(r[j], t[j], _mm256_set1_ps(kR[i]));
  #pragma GCC unroll 16
  for (int j = 0; j < G; ++j) {
    const __m256 h = _mm256_mul_ps(_mm256_mul_ps(z[j], r[j]), _mm256_set1_ps(0.5f));
    const __m256 nonneg = _mm256_cmp_ps(y[j], _mm256_setzero_ps(), _CMP_GE_OQ);
    const __m256 phi = _mm256_blendv_ps(h, _mm256_sub_ps(one, h), nonneg);
    y[j] = _mm256_mul_ps(y[j], phi);
  }
}

__attribute__((target("avx2,fma"))) static inline __m256 gelu_avx2(__m256 y) {
  gelu_avx2_n<1>(&y);
  return y;
}

}  // namespace bertqa
