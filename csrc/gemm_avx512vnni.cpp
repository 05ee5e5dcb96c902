// gemm_avx512vnni.cpp: the AVX-512 VNNI path of the native int8 Linear (the fast one).
//
// vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes and adds the 4 products to an int32
// lane. Activations are stored as u8 = xq + 128 (an exact XOR of the sign bit), so
//   sum_k (xq + 128) * wq = acc + 128 * sum_k wq[n, k],
// and the per-column compensation 128 * sum_k wq[n, k] (precomputed at pack time) is subtracted
// before requantization: acc stays exact while |(xq + 128) * wq| summed over K fits int32,
// i.e. K <= kMaxKOffsetU8 = 66311 (a larger K takes the AVX2 path: int8_linear_module.cpp).
//
// Weights are packed once into panels of kNR = 48 columns; inside a panel each k-group of 4 is
// 48 x 4 bytes, so one zmm load gives 16 columns x 4 k, the vpdpbusd operand. The microtile is
// up to kMR = 8 rows x 48 columns: 24 zmm accumulators + 3 weight registers + 1 broadcast.
// Every microtile runs the whole K in registers, then its epilogue (through a 1.5 KiB stack
// tile): compensation, int16 shift-round-saturate (counting saturations), dequant
// (sx * sw) * 2^s, bias, optional GELU, masked stores for the N tail. Tails in M and N use
// smaller instantiations of the same template. Measured on one Zen 4 core (thread CPU time):
// the whole call runs at 88-94% of the vpdpbusd peak on the BERT-large shapes.
#include "int8_linear.h"

#include "simd.h"

#include "vec_gelu.h"

#define TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

namespace bertqa {
namespace {

constexpr int kMR = 8;                 // rows per microtile
constexpr int kNV = 3;                 // zmm (16 columns each) per microtile
constexpr int64_t kNR = 16 * kNV;      // panel width in columns
constexpr int64_t kGroupBytes = kNR * 4;

void pack_weights_vnni(PackedLinear& W, const int8_t* wq) {
  const int64_t groups = W.Kp / 4;
  W.packed.resize(size_t(W.Np * W.Kp));                       // zero: K and N padding
  W.col_comp.resize(size_t(W.Np));
  int8_t* dst = W.packed.data();
  for (int64_t n = 0; n < W.N; ++n) {
    int8_t* panel = dst + (n / kNR) * groups * kGroupBytes + (n % kNR) * 4;
    int32_t sum = 0;
    for (int64_t k = 0; k < W.K; ++k) {
      panel[(k / 4) * kGroupBytes + k % 4] = wq[n * W.K + k];
      sum += wq[n * W.K + k];
    }
    W.col_comp.data()[n] = 128 * sum;
  }
}

// v = x, or x * scale (one fp32 multiply: the smoothing of IsaKernels in int8_linear.h), for
// the 16 lanes at x + i, or those that `valid` selects (the others 0). kScaled is a template
// parameter so that the loops without a scale stay as they were.
template <bool kScaled>
TARGET_VNNI inline __m512 load_row(const float* x, const float* scale, int64_t i) {
  const __m512 v = _mm512_loadu_ps(x + i);
  return kScaled ? _mm512_mul_ps(v, _mm512_loadu_ps(scale + i)) : v;
}

template <bool kScaled>
TARGET_VNNI inline __m512 load_row(const float* x, const float* scale, int64_t i,
                                   __mmask16 valid) {
  const __m512 v = _mm512_maskz_loadu_ps(valid, x + i);
  return kScaled ? _mm512_mul_ps(v, _mm512_maskz_loadu_ps(valid, scale + i)) : v;
}

template <bool kScaled>
TARGET_VNNI uint32_t abs_max_bits_avx512_t(const float* x, const float* scale, int64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  __m512i m0 = _mm512_setzero_si512(), m1 = m0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i v0 = _mm512_castps_si512(load_row<kScaled>(x, scale, i));
    const __m512i v1 = _mm512_castps_si512(load_row<kScaled>(x, scale, i + 16));
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(v0, abs_mask));
    m1 = _mm512_max_epu32(m1, _mm512_and_si512(v1, abs_mask));
  }
  for (; i < n; i += 16) {
    const __mmask16 valid = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512i v = _mm512_castps_si512(load_row<kScaled>(x, scale, i, valid));
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(v, abs_mask));
  }
  return _mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1));
}

TARGET_VNNI uint32_t abs_max_bits_avx512(const float* x, const float* scale, int64_t n) {
  return scale ? abs_max_bits_avx512_t<true>(x, scale, n)
               : abs_max_bits_avx512_t<false>(x, scale, n);
}

// u8 = clamp(rint(v * inv), -127, 127) + 128; stores whole 16-byte chunks: lanes past K hold 0
// -> 128, which covers the K..Kp padding (rows have room: lda in int8_linear_runtime.cpp).
// Clamping before rounding gives the same integers for finite products and keeps the
// reference's answer when 127 / amax overflowed to inf (amax < 3.7e-37): +-inf -> +-127, and
// 0 * inf = NaN -> 0 (a float -> int conversion would give INT_MIN for both). With a scale, v
// is recomputed exactly as abs_max_bits computed it (the same rounded product).
template <bool kScaled>
TARGET_VNNI void quantize_row_u8_avx512_t(const float* x, const float* scale, int64_t K,
                                          float inv, uint8_t* dst) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m128i sign = _mm_set1_epi8(char(0x80));
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 valid = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
    __m512 v = _mm512_mul_ps(load_row<kScaled>(x, scale, k, valid), vinv);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);      // NaN -> 0
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    const __m512i q = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k),
                     _mm_xor_si128(_mm512_cvtepi32_epi8(q), sign));
  }
}

TARGET_VNNI void quantize_row_u8_avx512(const float* x, const float* scale, int64_t K,
                                        int64_t Kp, float inv, uint8_t* dst) {
  (void)Kp;
  if (scale) quantize_row_u8_avx512_t<true>(x, scale, K, inv, dst);
  else quantize_row_u8_avx512_t<false>(x, scale, K, inv, dst);
}

// SPEC steps 4-5 (+ GELU) for a rows x (16 * vecs) tile of exact accumulators `tile` (row
// stride kNR), stored into y with the N tail masked off; with track_max_abs_acc also max |acc|
// over the valid lanes, after the compensation (calibration).
TARGET_VNNI void epilogue_vnni(const GemmCall& c, int64_t m0, int rows, int64_t n0, int vecs,
                               const int32_t* tile, GemmCounts* counts) {
  const PackedLinear& W = *c.W;
  const int64_t N = W.N;
  const __m512i half = _mm512_set1_epi32(W.shift ? 1 << (W.shift - 1) : 0);
  const __m128i count = _mm_cvtsi32_si128(W.shift);
  const __m512i qmin = _mm512_set1_epi32(kInt16Min), qmax = _mm512_set1_epi32(kInt16Max);
  const __m512 pow2_shift = _mm512_set1_ps(float(1 << W.shift));
  int64_t sat = 0;
  __m512i peak = _mm512_setzero_si512();
  for (int v = 0; v < vecs; ++v) {
    const int64_t n = n0 + 16 * v, left = N - n;
    const __mmask16 valid = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __m512i comp = _mm512_load_si512(W.col_comp.data() + n);
    const __m512 sw = _mm512_load_ps(W.sw.data() + n), bias = _mm512_load_ps(W.bias.data() + n);
    for (int r = 0; r < rows; ++r) {
      const int64_t m = m0 + r;
      __m512i q = _mm512_sub_epi32(_mm512_load_si512(tile + r * kNR + 16 * v), comp);
      if (c.dbg_acc) _mm512_mask_storeu_epi32(c.dbg_acc + m * N + n, valid, q);
      if (c.track_max_abs_acc) peak = _mm512_mask_max_epi32(peak, valid, peak, _mm512_abs_epi32(q));
      if (W.requant_i16) {
        q = _mm512_sra_epi32(_mm512_add_epi32(q, half), count);
        const __mmask16 out = _mm512_cmpgt_epi32_mask(q, qmax) | _mm512_cmplt_epi32_mask(q, qmin);
        sat += _mm_popcnt_u32(unsigned(out & valid));
        q = _mm512_min_epi32(_mm512_max_epi32(q, qmin), qmax);
      }
      if (c.dbg_q) _mm512_mask_storeu_epi32(c.dbg_q + m * N + n, valid, q);
      const __m512 mult = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(c.sx[m]), sw), pow2_shift);
      __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(q), mult), bias);
      if (W.gelu) y = gelu_avx512(y);
      _mm512_mask_storeu_ps(c.y + m * N + n, valid, y);
    }
  }
  counts->saturated += sat;
  if (c.track_max_abs_acc) {
    const int32_t a = _mm512_reduce_max_epi32(peak);
    counts->max_abs_acc = a > counts->max_abs_acc ? a : counts->max_abs_acc;
  }
}

// The accumulators of one microtile live in registers over the whole K, then go through a small
// stack tile to the epilogue: with the epilogue reading the registers directly GCC 12 spilled
// them on every k-group. `#pragma GCC unroll`: likewise, without it GCC scalarizes the arrays of
// vectors too late and keeps them in memory.
template <int MR, int NV>
TARGET_VNNI void microtile_vnni(const GemmCall& c, int64_t m0, int64_t panel, GemmCounts* counts) {
  const PackedLinear& W = *c.W;
  const int64_t groups = W.Kp / 4;
  const uint8_t* a = c.A + m0 * c.lda;
  const int8_t* b = W.packed.data() + panel * groups * kGroupBytes;
  __m512i acc[MR][NV];
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  for (int64_t g = 0; g < groups; ++g, b += kGroupBytes) {
    __m512i wv[NV];
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) wv[v] = _mm512_load_si512(b + 64 * v);
    #pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, a + r * c.lda + 4 * g, 4);
      const __m512i av = _mm512_set1_epi32(a4);
      #pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, wv[v]);
    }
  }
  alignas(64) int32_t tile[MR * kNR];
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) _mm512_store_si512(tile + r * kNR + 16 * v, acc[r][v]);
  epilogue_vnni(c, m0, MR, panel * kNR, NV, tile, counts);
}

using MicrotileFn = void (*)(const GemmCall&, int64_t, int64_t, GemmCounts*);

#define BERTQA_ROWS(NV) \
  {microtile_vnni<1, NV>, microtile_vnni<2, NV>, microtile_vnni<3, NV>, microtile_vnni<4, NV>, \
   microtile_vnni<5, NV>, microtile_vnni<6, NV>, microtile_vnni<7, NV>, microtile_vnni<8, NV>}
// [columns in zmm - 1][rows - 1]
const MicrotileFn kMicrotiles[kNV][kMR] = {BERTQA_ROWS(1), BERTQA_ROWS(2), BERTQA_ROWS(3)};
#undef BERTQA_ROWS

GemmCounts gemm_vnni(const GemmCall& c, int nthreads) {
  GemmCounts counts;
  for_each_claimed_tile(c, nthreads, kMR, kNR, 16,
                        [&](int64_t m0, int64_t panel, int64_t rows, int64_t vecs) {
                          kMicrotiles[vecs - 1][rows - 1](c, m0, panel, &counts);
                        });
  return counts;
}

}  // namespace

const IsaKernels kAvx512VnniKernels = {
    "avx512vnni", 4, kNR, ActFormat::u8_plus128, 1,
    pack_weights_vnni, abs_max_bits_avx512, quantize_row_u8_avx512, gemm_vnni,
};

}  // namespace bertqa
