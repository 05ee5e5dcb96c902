// thread_runtime.cpp: the native runtime around the kernels, apart from their math: the CPU
// feature probes, the thread count shared with torch's OpenMP pool, the contention guard that
// runs the kernels on one thread while another process holds a core, and the peak loops the
// GEMM benchmark is judged by (int8_peak.cpp holds the loops themselves).
#include "thread_runtime.h"

#include "thread_pool.h"

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_max_threads() { return 1; }
static void omp_set_num_threads(int) {}
#endif

namespace bertqa {

int64_t peak_loop_vnni(int64_t iters);
int64_t peak_loop_avx2(int64_t iters);
int64_t peak_loop_ops(bool vnni, int64_t iters);

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double thread_cpu_seconds() {            // CPU time of the calling thread (excludes preemption)
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

namespace {

int g_threads = 0;                     // 0: follow omp_get_max_threads() (torch's setting)
thread_local int t_threads = 0;        // the calling thread's own count (0: the process's)

// Contention guard. An OpenMP region ends when its last thread does: when another process holds
// one of the cores, every region waits for the descheduled thread (a scheduler time slice, ms),
// and a 2-thread forward runs several times slower than a 1-thread one (measured: bundled model,
// one busy-looping process beside it, 55 vs 19 ms per question). So every kSampleEvery-th
// multi-threaded Linear call compares each thread's CPU time in the region with the region's wall
// time; when one thread lost more than kLostFraction of it, the native kernels run on one thread
// for a while (an episode), then try two again. Results never depend on the thread count.
// Episodes grow: the first lasts kFirstSerialSeconds, each one that follows a contended region
// twice as long as the one before, up to kMaxSerialSeconds, and a clean judged region starts
// over. A steady neighbour thus keeps the kernels on one thread (a 0.2 s episode, then a few
// probing calls), while a short one costs little: ONNX Runtime's pool spins for ~50 ms after each
// run (measured); with fixed 0.2 s episodes the BERT-large forward at seq 128 right after an ORT
// run took 257-313 ms (the one after it 170-291 ms), with growing episodes 166-264 (124-137) ms.
constexpr double kFirstSerialSeconds = 0.02;
constexpr double kMaxSerialSeconds = 0.2;
constexpr double kMinJudgedSeconds = 2e-4;   // shorter regions: thread wake-up latency dominates
constexpr double kLostFraction = 0.3;
constexpr uint32_t kSampleEvery = 4;
std::atomic<bool> g_guard{true};
std::atomic<double> g_serial_until{0.0};
std::atomic<double> g_next_episode{kFirstSerialSeconds};
std::atomic<int64_t> g_serial_episodes{0};
std::atomic<uint32_t> g_region_counter{0};

}  // namespace

bool judge_next_region(int nthreads) {
  return nthreads > 1 && g_guard.load(std::memory_order_relaxed) &&
         g_region_counter.fetch_add(1, std::memory_order_relaxed) % kSampleEvery == 0;
}

void note_region(double wall, double min_cpu) {
  if (!region_contended(wall, min_cpu)) {
    g_next_episode.store(kFirstSerialSeconds, std::memory_order_relaxed);
    return;
  }
  const double episode = g_next_episode.load(std::memory_order_relaxed);
  g_serial_until.store(now() + episode, std::memory_order_relaxed);
  g_next_episode.store(episode * 2 < kMaxSerialSeconds ? episode * 2 : kMaxSerialSeconds,
                       std::memory_order_relaxed);
  g_serial_episodes.fetch_add(1, std::memory_order_relaxed);
}

std::map<std::string, bool> cpu_features() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                    __builtin_cpu_supports("avx512vnni");
  return {{"avx2", avx2}, {"avx512vnni", vnni}, {"scalar", true}};
}

bool cpu_supports_isa(const std::string& isa) {
  const auto features = cpu_features();
  const auto it = features.find(isa);
  return it != features.end() && it->second;
}

void set_threads(int n) {
  if (n < 0) throw std::invalid_argument("threads must be >= 0 (0: follow OpenMP / torch)");
  g_threads = n;
}

void set_thread_threads(int n) {
  if (n < 0) throw std::invalid_argument("threads must be >= 0 (0: the process's setting)");
  t_threads = n;
  if (n > 0) omp_set_num_threads(n);   // this thread's ICV: torch's regions started from it too
}

ForwardThreads begin_native_forward(int omp_threads) {
  if (omp_threads < 1) throw std::invalid_argument("omp_threads must be >= 1");
  const int native = t_threads, omp = omp_get_max_threads();
  t_threads = get_threads();
  omp_set_num_threads(omp_threads);
  return {native, omp, use_native_pool(true)};
}

void end_native_forward(const ForwardThreads& before) {
  t_threads = before.native;
  if (before.omp > 0) omp_set_num_threads(before.omp);
  use_native_pool(before.pool);
}

int get_threads() {
  if (t_threads > 0) return t_threads;
  return g_threads > 0 ? g_threads : omp_get_max_threads();
}

bool guard_serial_now() {
  return g_guard.load(std::memory_order_relaxed) &&
         now() < g_serial_until.load(std::memory_order_relaxed);
}

int threads_now() {
  const int n = get_threads();
  return n > 1 && guard_serial_now() ? 1 : n;
}

bool region_contended(double wall, double min_cpu) {
  return wall >= kMinJudgedSeconds && wall - min_cpu > kLostFraction * wall;
}

ThreadGuardState thread_guard(int enable, double serial_for) {
  if (enable >= 0) g_guard.store(enable != 0);
  if (serial_for >= 0) g_serial_until.store(serial_for > 0 ? now() + serial_for : 0.0);
  if (serial_for == 0) g_next_episode.store(kFirstSerialSeconds);
  return {g_guard.load(), now() < g_serial_until.load(), g_serial_episodes.load(),
          g_next_episode.load()};
}

std::string openmp_runtime() {
#ifdef _OPENMP
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&omp_get_max_threads), &info) && info.dli_fname)
    return info.dli_fname;
  return "OpenMP (library unknown)";
#else
  return "none (built without OpenMP: one thread)";
#endif
}

double measure_peak(const std::string& isa, double seconds, int threads, bool cpu_time) {
  const bool vnni = isa == "avx512vnni";
  if (!vnni && isa != "avx2") throw std::invalid_argument("peak is measured for avx512vnni|avx2");
  if (!cpu_supports_isa(isa)) throw std::invalid_argument("this CPU cannot run " + isa);
  auto loop = vnni ? peak_loop_vnni : peak_loop_avx2;
  const int n = cpu_time ? 1 : threads > 0 ? threads : get_threads();
  int64_t iters = 1 << 16;
  volatile int64_t sink = 0;
  for (double t = 0; t < 0.02;) {          // warm up the clocks and size the loop
    const double t0 = now();
    sink = sink + loop(iters);
    t = now() - t0;
    if (t < 0.02) iters *= 2;
  }
  iters = int64_t(double(iters) * seconds / 0.02) + 1;
  if (cpu_time) {                          // one thread, timed by its CPU clock
    const double c0 = thread_cpu_seconds();
    sink = sink + loop(iters);
    return double(peak_loop_ops(vnni, iters)) / (thread_cpu_seconds() - c0) / 1e9;
  }
  std::atomic<int> ran{0};
  const double t0 = now();
  std::atomic<int64_t> total{0};
  run_team(n, [&](const Team& team) {
    total.fetch_add(loop(iters));
    if (team.index == 0) ran.store(team.size);
  });
  sink = sink + total.load();
  const double elapsed = now() - t0;
  return double(peak_loop_ops(vnni, iters)) * ran.load() / elapsed / 1e9;
}

}  // namespace bertqa
