// int8_linear_runtime.h: the host side of the native int8 Linear that is not Python binding:
// CPU feature probes, the thread count, and the fused call (int8_linear_runtime.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "int8_linear.h"

namespace bertqa {

// SPEC-quant: |acc| <= K * 127 * 127 fits int32 for K < 133,000 (with the rounding half added).
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

std::map<std::string, bool> cpu_features();
bool cpu_supports_isa(const std::string& isa);
void set_threads(int n);
int get_threads();
// The threads the native kernels use now: get_threads(), or 1 while the contention guard (see
// int8_linear_runtime.cpp) has seen another process take a core from a region.
int threads_now();
// The guard's judgement of one region: wall seconds against the smallest thread CPU time in it.
bool region_contended(double wall, double min_cpu);
// The guard's step after a judged region: a contended one starts a serial episode (each one
// longer than the last, up to 0.2 s), a clean one makes the next episode the shortest again.
void note_region(double wall, double min_cpu);
struct ThreadGuardState {
  bool enabled, serial_now;
  int64_t serial_episodes;
  double next_episode_seconds;   // how long the next contended region's episode will last
};
// enable: 1 on, 0 off, -1 unchanged; serial_for: > 0 one thread for that long (tests), 0 end a
// serial episode now (the next one will be the shortest), < 0 unchanged.
ThreadGuardState thread_guard(int enable, double serial_for);
std::string openmp_runtime();
// int8 GOPS of a tight multiply-add loop on `threads` threads (0: get_threads()), by the wall
// clock; with cpu_time, on the calling thread alone by its CPU clock (robust on a shared machine).
double measure_peak(const std::string& isa, double seconds, int threads, bool cpu_time);

}  // namespace bertqa
