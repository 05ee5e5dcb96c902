// gelu.cpp: the exact (erf) GELU of the native epilogue, applied to a whole array in place.
//
// What: the same per-element functions that the ISA paths fuse into the GEMM's store
// (vec_gelu.h: gelu_avx512 on the avx512vnni path, gelu_avx2 on avx2, gelu_erf on scalar), so that
// a backend that applies GELU after its own GEMM (cpu-reference, aie: on the host) gets exactly
// what customcpu's fused epilogue gives on the same ISA path. Tails go through the same vector
// function on masked lanes: every element sees the same arithmetic.
#include "gelu.h"

#include <algorithm>
#include <stdexcept>

#include "int8_linear.h"
#include "vec_gelu.h"

#include "thread_pool.h"

namespace bertqa {
namespace {

__attribute__((target("avx512f,avx512dq,fma"))) void gelu_avx512_range(float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, gelu_avx512(_mm512_maskz_loadu_ps(m, y + i)));
  }
}

// Four vectors at a time in lockstep (gelu_avx2_n: same bits, the chains overlap), then one.
__attribute__((target("avx2,fma"))) void gelu_avx2_range(float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 v[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm256_loadu_ps(y + i + 8 * j);
    gelu_avx2_n<4>(v);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(y + i + 8 * j, v[j]);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu_avx2(_mm256_loadu_ps(y + i)));
  if (i < n) {
    alignas(32) float tail[8] = {0};
    for (int64_t j = 0; j < n - i; ++j) tail[j] = y[i + j];
    _mm256_store_ps(tail, gelu_avx2(_mm256_load_ps(tail)));
    for (int64_t j = 0; j < n - i; ++j) y[i + j] = tail[j];
  }
}

void gelu_scalar_range(float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = gelu_erf(y[i]);
}

}  // namespace

void gelu_inplace(float* y, int64_t n, const std::string& isa, int nthreads) {
  void (*range)(float*, int64_t);
  if (isa == "avx512vnni") range = gelu_avx512_range;
  else if (isa == "avx2") range = gelu_avx2_range;
  else if (isa == "scalar") range = gelu_scalar_range;
  else throw std::invalid_argument("unknown ISA path '" + isa + "' (avx512vnni, avx2, scalar)");
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  run_team(chunks > 1 ? nthreads : 1, [&](const Team& team) {
    int64_t begin, end;
    team.share(chunks, &begin, &end);
    for (int64_t c = begin; c < end; ++c) range(y + c * kChunk, std::min(kChunk, n - c * kChunk));
  });
}

}  // namespace bertqa
