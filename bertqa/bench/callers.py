"""Any thread, any load: `QAModel.answer` called from the main thread and from a worker thread,
on an idle machine and beside a busy-looping process, in one run (`bertqa bench --callers`).

An OpenMP pool behaves differently for the two callers: libgomp keeps one pool per thread that
starts parallel regions, and its idle threads poll (up to GOMP_SPINCOUNT times) before they
sleep only while libgomp manages no more threads than there are CPUs. A worker thread's pool
comes on top of the main thread's, so its threads sleep at once; the main thread's poll, on the
cores a neighbour process also wants. The native runtime's contention guard (csrc/
thread_runtime.cpp) runs its kernels on one thread while it sees a neighbour, and lowers the
computing thread's OpenMP count with them, so that torch's regions between the native calls do
not wake the polling pool either. This bench shows the effect: questions/s per caller and load,
median of interleaved rounds, and the main thread's over the worker's.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

NEIGHBOUR = "while True: pass"          # one busy-looping process: a core taken from the model


def rate(qa, pairs, seconds: float) -> float:
    """Questions/s of qa.answer in a loop on the calling thread."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        qa.answer(*pairs[n % len(pairs)])
        n += 1
    return n / (time.perf_counter() - t0)


def measure(qa, pairs, seconds: float, rounds: int) -> dict:
    """{(load, caller): [questions/s per round]} for load idle/loaded and caller main/worker,
    the four interleaved in every round."""
    runs = {(load, caller): [] for load in ("idle", "loaded") for caller in ("main", "worker")}
    from bertqa.bench.load_serve import direct_qps
    callers = {"main": rate, "worker": lambda qa, pairs, seconds: direct_qps(qa, pairs, 1, seconds)}
    rate(qa, pairs, min(1.0, seconds))                    # warm up: allocations, pools
    for _ in range(rounds):
        for load in ("idle", "loaded"):
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if load == "loaded" else None
            try:
                if neighbour:
                    time.sleep(0.2)
                for caller, run in callers.items():
                    runs[load, caller].append(run(qa, pairs, seconds))
            finally:
                if neighbour:
                    neighbour.kill()
                    neighbour.wait()
    return runs


def format_table(runs: dict) -> str:
    lines = ["| machine | main thread q/s | worker thread q/s | main / worker |", "|---|---:|---:|---:|"]
    for load, label in (("idle", "idle"), ("loaded", "a busy-looping process beside")):
        main, worker = (statistics.median(runs[load, c]) for c in ("main", "worker"))
        lines.append(f"| {label} | {main:.1f} | {worker:.1f} | {main / worker:.2f} |")
    return "\n".join(lines)


def run_callers_bench(model: str | None, target: str, precision: str, threads: int | None,
                      seconds: float = 2.0, rounds: int = 3) -> str:
    import os

    import bertqa
    from bertqa import native
    from bertqa.bench.load_serve import questions
    qa = bertqa.load(model=model or "bundled", target=target, precision=precision, threads=threads)
    pairs = questions()
    guard = native.extension().thread_guard() if native.unavailable() is None else None
    episodes = guard["serial_episodes"] if guard else 0
    runs = measure(qa, pairs, seconds, rounds)
    head = (f"# callers: {qa.model_name}, target {target} {precision}, {qa.header()['linear backend']}; "
            f"{os.cpu_count()} CPUs, {rounds} interleaved rounds of {seconds:g} s, median")
    tail = ""
    if guard:
        tail = (f"\ncontention guard: {native.extension().thread_guard()['serial_episodes'] - episodes} "
                "serial episodes during the run")
    return f"{head}\n{format_table(runs)}{tail}"
