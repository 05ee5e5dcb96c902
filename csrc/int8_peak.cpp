// int8_peak.cpp: the machine's int8 peak, measured with tight loops of independent multiply-adds.
//
// avx512vnni: 12 independent vpdpbusd zmm chains, 64 multiply-adds = 128 ops per instruction.
// avx2: 6 independent (vpmaddwd + vpaddd) ymm chains, 16 multiply-adds = 32 ops per pair (an
// empty asm makes the weights opaque each iteration, or vpmaddwd would be hoisted).
// The benchmark reports the GEMM's rate as a fraction of these numbers, measured in the same run.
#include "int8_linear.h"

#include "simd.h"

namespace bertqa {

__attribute__((target("avx512f,avx512vnni"))) int64_t peak_loop_vnni(int64_t iters) {
  __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x01ff01ff);
  __asm__ volatile("" : "+v"(a), "+v"(b));             // opaque to the optimizer
  __m512i acc[12];
  for (auto& v : acc) v = _mm512_setzero_si512();
  for (int64_t i = 0; i < iters; ++i)
    for (auto& v : acc) v = _mm512_dpbusd_epi32(v, a, b);
  __m512i sum = acc[0];
  for (int j = 1; j < 12; ++j) sum = _mm512_add_epi32(sum, acc[j]);
  return _mm512_reduce_add_epi32(sum);
}

__attribute__((target("avx2"))) int64_t peak_loop_avx2(int64_t iters) {
  __m256i b = _mm256_set1_epi32(0x0003ffff), a[6], acc[6];
  for (int j = 0; j < 6; ++j) {
    a[j] = _mm256_set1_epi32(0x00010001 * (j + 1));
    acc[j] = _mm256_setzero_si256();
  }
  for (int64_t i = 0; i < iters; ++i) {
    __asm__ volatile("" : "+x"(b));                      // b "changes": nothing is hoisted
    for (int j = 0; j < 6; ++j) acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(a[j], b));
  }
  __m256i sum = acc[0];
  for (int j = 1; j < 6; ++j) sum = _mm256_add_epi32(sum, acc[j]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  int64_t total = 0;
  for (int32_t v : lanes) total += v;
  return total;
}

// ops (multiply + add counted as 2) performed by one call of the loop with `iters` iterations
int64_t peak_loop_ops(bool vnni, int64_t iters) { return vnni ? iters * 12 * 128 : iters * 6 * 32; }

}  // namespace bertqa
