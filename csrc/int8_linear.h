// int8_linear.h: what the ISA paths of the native int8 Linear share (see int8_linear_module.cpp
// for the overview, the build and the numbered versions).
//
// Numerics: docs/quantization.md steps 2-5. Each ISA file (gemm_scalar.cpp, gemm_avx2.cpp,
// gemm_avx512vnni.cpp) fills one IsaKernels table; the module quantizes the activations with
// the table's functions, then calls its gemm once per thread. Nothing here depends on PyTorch.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace bertqa {

// 64-byte aligned, zero-filled, move-only array (packed weights and activation scratch).
template <class T>
class AlignedArray {
 public:
  AlignedArray() = default;
  AlignedArray(const AlignedArray&) = delete;
  AlignedArray& operator=(const AlignedArray&) = delete;
  ~AlignedArray() { std::free(data_); }
  void resize(size_t n) {  // drops the old contents
    std::free(data_);
    size_t bytes = ((n * sizeof(T) + 63) / 64) * 64 + 64;
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, bytes);
    size_ = n;
  }
  void grow(size_t n) { if (n > size_) resize(n); }  // scratch: keep when big enough
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// How a path stores the quantized activations, one row of `lda` bytes per token.
enum class ActFormat { i8, u8_plus128, i16 };

// One prepared layer: the int8 weights packed for one ISA path and what the epilogue needs.
struct PackedLinear {
  int64_t K = 0, N = 0;
  int shift = 0;              // SPEC s in 0..16 (0 in int32 mode)
  bool requant_i16 = true;    // false: int32 mode, q = acc
  bool acts_row = false;      // activation scale per row, else one per tensor
  bool gelu = false;          // exact (erf) GELU after the bias
  const struct IsaKernels* kern = nullptr;
  std::string path;           // the ISA path that runs, and why if it is a fallback
  int64_t Kp = 0, Np = 0;     // K padded to the path's k-group, N to its panel width
  AlignedArray<int8_t> packed;      // weights in the path's layout
  AlignedArray<int32_t> col_comp;   // [Np] avx512vnni: 128 * sum_k wq[n, k], else 0
  AlignedArray<float> sw, bias;     // [Np] per-row weight scale (pad 1) and bias (pad 0)
};

// One call of steps 3-5 over quantized activations.
struct GemmCall {
  const PackedLinear* W;
  const uint8_t* A;           // [M, lda bytes] in W->kern->act_format, K padding holds zero
  int64_t lda;                // bytes between activation rows
  int64_t M;
  const float* sx;            // [M] activation scale per row (repeated for a tensor scale)
  float* y;                   // [M, N] fp32 output
  int32_t* dbg_acc;           // [M, N] or null: the exact accumulators (tests)
  int32_t* dbg_q;             // [M, N] or null: q after requantization (tests)
  std::atomic<int64_t>* next_tile;  // shared by the threads of one call, starts at 0
  bool track_max_abs_acc;     // calibration: the epilogue also finds max |acc| (GemmCounts)
};

// What one thread's share of a GEMM counted in its epilogues.
struct GemmCounts {
  int64_t saturated = 0;      // elements clamped to int16 (SPEC step 4)
  int32_t max_abs_acc = 0;    // with track_max_abs_acc: max |acc| over its tiles' valid elements
                              // (|acc| <= K * 127 * 127 < 2^31: never INT32_MIN), else 0
  void add(const GemmCounts& o) {
    saturated += o.saturated;
    max_abs_acc = o.max_abs_acc > max_abs_acc ? o.max_abs_acc : max_abs_acc;
  }
};

struct IsaKernels {
  const char* name;
  int64_t k_group;            // K is padded to a multiple of this
  int64_t panel;              // N is padded to a multiple of this
  ActFormat act_format;
  int64_t act_bytes;          // bytes per activation element
  // wq: [N, K] int8 row-major -> W.packed, W.col_comp (W.Kp, W.Np, sizes already set).
  void (*pack_weights)(PackedLinear& W, const int8_t* wq);
  // `scale` below is null, or [n] / [K] fp32: the per-channel smoothing multiply, fused. Then
  // the row is v[i] = x[i] * scale[i] (one fp32 multiply, never fused with the next one, so
  // that both functions see the same v bit for bit), else v = x.
  // max over i of (bits of |v[i]|): the fp32 max |v| for finite v; >= 0x7f800000 flags Inf/NaN.
  uint32_t (*abs_max_bits)(const float* x, const float* scale, int64_t n);
  // One row: xq = clamp(rint_half_even(v * inv), -127, 127) in act_format, K..Kp-1 as zero.
  void (*quantize_row)(const float* x, const float* scale, int64_t K, int64_t Kp, float inv,
                       uint8_t* dst);
  // Called by each of the call's nthreads threads: runs the tiles of the GEMM and their fused
  // epilogue that this thread claims (claim_tiles); returns the saturations it counted and, with
  // call.track_max_abs_acc, the largest |acc| it saw (from the exact int32 accumulators).
  GemmCounts (*gemm)(const GemmCall& call, int nthreads);
};

extern const IsaKernels kScalarKernels;
extern const IsaKernels kAvx2Kernels;
extern const IsaKernels kAvx512VnniKernels;

// -- scalar pieces shared by the paths (their vector forms live in the ISA files) ---------------

constexpr int32_t kInt16Min = -32768, kInt16Max = 32767;

// SPEC step 4: floor((acc + h) / 2^s), h = 2^(s-1) (0 for s = 0), then saturate to int16.
inline int32_t requantize_i16(int32_t acc, int shift, int64_t* saturated) {
  const int64_t half = shift ? (int64_t(1) << (shift - 1)) : 0;
  const int64_t t = (int64_t(acc) + half) >> shift;     // >> of a signed value is floor (gcc)
  if (t < kInt16Min || t > kInt16Max) {
    ++*saturated;
    return t < kInt16Min ? kInt16Min : kInt16Max;
  }
  return int32_t(t);
}

inline float gelu_erf(float y) { return 0.5f * y * (1.0f + std::erf(y * 0.70710678118654752f)); }

// Threads claim the next [begin, end) of `total` tiles from the call's shared counter, in
// "guided" chunks: a quarter of each thread's share of what is left, so chunks start large (long
// runs over one weight panel) and end at single tiles (the threads finish together). A thread
// that starts late or is preempted simply takes less. Results do not depend on who runs a tile.
inline bool claim_tiles(const GemmCall& c, int64_t total, int nthreads, int64_t* begin,
                        int64_t* end) {
  int64_t start = c.next_tile->load(std::memory_order_relaxed), chunk;
  do {
    if (start >= total) return false;
    chunk = (total - start) / (4 * nthreads);
    chunk = chunk > 0 ? chunk : 1;
  } while (!c.next_tile->compare_exchange_weak(start, start + chunk, std::memory_order_relaxed));
  *begin = start;
  *end = start + chunk;
  return true;
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The register-tiled paths: the GEMM's tiles of mr rows x nr columns, in panel-major order (one
// panel's weights stay in L2 across its row blocks), claimed by this thread with claim_tiles;
// tile(m0, panel, rows, vecs) runs each, vecs = its columns in vectors of `lanes`.
template <class TileFn>
inline void for_each_claimed_tile(const GemmCall& c, int nthreads, int64_t mr, int64_t nr,
                                  int64_t lanes, TileFn tile) {
  const int64_t N = c.W->N;
  const int64_t row_blocks = (c.M + mr - 1) / mr, panels = (N + nr - 1) / nr;
  int64_t begin, end;
  while (claim_tiles(c, row_blocks * panels, nthreads, &begin, &end)) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t panel = t / row_blocks, m0 = (t % row_blocks) * mr;
      const int64_t rows = c.M - m0 < mr ? c.M - m0 : mr;
      const int64_t cols = N - panel * nr, vecs = cols >= nr ? nr / lanes : (cols + lanes - 1) / lanes;
      tile(m0, panel, rows, vecs);
    }
  }
}

}  // namespace bertqa
