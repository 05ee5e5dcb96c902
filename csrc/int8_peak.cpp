// int8_peak.cpp: the machine's int8 peak, measured with tight loops of independent multiply-adds.
//
// avx512vnni: 12 independent vpdpbusd zmm chains, 64 multiply-adds = 128 ops per instruction.
// avx2: 6 independent (vpmaddwd + vpaddd) ymm chains, 16 multiply-adds = 32 ops per pair (in
// assembly, so that nothing is hoisted or rearranged; see peak_loop_avx2).
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

// The loop is written in assembly: GCC's own rendering of it rotated the accumulators through
// register moves and kept two inputs on the stack, 20 instructions per 6 multiply-adds, so it
// ran at the core's dispatch width and its rate moved by 40 % with the loop's code alignment
// (two builds of the same source: 150 and 210 GOPS on the same Zen 3). Here 6 vpmaddwd and 6
// vpaddd, with two scratch registers and the counter: bound by the multipliers only.
__attribute__((target("avx2"))) int64_t peak_loop_avx2(int64_t iters) {
  const __m256i b = _mm256_set1_epi32(0x0003ffff);
  __m256i a0 = _mm256_set1_epi32(0x00010001), a1 = _mm256_set1_epi32(0x00020002),
          a2 = _mm256_set1_epi32(0x00030003), a3 = _mm256_set1_epi32(0x00040004),
          a4 = _mm256_set1_epi32(0x00050005), a5 = _mm256_set1_epi32(0x00060006);
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
  if (iters > 0)
    __asm__ volatile(
        ".p2align 5\n"
        "1:\n\t"
        "vpmaddwd %t[b], %t[a0], %%ymm14\n\t"
        "vpaddd %%ymm14, %t[c0], %t[c0]\n\t"
        "vpmaddwd %t[b], %t[a1], %%ymm15\n\t"
        "vpaddd %%ymm15, %t[c1], %t[c1]\n\t"
        "vpmaddwd %t[b], %t[a2], %%ymm14\n\t"
        "vpaddd %%ymm14, %t[c2], %t[c2]\n\t"
        "vpmaddwd %t[b], %t[a3], %%ymm15\n\t"
        "vpaddd %%ymm15, %t[c3], %t[c3]\n\t"
        "vpmaddwd %t[b], %t[a4], %%ymm14\n\t"
        "vpaddd %%ymm14, %t[c4], %t[c4]\n\t"
        "vpmaddwd %t[b], %t[a5], %%ymm15\n\t"
        "vpaddd %%ymm15, %t[c5], %t[c5]\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        : [c0] "+x"(c0), [c1] "+x"(c1), [c2] "+x"(c2), [c3] "+x"(c3), [c4] "+x"(c4),
          [c5] "+x"(c5), [n] "+r"(iters)
        : [a0] "x"(a0), [a1] "x"(a1), [a2] "x"(a2), [a3] "x"(a3), [a4] "x"(a4), [a5] "x"(a5),
          [b] "x"(b)
        : "xmm14", "xmm15", "cc");
  __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
                                 _mm256_add_epi32(c4, c5));
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  int64_t total = 0;
  for (int32_t v : lanes) total += v;
  return total;
}

// ops (multiply + add counted as 2) performed by one call of the loop with `iters` iterations
int64_t peak_loop_ops(bool vnni, int64_t iters) { return vnni ? iters * 12 * 128 : iters * 6 * 32; }

}  // namespace bertqa
