// gemm_scalar.cpp: the portable path of the native int8 Linear (any CPU, any compiler).
//
// Plain loops over row-major int8: the readable statement of what the vector paths compute,
// and the named fallback where neither AVX2 nor AVX-512 VNNI is present. Weights stay [N, K].
#include "int8_linear.h"

namespace bertqa {
namespace {

constexpr int64_t kColumnBlock = 64;   // unit of work: one row x 64 columns

void pack_weights_scalar(PackedLinear& W, const int8_t* wq) {
  W.packed.resize(size_t(W.Np * W.Kp));
  std::memcpy(W.packed.data(), wq, size_t(W.N * W.K));      // Kp == K, Np == N
  W.col_comp.resize(size_t(W.Np));
}

// v = x, or x * scale with one fp32 multiply (see IsaKernels in int8_linear.h).
inline float scaled(const float* x, const float* scale, int64_t i) {
  return scale ? x[i] * scale[i] : x[i];
}

uint32_t abs_max_bits_scalar(const float* x, const float* scale, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = scaled(x, scale, i);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits &= 0x7fffffffu;
    m = bits > m ? bits : m;
  }
  return m;
}

void quantize_row_scalar(const float* x, const float* scale, int64_t K, int64_t Kp, float inv,
                         uint8_t* dst) {
  int8_t* xq = reinterpret_cast<int8_t*>(dst);
  for (int64_t k = 0; k < K; ++k) {
    float r = std::nearbyint(scaled(x, scale, k) * inv);   // default mode: half-even
    if (r != r) r = 0.0f;                          // 0 * inf, when 127 / amax overflowed
    r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
    xq[k] = int8_t(r);
  }
  for (int64_t k = K; k < Kp; ++k) xq[k] = 0;
}

GemmCounts gemm_scalar(const GemmCall& c, int nthreads) {
  const PackedLinear& W = *c.W;
  const int64_t K = W.K, N = W.N;
  const int64_t blocks_per_row = (N + kColumnBlock - 1) / kColumnBlock;
  const float pow2_shift = float(int64_t(1) << W.shift);
  int64_t begin, end;
  GemmCounts counts;
  while (claim_tiles(c, c.M * blocks_per_row, nthreads, &begin, &end)) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t m = t / blocks_per_row, n0 = (t % blocks_per_row) * kColumnBlock;
      const int64_t n1 = n0 + kColumnBlock < N ? n0 + kColumnBlock : N;
      const int8_t* xq = reinterpret_cast<const int8_t*>(c.A + m * c.lda);
      for (int64_t n = n0; n < n1; ++n) {
        const int8_t* w = W.packed.data() + n * K;
        int32_t acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += int32_t(xq[k]) * int32_t(w[k]);
        if (c.track_max_abs_acc) {
          const int32_t a = acc < 0 ? -acc : acc;
          counts.max_abs_acc = a > counts.max_abs_acc ? a : counts.max_abs_acc;
        }
        const int32_t q = W.requant_i16 ? requantize_i16(acc, W.shift, &counts.saturated) : acc;
        if (c.dbg_acc) c.dbg_acc[m * N + n] = acc;
        if (c.dbg_q) c.dbg_q[m * N + n] = q;
        const float mult = (c.sx[m] * W.sw.data()[n]) * pow2_shift;
        float y = float(q) * mult + W.bias.data()[n];
        c.y[m * N + n] = W.gelu ? gelu_erf(y) : y;
      }
    }
  }
  return counts;
}

}  // namespace

const IsaKernels kScalarKernels = {
    "scalar", 1, 1, ActFormat::i8, 1,
    pack_weights_scalar, abs_max_bits_scalar, quantize_row_scalar, gemm_scalar,
};

}  // namespace bertqa
