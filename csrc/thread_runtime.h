// thread_runtime.h: the native runtime apart from the math (thread_runtime.cpp): CPU feature
// probes, the thread count, the contention guard, and the measured peak of the int8 loops.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace bertqa {

double now();                  // steady clock, seconds
double thread_cpu_seconds();   // CPU time of the calling thread (excludes preemption)

std::map<std::string, bool> cpu_features();
bool cpu_supports_isa(const std::string& isa);
void set_threads(int n);
// The calling thread's own count (0: back to the process's), for the native kernels and for the
// OpenMP regions torch starts from this thread; other threads keep theirs.
void set_thread_threads(int n);
int get_threads();
// A forward in which nothing heavy is left to torch, from the calling thread: its native
// kernels keep the thread's present count and run on the native pool (thread_pool.h), the
// OpenMP regions torch starts from it get `omp_threads`. Returns what end_native_forward takes
// to undo it.
struct ForwardThreads {
  int native, omp;
  bool pool;
};
ForwardThreads begin_native_forward(int omp_threads);
void end_native_forward(const ForwardThreads& before);
// The threads the native kernels use now: get_threads(), or 1 while the contention guard (see
// thread_runtime.cpp) has seen another process take a core from a region.
int threads_now();
// Whether the contention guard has the native kernels on one thread right now.
bool guard_serial_now();
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

// Whether the next region of `nthreads` threads is one the guard samples (every few calls).
bool judge_next_region(int nthreads);

}  // namespace bertqa
