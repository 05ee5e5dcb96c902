// thread_pool.h: where the native kernels' parallel regions run (thread_pool.cpp): torch's
// OpenMP pool, or the extension's own pool of threads.
//
// By default a region is an OpenMP region on the libgomp that torch loaded, so that the native
// kernels and torch's ops between them share one pool (two pools polling side by side on the
// same cores would slow both). A calling thread switches to the native pool for a forward in
// which nothing heavy is left to torch (begin_native_forward, thread_runtime.h): libgomp fixes
// its wait policy when it starts, and each thread that starts regions gets a pool of its own,
// so the same forward ran 1.3x faster from the main thread than from a worker thread on an idle
// machine and 0.6x as fast beside a busy process (docs/speed.md, "Any thread, any load"). The
// native pool is one per process, shared by every calling thread: its threads poll for the
// next region for a while (fast when idle) and sleep at once while the contention guard runs
// the kernels on one thread or while another caller is running its kernels on its own thread
// (the pool is taken), so they never fight a neighbour or a second caller for a core.
#pragma once

#include <cstdint>
#include <type_traits>

namespace bertqa {

// One thread's place in a region: index 0 is the calling thread.
struct Team {
  int index = 0, size = 1;
  void* barrier_state = nullptr;   // the native pool's barrier; null: an OpenMP region's
  // Waits until all `size` threads of the region have called it (a no-op for one thread).
  void barrier() const;
  // This thread's [begin, end) of n items in equal contiguous shares (a static schedule).
  void share(int64_t n, int64_t* begin, int64_t* end) const {
    *begin = n * index / size;
    *end = n * (index + 1) / size;
  }
};

using TeamFn = void (*)(void* context, const Team& team);

// Runs fn(context, team) on `nthreads` threads, the calling thread among them, and returns when
// every one has returned: an OpenMP region, or on the native pool where the calling thread
// chose it (use_native_pool). With nthreads <= 1, or while another caller holds the native pool
// (a second inference thread, or a region started from inside a region), fn runs on the calling
// thread alone (team.size == 1); kernels give the same results for any team size.
void run_team(int nthreads, TeamFn fn, void* context);

template <class F>
void run_team(int nthreads, F&& f) {
  using Fn = std::remove_reference_t<F>;
  run_team(nthreads, [](void* c, const Team& t) { (*static_cast<Fn*>(c))(t); },
           const_cast<void*>(static_cast<const void*>(&f)));
}

// Whether the calling thread's regions run on the native pool (else OpenMP); returns the
// previous choice.
bool use_native_pool(bool on);

// The native pool's threads started so far (for tests).
int pool_threads();

}  // namespace bertqa
