// simd.h: <immintrin.h> for the ISA files. GCC 12 warns "__Y may be used uninitialized" inside
// its own AVX-512 headers (the _mm*_undefined_* idiom, inlined at -O3); those warnings are
// silenced for the header's lines only, so warnings about our code still show.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

// y[0..8) = v where all 8 lanes are valid (`full`), else the lanes of `mask` (vmaskmovps). The
// AVX2 masked store is slow on AMD Zen: on Zen 3, perf put half of the int8 GEMM epilogue's
// samples on it, so it is kept for the tails.
__attribute__((target("avx2"))) static inline void store8_avx2(float* y, __m256 v, __m256i mask,
                                                              bool full) {
  if (full) _mm256_storeu_ps(y, v);
  else _mm256_maskstore_ps(y, mask, v);
}
