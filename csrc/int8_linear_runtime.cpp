// int8_linear_runtime.cpp: run_linear -- docs/quantization.md steps 2-5 in one
// parallel region (thread_pool.h): max|v| per row (finding NaN/Inf on the way: the max of the |v| bit patterns is
// >= that of Inf), the scales and the quantized rows, then the GEMM tiles with their epilogue.
// v is the input row x, or x * input_scale for a smoothed layer: the per-channel multiply is
// fused into both passes over the row (one fp32 multiply each time, so the same v bit for bit;
// nothing is written back). On one core for [384, 4096] (avx512vnni) that added ~0.1-0.15 ms to
// the quantize phase, where torch's separate multiply (a full extra pass over [M, K] in memory)
// cost ~0.65 ms. For calibration (track_max_abs_acc) each thread's epilogues also keep the
// largest |acc| they saw, combined once per thread at the end of the call.
#include "int8_linear_runtime.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "thread_pool.h"

namespace bertqa {

namespace {

constexpr int64_t kSerialMacs = 1 << 20;   // below this many multiply-adds, one thread

float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// SPEC step 2 scales: sx = amax / 127 and inv = 127 / amax (one fp32 division each);
// amax == 0 gives sx = 1 and inv = 0, so that xq = rint(x * 0) = 0.
void activation_scale(uint32_t amax_bits, float* sx, float* inv) {
  const float amax = float_from_bits(amax_bits);
  if (amax == 0.0f) {
    *sx = 1.0f;
    *inv = 0.0f;
  } else {
    *sx = amax / 127.0f;
    *inv = 127.0f / amax;
  }
}

int threads_for(int64_t macs) { return macs < kSerialMacs ? 1 : threads_now(); }

}  // namespace

RunResult run_linear(const PackedLinear& W, const float* x, const float* input_scale, int64_t M,
                     float* y, const DebugOut& dbg, bool profile, bool track_max_abs_acc) {
  RunResult res;
  if (M == 0) return res;
  const IsaKernels& kern = *W.kern;
  const int64_t K = W.K;
  // +64: rows exactly 1 or 4 KiB apart would map to the same L1 sets
  const int64_t lda = round_up(W.Kp * kern.act_bytes, 64) + 64;
  // Scratch of the calling thread, reused across calls; the other threads see it only through
  // these pointers (a thread_local named inside the region would be each worker's own).
  thread_local AlignedArray<uint8_t> acts_buffer;
  thread_local std::vector<uint32_t> amax_buffer;
  thread_local std::vector<float> scale_buffer;
  acts_buffer.grow(size_t(M * lda));
  amax_buffer.resize(size_t(M));
  scale_buffer.resize(size_t(M));
  uint8_t* const acts = acts_buffer.data();
  uint32_t* const amax_bits = amax_buffer.data();
  float* const sx = scale_buffer.data();
  std::atomic<int64_t> next_tile{0};
  GemmCall call{&W, acts, lda, M, sx, y, dbg.acc, dbg.q, &next_tile, track_max_abs_acc};
  const int nthreads = threads_for(M * K * W.N);
  const bool judge = judge_next_region(nthreads);
  double min_cpu = 1e30;
  GemmCounts counts;
  uint32_t worst = 0;
  double busy_seconds = 0;
  const double t0 = now();
  double t1 = t0;
  // Barriers: one after the per-row pass (a per-tensor scale needs every row's max), one more
  // after quantizing with a per-tensor scale; then the GEMM, whose tiles are claimed dynamically.
  // With `profile`, each thread adds up its CPU time between barriers: work, without the waits.
  std::mutex merge;                            // the threads' counts, merged once per thread
  run_team(nthreads, [&](const Team& team) {
    const double region_cpu0 = judge ? thread_cpu_seconds() : 0;
    double busy = 0, c0 = profile ? thread_cpu_seconds() : 0;
    int64_t begin, end;
    team.share(M, &begin, &end);
    for (int64_t m = begin; m < end; ++m) {
      amax_bits[m] = kern.abs_max_bits(x + m * K, input_scale, K);
      if (W.acts_row && amax_bits[m] < 0x7f800000u) {     // quantize while the row is in cache
        float inv;
        activation_scale(amax_bits[m], &sx[m], &inv);
        kern.quantize_row(x + m * K, input_scale, K, W.Kp, inv, acts + m * lda);
      }
    }
    if (profile) busy += thread_cpu_seconds() - c0;
    team.barrier();
    uint32_t local_worst = 0;                  // every thread finds the same value
    for (int64_t m = 0; m < M; ++m) local_worst = amax_bits[m] > local_worst ? amax_bits[m] : local_worst;
    const bool finite = local_worst < 0x7f800000u;
    if (!W.acts_row && finite) {
      float sx_tensor, inv;
      activation_scale(local_worst, &sx_tensor, &inv);
      c0 = profile ? thread_cpu_seconds() : 0;
      for (int64_t m = begin; m < end; ++m) {
        sx[m] = sx_tensor;   // v multiplied again, as in the first pass: the same bits
        kern.quantize_row(x + m * K, input_scale, K, W.Kp, inv, acts + m * lda);
      }
      if (profile) busy += thread_cpu_seconds() - c0;
      team.barrier();
    }
    GemmCounts mine;
    if (finite) {
      if (team.index == 0) t1 = now();         // the GEMM starts
      c0 = profile ? thread_cpu_seconds() : 0;
      mine = kern.gemm(call, team.size);
      if (profile) busy += thread_cpu_seconds() - c0;
    }
    const double cpu = judge ? thread_cpu_seconds() - region_cpu0 : 0;
    std::lock_guard<std::mutex> lock(merge);
    counts.add(mine);
    busy_seconds += busy;
    if (team.index == 0) worst = local_worst;
    if (judge) min_cpu = cpu < min_cpu ? cpu : min_cpu;
  });
  if (judge) note_region(now() - t0, min_cpu);
  const int nonfinite = worst > 0x7f800000u ? 2 : worst == 0x7f800000u ? 1 : 0;
  res.nonfinite = nonfinite;
  res.saturated = counts.saturated;
  res.max_abs_acc = counts.max_abs_acc;
  res.seconds_quantize = t1 - t0;
  res.seconds_gemm = now() - t1;
  res.busy_seconds = busy_seconds;
  res.threads = nthreads;
  if (dbg.xq && !nonfinite) {
    for (int64_t m = 0; m < M; ++m) {
      const uint8_t* row = acts + m * lda;
      for (int64_t k = 0; k < K; ++k) {
        int8_t v;
        if (kern.act_format == ActFormat::u8_plus128) v = int8_t(row[k] ^ 0x80);
        else if (kern.act_format == ActFormat::i16) v = int8_t(reinterpret_cast<const int16_t*>(row)[k]);
        else v = int8_t(row[k]);
        dbg.xq[m * K + k] = v;
      }
      dbg.sx[m] = sx[m];
    }
  }
  return res;
}

}  // namespace bertqa
