// gemm_avx2.cpp: the AVX2 path of the native int8 Linear (x86-64 CPUs without AVX-512 VNNI).
//
// vpmaddubsw (u8 x s8, pairs summed into int16) would saturate: 2 * 255 * 127 > 32767. This
// path uses vpmaddwd instead: int16 x int16 products, pairs summed into int32, exact (2 * 127 *
// 127 is far from overflow), then vpaddd into the accumulators. Activations are stored as int16
// rows; weights are sign-extended to int16 once, at pack time, into panels of kNR = 16 columns,
// each k-pair 16 x 2 int16, so that one ymm load gives 8 columns x 2 k. Microtile: up to kMR = 4
// rows x 16 columns: 8 ymm accumulators + 2 weights + 1 broadcast + 1 product, inside the 16 ymm
// registers (4 x 24 spilled one accumulator through the stack every k-pair, and extending int8
// weights in the loop cost a shuffle per load: together 110 -> 150 GOPS per core on Zen 4).
// The epilogue matches gemm_avx512vnni.cpp lane for lane (no compensation: no offset here).
#include "int8_linear.h"

#include "simd.h"

#include "vec_gelu.h"

#define TARGET_AVX2 __attribute__((target("avx2,fma,popcnt")))

namespace bertqa {
namespace {

constexpr int kMR = 4;
constexpr int kNV = 2;                 // ymm (8 columns each) per microtile
constexpr int64_t kNR = 8 * kNV;
constexpr int64_t kPairBytes = kNR * 4;   // int16 weights

void pack_weights_avx2(PackedLinear& W, const int8_t* wq) {
  const int64_t pairs = W.Kp / 2;
  W.packed.resize(size_t(W.Np * W.Kp * 2));
  W.col_comp.resize(size_t(W.Np));
  int16_t* dst = reinterpret_cast<int16_t*>(W.packed.data());
  for (int64_t n = 0; n < W.N; ++n) {
    int16_t* panel = dst + (n / kNR) * pairs * (kPairBytes / 2) + (n % kNR) * 2;
    for (int64_t k = 0; k < W.K; ++k) panel[(k / 2) * (kPairBytes / 2) + k % 2] = wq[n * W.K + k];
  }
}

TARGET_AVX2 __m256i tail_mask8(int64_t left) {   // lanes [0, left) all ones
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(left < 8 ? left : 8)), lane);
}

// v = x, or x * scale (one fp32 multiply: the smoothing of IsaKernels in int8_linear.h), for
// the 8 lanes at x + i, or those of `mask` (the others 0). kScaled is a template parameter so
// that the loops without a scale stay as they were.
template <bool kScaled>
TARGET_AVX2 inline __m256 load_row(const float* x, const float* scale, int64_t i) {
  const __m256 v = _mm256_loadu_ps(x + i);
  return kScaled ? _mm256_mul_ps(v, _mm256_loadu_ps(scale + i)) : v;
}

template <bool kScaled>
TARGET_AVX2 inline __m256 load_row(const float* x, const float* scale, int64_t i, __m256i mask) {
  const __m256 v = _mm256_maskload_ps(x + i, mask);
  return kScaled ? _mm256_mul_ps(v, _mm256_maskload_ps(scale + i, mask)) : v;
}

template <bool kScaled>
TARGET_AVX2 uint32_t abs_max_bits_avx2_t(const float* x, const float* scale, int64_t n) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256i m = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_castps_si256(load_row<kScaled>(x, scale, i)),
                                             abs_mask));
  if (i < n) {
    const __m256 v = load_row<kScaled>(x, scale, i, tail_mask8(n - i));
    m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_castps_si256(v), abs_mask));
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), m);
  uint32_t best = 0;
  for (uint32_t v : lanes) best = v > best ? v : best;
  return best;
}

TARGET_AVX2 uint32_t abs_max_bits_avx2(const float* x, const float* scale, int64_t n) {
  return scale ? abs_max_bits_avx2_t<true>(x, scale, n) : abs_max_bits_avx2_t<false>(x, scale, n);
}

// int16 xq rows; whole 8-lane chunks are stored, lanes past K hold 0 (covers the K..Kp pad;
// rows have room: lda in int8_linear_runtime.cpp). Clamped before rounding, NaN (0 * inf when
// 127 / amax overflowed) to 0, v recomputed as abs_max_bits did: as in gemm_avx512vnni.cpp.
template <bool kScaled>
TARGET_AVX2 void quantize_row_i16_avx2_t(const float* x, const float* scale, int64_t K,
                                         float inv, uint8_t* dst) {
  int16_t* xq = reinterpret_cast<int16_t*>(dst);
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int64_t k = 0; k < K; k += 8) {
    __m256 v = _mm256_mul_ps(load_row<kScaled>(x, scale, k, tail_mask8(K - k)), vinv);
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));                  // NaN -> 0
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    const __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256i q = _mm256_cvtps_epi32(r);
    q = _mm256_permute4x64_epi64(_mm256_packs_epi32(q, q), 0x08);   // 8 x int16 in the low half
    _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + k), _mm256_castsi256_si128(q));
  }
}

TARGET_AVX2 void quantize_row_i16_avx2(const float* x, const float* scale, int64_t K, int64_t Kp,
                                       float inv, uint8_t* dst) {
  (void)Kp;
  if (scale) quantize_row_i16_avx2_t<true>(x, scale, K, inv, dst);
  else quantize_row_i16_avx2_t<false>(x, scale, K, inv, dst);
}

// SPEC steps 4-5 (+ GELU) for an MR x (8 * NV) tile of exact accumulators (row stride kNR);
// with track_max_abs_acc also max |acc| over the valid lanes (calibration). With kGelu the
// tile's MR * NV GELUs run in lockstep (gelu_avx2_n) between the dequantization and the stores;
// without, each vector is stored as soon as it is dequantized. Not inlined: inlined into the
// microtile, the layer without GELU ran about 10 % slower (measured on Zen 3).
template <int MR, int NV, bool kGelu>
TARGET_AVX2 __attribute__((noinline)) void epilogue_avx2(const GemmCall& c, int64_t m0, int64_t n0,
                                                         const int32_t* tile, GemmCounts* counts) {
  const PackedLinear& W = *c.W;
  const int64_t N = W.N;
  const __m256i half = _mm256_set1_epi32(W.shift ? 1 << (W.shift - 1) : 0);
  const __m128i count = _mm_cvtsi32_si128(W.shift);
  const __m256i qmin = _mm256_set1_epi32(kInt16Min), qmax = _mm256_set1_epi32(kInt16Max);
  const __m256 pow2_shift = _mm256_set1_ps(float(1 << W.shift));
  int64_t sat = 0;
  __m256i peak = _mm256_setzero_si256();
  __m256 ys[NV * MR];
  #pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    const int64_t n = n0 + 8 * v;
    const __m256i valid = tail_mask8(N - n);
    const __m256 sw = _mm256_loadu_ps(W.sw.data() + n), bias = _mm256_loadu_ps(W.bias.data() + n);
    #pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const int64_t m = m0 + r;
      __m256i q = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile + r * kNR + 8 * v));
      if (c.dbg_acc) _mm256_maskstore_epi32(c.dbg_acc + m * N + n, valid, q);
      if (c.track_max_abs_acc)
        peak = _mm256_max_epi32(peak, _mm256_and_si256(_mm256_abs_epi32(q), valid));
      if (W.requant_i16) {
        q = _mm256_sra_epi32(_mm256_add_epi32(q, half), count);
        const __m256i out = _mm256_and_si256(
            _mm256_or_si256(_mm256_cmpgt_epi32(q, qmax), _mm256_cmpgt_epi32(qmin, q)), valid);
        sat += _mm_popcnt_u32(unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(out))));
        q = _mm256_min_epi32(_mm256_max_epi32(q, qmin), qmax);
      }
      if (c.dbg_q) _mm256_maskstore_epi32(c.dbg_q + m * N + n, valid, q);
      const __m256 mult = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(c.sx[m]), sw), pow2_shift);
      ys[v * MR + r] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), mult), bias);
      if (!kGelu) store8_avx2(c.y + m * N + n, ys[v * MR + r], valid, n + 8 <= N);
    }
  }
  if (kGelu) gelu_avx2_n<NV * MR>(ys);
  #pragma GCC unroll 16
  for (int v = 0; kGelu && v < NV; ++v) {
    const int64_t n = n0 + 8 * v;
    const __m256i valid = tail_mask8(N - n);
    #pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
      store8_avx2(c.y + (m0 + r) * N + n, ys[v * MR + r], valid, n + 8 <= N);
  }
  counts->saturated += sat;
  if (c.track_max_abs_acc) {
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), peak);
    for (int32_t a : lanes) counts->max_abs_acc = a > counts->max_abs_acc ? a : counts->max_abs_acc;
  }
}

// Accumulators in registers over the whole K, then through a stack tile to the epilogue (see
// gemm_avx512vnni.cpp for why, and for the `#pragma GCC unroll`).
template <int MR, int NV>
TARGET_AVX2 void microtile_avx2(const GemmCall& c, int64_t m0, int64_t panel, GemmCounts* counts) {
  const PackedLinear& W = *c.W;
  const int64_t pairs = W.Kp / 2;
  const uint8_t* a = c.A + m0 * c.lda;
  const int8_t* b = W.packed.data() + panel * pairs * kPairBytes;
  __m256i acc[MR][NV];
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_si256();
  for (int64_t g = 0; g < pairs; ++g, b += kPairBytes) {
    __m256i wv[NV];
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v)
      wv[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 32 * v));
    #pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      int32_t a2;
      std::memcpy(&a2, a + r * c.lda + 4 * g, 4);
      const __m256i av = _mm256_set1_epi32(a2);
      #pragma GCC unroll 16
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(av, wv[v]));
    }
  }
  alignas(32) int32_t tile[MR * kNR];
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v)
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * kNR + 8 * v), acc[r][v]);
  if (W.gelu) epilogue_avx2<MR, NV, true>(c, m0, panel * kNR, tile, counts);
  else epilogue_avx2<MR, NV, false>(c, m0, panel * kNR, tile, counts);
}

using MicrotileFn = void (*)(const GemmCall&, int64_t, int64_t, GemmCounts*);

#define BERTQA_ROWS(NV) \
  {microtile_avx2<1, NV>, microtile_avx2<2, NV>, microtile_avx2<3, NV>, microtile_avx2<4, NV>}
const MicrotileFn kMicrotiles[kNV][kMR] = {BERTQA_ROWS(1), BERTQA_ROWS(2)};
#undef BERTQA_ROWS

GemmCounts gemm_avx2(const GemmCall& c, int nthreads) {
  GemmCounts counts;
  for_each_claimed_tile(c, nthreads, kMR, kNR, 8,
                        [&](int64_t m0, int64_t panel, int64_t rows, int64_t vecs) {
                          kMicrotiles[vecs - 1][rows - 1](c, m0, panel, &counts);
                        });
  return counts;
}

}  // namespace

const IsaKernels kAvx2Kernels = {
    "avx2", 2, kNR, ActFormat::i16, 2,
    pack_weights_avx2, abs_max_bits_avx2, quantize_row_i16_avx2, gemm_avx2,
};

}  // namespace bertqa
