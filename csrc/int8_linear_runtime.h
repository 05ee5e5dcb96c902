// int8_linear_runtime.h: the fused call of the native int8 Linear (int8_linear_runtime.cpp);
// the threads, the contention guard and the CPU probes it runs under are in thread_runtime.h.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "int8_linear.h"
#include "thread_runtime.h"

namespace bertqa {

// docs/quantization.md: |acc| <= K * 127 * 127 fits int32 for K < 133,000 (with the rounding half added).
constexpr int64_t kMaxK = 133000;
// avx512vnni sums (xq + 128) * wq before the compensation: K * 255 * 127 must fit int32.
constexpr int64_t kMaxKOffsetU8 = 66311;

struct RunResult {
  int64_t saturated = 0;
  int nonfinite = 0;          // 0 finite, 1 Inf, 2 NaN (NaN wins when both occur)
  double seconds_quantize = 0, seconds_gemm = 0;   // wall clock
  double busy_seconds = 0;    // with profile: CPU seconds of all threads, barrier waits excluded
  int threads = 1;
  int64_t max_abs_acc = 0;    // with track_max_abs_acc: max |acc| over the call (0 for M == 0)
};

struct DebugOut {             // all null, or [M, N] acc, [M, N] q, [M, K] xq, [M] sx
  int32_t* acc = nullptr;
  int32_t* q = nullptr;
  int8_t* xq = nullptr;
  float* sx = nullptr;
};

// x: [M, K] fp32; input_scale: null, or [K] fp32 that x is multiplied by per channel (the
// smoothing of bertqa/quant/smooth.py) before step 2, fused: the result is bit for bit that of
// x * input_scale (one fp32 multiply) passed as x. y: [M, N] fp32. track_max_abs_acc: also
// RunResult::max_abs_acc, the largest |acc| of the exact int32 accumulators (the calibration of
// the int16 shift, bertqa/quant/linear.py), found in the epilogues without storing acc.
RunResult run_linear(const PackedLinear& W, const float* x, const float* input_scale, int64_t M,
                     float* y, const DebugOut& dbg, bool profile = false,
                     bool track_max_abs_acc = false);

}  // namespace bertqa
