// thread_pool.cpp: the two places a native region runs (thread_pool.h says why): an OpenMP
// region, or the extension's own pool of worker threads.
//
// On the native pool, a region is posted as one 64-bit word, (sequence << 8) | team size, so that a worker reads
// which region and whether it takes part in one load; only takers touch the region's function,
// and the caller waits for every taker before it posts the next region. After a region a worker
// polls for the next one for kPollSeconds (what makes back-to-back kernels cheap on an idle
// machine), except while the contention guard has the kernels on one thread or another caller
// is running kernels on its own thread: then it sleeps on a condition variable at once, and the
// poster wakes it. Barriers and the caller's wait for the takers poll, then yield the core.
// Workers are started on first need and live until the process ends; a forked child starts a
// fresh pool (the parent's threads do not exist there).
#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simd.h"
#include "thread_runtime.h"

namespace bertqa {
namespace {

constexpr double kPollSeconds = 2e-3;   // libgomp's default polls for ~3 ms as well
constexpr int kMaxTeam = 255;           // the size field of the region word

inline void relax() { _mm_pause(); }

// Polls until done() holds: a few thousand pauses, then sched_yield (a descheduled peer gets
// the core back instead of waiting out our time slice).
template <class Done>
inline void wait_until(Done done) {
  for (int spins = 0; !done(); ++spins) {
    if (spins < 4096) relax();
    else sched_yield();
  }
}

struct Barrier {
  std::atomic<int> arrived{0};
  std::atomic<uint32_t> phase{0};
  void wait(int size) {
    const uint32_t p = phase.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == size - 1) {
      arrived.store(0, std::memory_order_relaxed);
      phase.store(p + 1, std::memory_order_release);
      return;
    }
    wait_until([&] { return phase.load(std::memory_order_acquire) != p; });
  }
};

struct Pool {
  std::atomic<bool> taken{false};        // a caller's region is running on the pool
  std::atomic<int> solo_callers{0};      // callers running their kernels alone right now
  std::atomic<uint64_t> region{0};       // (sequence << 8) | team size
  std::atomic<int> finished{0};          // takers of the current region that returned
  TeamFn fn = nullptr;
  void* context = nullptr;
  Barrier barrier;
  std::mutex mutex;
  std::condition_variable wake;
  std::atomic<int> sleepers{0};
  std::vector<std::thread> threads;      // index i runs team index i + 1

  bool may_poll() const {
    return solo_callers.load(std::memory_order_relaxed) == 0 && !guard_serial_now();
  }

  uint64_t next_region(uint64_t seen) {
    const double until = now() + kPollSeconds;
    for (int spins = 0;; ++spins) {
      const uint64_t r = region.load(std::memory_order_acquire);
      if (r != seen) return r;
      if ((spins & 63) == 63 && (now() > until || !may_poll())) break;
      relax();
    }
    std::unique_lock<std::mutex> lock(mutex);
    sleepers.fetch_add(1);
    uint64_t r;
    while ((r = region.load()) == seen) wake.wait(lock);
    sleepers.fetch_sub(1);
    return r;
  }

  void work(int index, uint64_t seen) {   // seen: the region word before the one it starts for
    for (;;) {
      seen = next_region(seen);
      const int size = int(seen & 0xff);
      if (index >= size) continue;
      Team team{index, size, &barrier};
      fn(context, team);
      finished.fetch_add(1, std::memory_order_release);
    }
  }

  void post(int size, TeamFn f, void* c) {
    const uint64_t before = region.load(std::memory_order_relaxed);
    while (int(threads.size()) < size - 1) {
      const int index = int(threads.size()) + 1;
      threads.emplace_back([this, index, before] { work(index, before); });
      threads.back().detach();
    }
    fn = f;
    context = c;
    finished.store(0, std::memory_order_relaxed);
    const uint64_t seq = (before >> 8) + 1;
    region.store((seq << 8) | uint64_t(size));
    if (sleepers.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex);
      wake.notify_all();
    }
  }
};

// Never destroyed: detached workers may still be waiting on it at exit.
Pool* g_pool = new Pool;

void fresh_pool_after_fork() { g_pool = new Pool; }   // the child's: no threads yet

const bool g_atfork = pthread_atfork(nullptr, nullptr, fresh_pool_after_fork) == 0;

thread_local bool t_native_pool = false;

void run_openmp(int nthreads, TeamFn fn, void* context) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
  fn(context, Team{omp_get_thread_num(), omp_get_num_threads(), nullptr});
#else
  (void)nthreads;
  fn(context, Team{});
#endif
}

}  // namespace

void Team::barrier() const {
  if (size <= 1) return;
  if (barrier_state) {
    static_cast<Barrier*>(barrier_state)->wait(size);
    return;
  }
#ifdef _OPENMP
#pragma omp barrier
#endif
}

bool use_native_pool(bool on) {
  const bool before = t_native_pool;
  t_native_pool = on;
  return before;
}

void run_team(int nthreads, TeamFn fn, void* context) {
  Pool& pool = *g_pool;
  bool expected = false;
  if (nthreads > kMaxTeam) nthreads = kMaxTeam;
  if (nthreads <= 1) {
    fn(context, Team{});
    return;
  }
  if (!t_native_pool) {
    run_openmp(nthreads, fn, context);
    return;
  }
  if (!pool.taken.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
    pool.solo_callers.fetch_add(1, std::memory_order_relaxed);
    fn(context, Team{});
    pool.solo_callers.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  pool.post(nthreads, fn, context);
  fn(context, Team{0, nthreads, &pool.barrier});
  wait_until([&] { return pool.finished.load(std::memory_order_acquire) == nthreads - 1; });
  pool.taken.store(false, std::memory_order_release);
}

int pool_threads() {
  (void)g_atfork;
  return int(g_pool->threads.size());
}

}  // namespace bertqa
