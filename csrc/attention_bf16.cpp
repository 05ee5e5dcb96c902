// attention_bf16.cpp: BERT self-attention (softmax(Q K^T / sqrt(d) + mask) V) on AVX512-BF16.
//
// What: the part of a BERT layer between the fused QKV Linear and the output Linear, for the
// host CPU of the customcpu and aie targets. Q (times 1/sqrt(d), in fp32), K and V are rounded
// to bfloat16 (round to nearest even), the two products run on vdpbf16ps (bf16 pairs, fp32
// accumulation); mask, max, exp, sum and the final 1/sum stay fp32; the probabilities (before
// the 1/sum) are rounded to bf16 for P V. Not part of the int8 numerics of docs/quantization.md (which covers the Linear nodes
// only): outputs differ from fp32 attention by bf16 rounding (~3 significant digits), checked by
// tests against PyTorch's SDPA and by SQuAD EM/F1 in the README.
//
// Layout: qkv [B*S, 3H] fp32, row = token, columns [query heads | key heads | value heads], head h
// at columns h*d .. h*d+d-1 of each third (the model's fused QKV Linear output, as is);
// key_bias [B, S] additive fp32 (0 or a large negative for padding) or null; out [B*S, H].
//
// Work, per batch, in one parallel region (thread_pool.h): a packing pass over the tokens (each thread a range of
// them, every head, rows read front to back) to bf16 Q, K and V in 32-bit words of bf16 pairs
// (what vdpbf16ps reduces), then the heads (dynamic): K transposed to [key block of 64][d pair]
// [64 keys], then blocks of 6 query rows: scores for all keys in a 6 x 64 register tile, softmax
// over the row, and the 6 x d output tile accumulated over key pairs. Scratch is reused. Built
// with the rest of bertqa._native; runs only where the CPU reports avx512bf16 (bertqa falls back
// to PyTorch's SDPA elsewhere).
#include "attention_bf16.h"

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

constexpr int kRows = 6;        // query rows per register tile
constexpr int kKeyBlock = 64;   // keys per register tile of the scores (4 vectors of 16)
constexpr int kDChunk = 64;     // output dims per register tile of P V (4 vectors of 16)

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

struct Shape {
  int64_t S, H, d;
  int64_t dp;                   // d padded to 32 (whole bf16 vectors); dp / 2 pairs
  int64_t Sk;                   // keys padded to kKeyBlock
};

// fp32 row of n <= dp values (rest zero), times `scale` -> dp/2 words of two bf16 each (element
// 2i in the low half).
BF16_TARGET inline void row_to_bf16_pairs(const float* x, int64_t n, int64_t dp, uint32_t* out,
                                          float scale = 1.0f) {
  const __m512 vs = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < dp; i += 32) {
    const __mmask16 m0 = n - i >= 16 ? __mmask16(0xffff) : n - i > 0 ? __mmask16((1u << (n - i)) - 1) : 0;
    const __mmask16 m1 = n - i - 16 >= 16 ? __mmask16(0xffff)
                         : n - i - 16 > 0 ? __mmask16((1u << (n - i - 16)) - 1) : 0;
    const __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, x + i), vs);
    const __m512 hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, x + i + 16), vs);
    _mm512_storeu_si512(out + i / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
}

// K rows of one head, [Sk][pairs] row-major -> kp[key block][pair][64 keys]. The rows were
// written in the packing pass; reading words back from vector stores still in flight would
// stall on store forwarding at every key.
void transpose_keys(const uint32_t* rows, const Shape& sh, uint32_t* kp) {
  const int64_t pairs = sh.dp / 2;
  for (int64_t kb = 0; kb < sh.Sk / kKeyBlock; ++kb) {
    const uint32_t* src = rows + kb * kKeyBlock * pairs;
    uint32_t* dst = kp + kb * pairs * kKeyBlock;
    for (int64_t p = 0; p < pairs; ++p)
      for (int64_t j = 0; j < kKeyBlock; ++j) dst[p * kKeyBlock + j] = src[j * pairs + p];
  }
}

// V rows v0, v1 (v1 null past the end) of one head -> dp words: bf16 v0[c] | bf16 v1[c] << 16.
BF16_TARGET void pack_value_pair(const float* v0, const float* v1, const Shape& sh, uint32_t* out) {
  for (int64_t c = 0; c < sh.dp; c += 16) {
    const __mmask16 m = sh.d - c >= 16 ? __mmask16(0xffff)
                        : sh.d - c > 0 ? __mmask16((1u << (sh.d - c)) - 1) : 0;
    const __m512 a = _mm512_maskz_loadu_ps(m, v0 + c);
    const __m512 b = v1 ? _mm512_maskz_loadu_ps(m, v1 + c) : _mm512_setzero_ps();
    const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
    const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
    _mm512_storeu_si512(out + c, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
  }
}

// One batch's Q, K and V in bf16, every head: q [heads][Sq][pairs] (times scale), krows
// [heads][Sk][pairs], v [heads][Sk/2][dp]; rows past S are zero. Heads lie `*_stride` words
// apart: a multiple of 4 KiB plus one cache line, so that the packing pass's 3 x heads write
// streams do not all map to the same L1 sets.
struct PackedQKV {
  uint32_t *q, *krows, *v;
  int64_t q_stride, k_stride, v_stride;
};

constexpr int64_t kHeadPad = 16;    // words: one cache line

// The packing pass for the token pair (2j, 2j+1) of one batch: reads both qkv rows front to back
// (every head), so that the hardware prefetcher streams them.
BF16_TARGET void pack_token_pair(const float* x, int64_t ldx, int64_t j, int64_t heads,
                                 const Shape& sh, float scale, const PackedQKV& pk) {
  const int64_t pairs = sh.dp / 2;
  for (int64_t s = 2 * j; s < 2 * j + 2; ++s) {
    for (int64_t h = 0; h < heads; ++h) {
      uint32_t* q = pk.q + h * pk.q_stride + s * pairs;
      uint32_t* k = pk.krows + h * pk.k_stride + s * pairs;
      if (s < sh.S) {
        row_to_bf16_pairs(x + s * ldx + h * sh.d, sh.d, sh.dp, q, scale);
        row_to_bf16_pairs(x + s * ldx + sh.H + h * sh.d, sh.d, sh.dp, k);
      } else {
        std::memset(k, 0, size_t(pairs) * 4);   // Q rows past S: zeroed once per call
      }
    }
  }
  const int64_t s0 = 2 * j, s1 = 2 * j + 1;
  for (int64_t h = 0; h < heads; ++h) {
    uint32_t* v = pk.v + h * pk.v_stride + j * sh.dp;
    if (s0 >= sh.S) {
      std::memset(v, 0, size_t(sh.dp) * 4);
      continue;
    }
    const float* v0 = x + s0 * ldx + 2 * sh.H + h * sh.d;
    pack_value_pair(v0, s1 < sh.S ? v0 + ldx : nullptr, sh, v);
  }
}

// Per query row of a block: the running max of its scores (16 lanes) and whether one was NaN.
struct RowStats {
  __m512 max[kRows];
  __mmask16 nan[kRows];
};

// scores[r][0..63] = q[r] . k + bias for one key block (kRows x 64 tile), folding the row
// statistics in while the tile is still in registers.
BF16_TARGET inline void scores_tile(const uint32_t* q, int64_t pairs, const uint32_t* kb,
                                    const float* bias, float* scores, int64_t lds, RowStats& st) {
  __m512 acc[kRows][4];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const uint32_t* kv = kb + p * kKeyBlock;
    const __m512bh k0 = (__m512bh)_mm512_loadu_si512(kv);
    const __m512bh k1 = (__m512bh)_mm512_loadu_si512(kv + 16);
    const __m512bh k2 = (__m512bh)_mm512_loadu_si512(kv + 32);
    const __m512bh k3 = (__m512bh)_mm512_loadu_si512(kv + 48);
    for (int r = 0; r < kRows; ++r) {
      const __m512bh qr = (__m512bh)_mm512_set1_epi32(int(q[r * pairs + p]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qr, k0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qr, k1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], qr, k2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], qr, k3);
    }
  }
  __m512 b[4];
  for (int c = 0; c < 4; ++c) b[c] = _mm512_loadu_ps(bias + 16 * c);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < 4; ++c) {
      const __m512 x = _mm512_add_ps(acc[r][c], b[c]);
      _mm512_storeu_ps(scores + r * lds + 16 * c, x);
      st.max[r] = _mm512_max_ps(st.max[r], x);
      st.nan[r] |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    }
}

// One row of scores (bias added, statistics known) -> exp(s - max) in bf16 pairs (p, Sk/2
// words); returns 1 / sum, or NaN if a score was NaN (NaN or Inf in q or k): the output row then
// becomes NaN, as in fp32 attention, so that the next Linear's input check reports it. The bias
// holds -inf for the padding keys >= S, whose probabilities come out exactly 0.
BF16_TARGET inline float softmax_row(const float* scores, __m512 vmax, __mmask16 nan, int64_t Sk,
                                     uint32_t* p) {
  if (nan) return std::numeric_limits<float>::quiet_NaN();
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t s = 0; s < Sk; s += 32) {
    __m512 e[2];
    for (int h = 0; h < 2; ++h) {
      const __m512 x = _mm512_sub_ps(_mm512_loadu_ps(scores + s + 16 * h), m);
      // exp is clamped at exp(-87); anything below (masked and padding keys) is exactly 0
      const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(vec_gelu::kExpMin), _CMP_GE_OQ);
      // degree 5 (~3e-6 relative) is plenty for probabilities rounded to bf16 (2^-9)
      e[h] = _mm512_maskz_mov_ps(live, exp_nonpositive_avx512<5>(x));
    }
    const __m512bh pb = _mm512_cvtne2ps_pbh(e[1], e[0]);
    _mm512_storeu_si512(p + s / 2, (__m512i)pb);
    vsum = _mm512_add_ps(vsum, _mm512_add_ps(e[0], e[1]));
  }
  const float sum = _mm512_reduce_add_ps(vsum);
  return sum > 0 ? 1.0f / sum : 0.0f;
}

// out[r][c] = inv[r] * sum over key pairs of p[r] . v, for NV vectors of 16 dims from c0.
template <int NV>
BF16_TARGET inline void values_tile(const uint32_t* p, int64_t ldp, int64_t key_pairs,
                                    const uint32_t* vp, int64_t dp, const float* inv, float* out,
                                    int64_t ldo, int rows, int64_t dims) {
  __m512 acc[kRows][NV];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < key_pairs; ++j) {
    __m512bh v[NV];
    for (int c = 0; c < NV; ++c) v[c] = (__m512bh)_mm512_loadu_si512(vp + j * dp + 16 * c);
    for (int r = 0; r < kRows; ++r) {
      const __m512bh pr = (__m512bh)_mm512_set1_epi32(int(p[r * ldp + j]));
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pr, v[c]);
    }
  }
  for (int r = 0; r < rows; ++r) {
    const __m512 s = _mm512_set1_ps(inv[r]);
    for (int c = 0; c < NV; ++c) {
      const int64_t left = dims - 16 * c;
      if (left <= 0) break;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      _mm512_mask_storeu_ps(out + r * ldo + 16 * c, m, _mm512_mul_ps(acc[r][c], s));
    }
  }
}

BF16_TARGET void values_chunk(const uint32_t* p, int64_t ldp, int64_t key_pairs, const uint32_t* vp,
                              int64_t dp, const float* inv, float* out, int64_t ldo, int rows,
                              int64_t dims) {
  switch ((std::min<int64_t>(dims, kDChunk) + 15) / 16) {
    case 1: return values_tile<1>(p, ldp, key_pairs, vp, dp, inv, out, ldo, rows, dims);
    case 2: return values_tile<2>(p, ldp, key_pairs, vp, dp, inv, out, ldo, rows, dims);
    case 3: return values_tile<3>(p, ldp, key_pairs, vp, dp, inv, out, ldo, rows, dims);
    default: return values_tile<4>(p, ldp, key_pairs, vp, dp, inv, out, ldo, rows, dims);
  }
}

// One head of one batch from its packed Q, K rows and V: bias = the batch's [Sk] key bias, out =
// the head's first output column of the batch's first row.
BF16_TARGET void attend_head(const uint32_t* qh, const uint32_t* krows, const uint32_t* vp,
                             const float* bias, const Shape& sh, float* out, int64_t ldo) {
  thread_local Scratch<uint32_t> kbuf, pbuf;
  thread_local Scratch<float> sbuf;
  const int64_t pairs = sh.dp / 2;
  uint32_t* kp = kbuf.get(size_t(sh.Sk * pairs));
  uint32_t* p = pbuf.get(size_t(kRows * sh.Sk / 2));
  float* scores = sbuf.get(size_t(kRows * sh.Sk));
  transpose_keys(krows, sh, kp);
  float inv[kRows];
  for (int64_t r0 = 0; r0 < sh.S; r0 += kRows) {
    const int rows = int(std::min<int64_t>(kRows, sh.S - r0));
    const uint32_t* q = qh + r0 * pairs;                       // kRows rows, zero past S
    RowStats st;
    for (int r = 0; r < kRows; ++r) {
      st.max[r] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      st.nan[r] = 0;
    }
    for (int64_t kb = 0; kb < sh.Sk / kKeyBlock; ++kb)
      scores_tile(q, pairs, kp + kb * pairs * kKeyBlock, bias + kb * kKeyBlock, scores + kb * kKeyBlock,
                  sh.Sk, st);
    for (int r = 0; r < kRows; ++r) {
      if (r < rows) inv[r] = softmax_row(scores + r * sh.Sk, st.max[r], st.nan[r], sh.Sk, p + r * sh.Sk / 2);
      else std::memset(p + r * sh.Sk / 2, 0, size_t(sh.Sk / 2) * 4);
    }
    for (int64_t c = 0; c < sh.d; c += kDChunk)
      values_chunk(p, sh.Sk / 2, sh.Sk / 2, vp + c, sh.dp, inv, out + r0 * ldo + c, ldo, rows, sh.d - c);
  }
}

}  // namespace

bool attention_bf16_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16");
}

void attention_bf16(const float* qkv, const float* key_bias, int64_t B, int64_t S, int64_t heads,
                    int64_t d, float scale, float* out, int nthreads) {
  if (!attention_bf16_supported()) throw std::runtime_error("this CPU lacks AVX512-BF16");
  check_head_size(d);
  Shape sh;
  sh.S = S;
  sh.d = d;
  sh.H = heads * d;
  sh.dp = (d + 31) / 32 * 32;
  sh.Sk = (S + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  const std::vector<float> bias = padded_key_bias(key_bias, B, S, sh.Sk);
  const int64_t ldx = 3 * sh.H, pairs = sh.dp / 2, Sq = (S + kRows - 1) / kRows * kRows;
  // The packed batch, in the calling thread's scratch (the workers see it through `pk`).
  thread_local Scratch<uint32_t> qbuf, kbuf, vbuf;
  const int64_t qs = Sq * pairs + kHeadPad, ks = sh.Sk * pairs + kHeadPad, vs = sh.Sk / 2 * sh.dp + kHeadPad;
  const PackedQKV pk{qbuf.get(size_t(heads * qs)), kbuf.get(size_t(heads * ks)),
                     vbuf.get(size_t(heads * vs)), qs, ks, vs};
  const bool parallel = nthreads > 1 && S * heads * d >= 4096;
  for (int64_t h = 0; h < heads; ++h)          // query rows S..Sq-1 of the last tile (Sq may pass Sk)
    std::memset(pk.q + h * qs + S * pairs, 0, size_t((Sq - S) * pairs) * 4);
  for (int64_t b = 0; b < B; ++b) {
    const float* x = qkv + b * S * ldx;
    std::atomic<int64_t> next_head{0};
    run_team(parallel ? nthreads : 1, [&](const Team& team) {
      int64_t begin, end;
      team.share(sh.Sk / 2, &begin, &end);
      for (int64_t j = begin; j < end; ++j) pack_token_pair(x, ldx, j, heads, sh, scale, pk);
      team.barrier();
      for (int64_t h; (h = next_head.fetch_add(1, std::memory_order_relaxed)) < heads;)
        attend_head(pk.q + h * qs, pk.krows + h * ks, pk.v + h * vs,
                    bias.data() + b * sh.Sk, sh, out + b * S * sh.H + h * d, sh.H);
    });
  }
}

}  // namespace bertqa
