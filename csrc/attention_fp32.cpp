// attention_fp32.cpp: BERT self-attention (softmax(Q K^T / sqrt(d) + mask) V) in fp32 on AVX2.
//
// What: the native attention of the int8 CPU targets on CPUs without AVX512-BF16 (where
// attention_bf16.cpp cannot run), so that the whole int8 forward is native and can run on the
// native pool (thread_pool.h), none of it on torch's OpenMP threads. Everything is fp32: Q times
// 1/sqrt(d), the two products with FMA, the mask, max, exp (vec_gelu.h, ~1e-7 relative), sum
// and 1/sum. It differs from PyTorch's SDPA by summation order and exp rounding only (a few
// fp32 ulps; tests bound it). Each (batch, head) is computed by one thread in a fixed order, so
// the results do not depend on the thread count.
//
// Layout as attention_bf16.h: qkv [B*S, 3H] fp32 ([Q | K | V], head h at columns h*d.. of each
// third), key_bias [B, S] additive or null, out [B*S, H].
//
// Work: (batch, head) pairs are claimed from a shared counter. Per pair: K transposed to
// keys packed in blocks of 16 (Sk = S rounded up to 16; padding keys get probability 0) and values in rows of whole vectors, then blocks of
// kRows query rows: their scores against every key in a kRows x 16 register tile, softmax over
// each row, and the output accumulated over the keys in kRows x 16-dim tiles.
#include "attention_fp32.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_common.h"
#include "simd.h"
#include "thread_pool.h"
#include "vec_gelu.h"

namespace bertqa {
namespace {

constexpr int kRows = 6;   // query rows per register tile (12 accumulators of 16 ymm)

#define FP32_TARGET __attribute__((target("avx2,fma")))

struct HeadJob {
  const float *q, *k, *v;    // the head's first Q, K, V column of the batch's first row
  int64_t ldx;               // qkv row stride
  const float* bias;         // [Sk]: the key bias, -inf past S
  int64_t S, Sk, d;
  int64_t dp;                // d rounded up to 16 (the values' packed row)
  float scale;
  float* out;
  int64_t ldo;
};

// The head's keys in blocks of 16: kt[j / 16][c][j % 16] = k[j][c] (one tile's keys contiguous),
// 0 for S <= j < Sk; its values as vt[j][0..dp) = v[j][0..d), zero-padded to whole vectors.
void pack_head(const HeadJob& h, float* kt, float* vt) {
  for (int64_t j0 = 0; j0 < h.Sk; j0 += 16) {
    float* blk = kt + j0 * h.d;
    for (int64_t j = j0; j < j0 + 16; ++j)
      for (int64_t c = 0; c < h.d; ++c) blk[c * 16 + (j - j0)] = j < h.S ? h.k[j * h.ldx + c] : 0.0f;
  }
  for (int64_t j = 0; j < h.S; ++j) {
    std::memcpy(vt + j * h.dp, h.v + j * h.ldx, size_t(h.d) * 4);
    std::memset(vt + j * h.dp + h.d, 0, size_t(h.dp - h.d) * 4);
  }
}

// Scores of kRows query rows (q, scaled, [kRows][d]) against keys j0..j0+15 (two vectors), bias
// added, stored to scores[r][j0..]; the running row max and NaN flags are folded in.
FP32_TARGET inline void scores_tile(const float* q, const float* kt, const HeadJob& h, int64_t j0,
                                    float* scores, __m256* vmax, __m256* nan) {
  __m256 acc[kRows][2];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t c = 0; c < h.d; ++c) {
    const __m256 k0 = _mm256_loadu_ps(kt + j0 * h.d + c * 16);
    const __m256 k1 = _mm256_loadu_ps(kt + j0 * h.d + c * 16 + 8);
    for (int r = 0; r < kRows; ++r) {
      const __m256 qr = _mm256_broadcast_ss(q + r * h.d + c);
      acc[r][0] = _mm256_fmadd_ps(qr, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qr, k1, acc[r][1]);
    }
  }
  for (int v = 0; v < 2; ++v) {
    const __m256 b = _mm256_loadu_ps(h.bias + j0 + 8 * v);
    for (int r = 0; r < kRows; ++r) {
      const __m256 x = _mm256_add_ps(acc[r][v], b);
      _mm256_storeu_ps(scores + r * h.Sk + j0 + 8 * v, x);
      vmax[r] = _mm256_max_ps(vmax[r], x);
      nan[r] = _mm256_or_ps(nan[r], _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
  }
}

FP32_TARGET inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

FP32_TARGET inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One row of Sk scores -> exp(s - max) in place; returns 1 / sum, or NaN when a score was NaN
// (the output row becomes NaN, as in fp32 attention, so that the next Linear reports it).
// Differences below exp's range (masked and padding keys) give exactly 0.
FP32_TARGET inline float softmax_row(float* s, int64_t Sk, float max, bool nan) {
  if (nan) return std::numeric_limits<float>::quiet_NaN();
  const __m256 m = _mm256_set1_ps(max), lo = _mm256_set1_ps(vec_gelu::kExpMin);
  __m256 vsum = _mm256_setzero_ps();
  for (int64_t j = 0; j < Sk; j += 8) {
    const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(s + j), m);
    const __m256 e = _mm256_and_ps(exp_nonpositive_avx2(x), _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
    _mm256_storeu_ps(s + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  const float sum = hsum(vsum);
  return sum > 0 ? 1.0f / sum : 0.0f;
}

// out[r][c0 .. c0+16) = inv[r] * sum_j p[r][j] vt[j][c0 ..], for `rows` rows (dims past d not
// stored).
FP32_TARGET inline void values_tile(const float* p, const float* vt, const HeadJob& h, int64_t c0,
                                    const float* inv, float* out, int rows) {
  __m256 lo[kRows], hi[kRows];
  for (int r = 0; r < kRows; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  const int64_t S = h.S, Sk = h.Sk, dp = h.dp;
  const float* v = vt + c0;
  for (int64_t j = 0; j < S; ++j, v += dp) {
    const __m256 v0 = _mm256_loadu_ps(v);
    const __m256 v1 = _mm256_loadu_ps(v + 8);
    for (int r = 0; r < kRows; ++r) {
      const __m256 pr = _mm256_broadcast_ss(p + r * Sk + j);
      lo[r] = _mm256_fmadd_ps(pr, v0, lo[r]);
      hi[r] = _mm256_fmadd_ps(pr, v1, hi[r]);
    }
  }
  const int64_t left = h.d - c0;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(left, 8))), lanes);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(left, 16)) - 8), lanes);
  // constant indices only (r < kRows, not r < rows): with a variable one GCC 12 kept the
  // accumulators in memory, storing them at every key (a third of the kernel's time)
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    const __m256 s = _mm256_set1_ps(inv[r]);
    store8_avx2(out + r * h.ldo + c0, _mm256_mul_ps(lo[r], s), m0, left >= 8);
    store8_avx2(out + r * h.ldo + c0 + 8, _mm256_mul_ps(hi[r], s), m1, left >= 16);
  }
}

// dst[0..n) = src * scale (0 where src is null), 8 lanes at a time.
FP32_TARGET inline void scaled_row(const float* src, int64_t n, float scale, float* dst) {
  const __m256 s = _mm256_set1_ps(src ? scale : 0.0f);
  int64_t c = 0;
  if (src)
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(dst + c, _mm256_mul_ps(_mm256_loadu_ps(src + c), s));
  for (; c < n; ++c) dst[c] = src ? src[c] * scale : 0.0f;
}

FP32_TARGET void attend_head(const HeadJob& h) {
  thread_local Scratch<float> kbuf, vbuf, qbuf, sbuf;
  float* kt = kbuf.get(size_t(h.d * h.Sk));
  float* vt = vbuf.get(size_t(h.dp * h.S));
  float* q = qbuf.get(size_t(kRows * h.d));
  float* scores = sbuf.get(size_t(kRows * h.Sk));
  pack_head(h, kt, vt);
  float inv[kRows];
  for (int64_t r0 = 0; r0 < h.S; r0 += kRows) {
    const int rows = int(std::min<int64_t>(kRows, h.S - r0));
    for (int r = 0; r < kRows; ++r)          // the block's query rows, scaled; zero past S
      scaled_row(r < rows ? h.q + (r0 + r) * h.ldx : nullptr, h.d, h.scale, q + r * h.d);
    __m256 vmax[kRows], nan[kRows];
    for (int r = 0; r < kRows; ++r) {
      vmax[r] = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      nan[r] = _mm256_setzero_ps();
    }
    for (int64_t j0 = 0; j0 < h.Sk; j0 += 16) scores_tile(q, kt, h, j0, scores, vmax, nan);
    for (int r = 0; r < rows; ++r)
      inv[r] = softmax_row(scores + r * h.Sk, h.Sk, hmax(vmax[r]), _mm256_movemask_ps(nan[r]) != 0);
    for (int64_t c0 = 0; c0 < h.d; c0 += 16) values_tile(scores, vt, h, c0, inv, h.out + r0 * h.ldo, rows);
  }
}

}  // namespace

bool attention_fp32_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void attention_fp32(const float* qkv, const float* key_bias, int64_t B, int64_t S, int64_t heads,
                    int64_t d, float scale, float* out, int nthreads) {
  if (!attention_fp32_supported()) throw std::runtime_error("this CPU lacks AVX2 and FMA");
  check_head_size(d);
  const int64_t H = heads * d, ldx = 3 * H, Sk = (S + 15) / 16 * 16, dp = (d + 15) / 16 * 16;
  const std::vector<float> bias = padded_key_bias(key_bias, B, S, Sk);
  std::atomic<int64_t> next{0};
  const bool parallel = nthreads > 1 && B * S * H >= 4096;
  run_team(parallel ? nthreads : 1, [&](const Team&) {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < B * heads;) {
      const int64_t b = t / heads, hd = t % heads;
      const float* x = qkv + b * S * ldx + hd * d;
      attend_head(HeadJob{x, x + H, x + 2 * H, ldx, bias.data() + b * Sk, S, Sk, d, dp, scale,
                          out + b * S * H + hd * d, H});
    }
  });
}

}  // namespace bertqa
