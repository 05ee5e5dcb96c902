"""GEMM benchmark of the native int8 Linear (backend 'customcpu') on BERT-large shapes.

For every ISA path the CPU runs and every shape: check the result against the docs/quantization.md
reference first (xq, acc, q bit-exact, y within tolerance), then time it and print its rate as a
fraction of the machine's int8 peak, measured in the same run with tight multiply-add loops
(csrc/int8_peak.cpp). `python -m bertqa.bench.gemm` prints the table.

Rates per shape, all for the whole custom-node call (activation quantization, GEMM, fused
requantize/dequantize/bias), 2*M*K*N ops:
  wall   median wall-clock time of backend.run, against the peak loop's wall-clock rate on the
         same threads: what a user sees, if nothing else runs on the cores.
  busy   the threads' CPU time without barrier waits (native profile), against the peak loop's
         rate by the CPU clock of one thread, times the threads: the cores' efficiency while they
         run the node. On a shared machine (see the load average printed) wall-clock rates also
         count other processes' time slices; busy rates do not.
  gemm   the wall-clock time of the GEMM part alone (native timer; no activation quantization).

Peaks are measured next to the node, not once per run: each row runs ROUNDS rounds of [the
peak loops (best of 2 of peak_seconds / 5), then repeats / ROUNDS timed calls], takes each
fraction within its round, and reports the medians over the rounds (times and fractions alike).
On the shared VM these tables come from the machine's speed moves by phases of seconds: the
vpdpbusd loop itself ran at 469 to 917 GOPS on 2 threads within one table, so one peak from the
start of the run made rows timed in another phase read far above or below 100 %. In the slow
phases the 2-thread peak is about the 1-thread one (469 vs 470 GOPS): the host seems to run both
vCPUs on one physical core, where each thread gets half of it, so the busy column (against one
thread alone) halves too (47 % beside a 92 % wall fraction in one row); the wall fraction,
against the 2-thread loop of the same round, is the one to read then.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch

from bertqa import native
from bertqa.backends import load_backend
from bertqa.bench import cpu_name
from bertqa.quant import reference as ref
from bertqa.quant.linear import linear_weights
from bertqa.quant.node_record import RunStats
from bertqa.quant.spec import QuantSpec

# (K, N) of BERT-large's Linear layers: fused QKV, attention output, FFN up, FFN down
BERT_LARGE_SHAPES = [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)]
TOKENS = (128, 384)
PEAK_PATHS = ("avx512vnni", "avx2")     # paths with a peak loop: vpdpbusd, vpmaddwd
ROUNDS = 3                              # [peak, timed calls] rounds per row


def check_against_reference(backend, handle, lw, x) -> str:
    """'ok' or what differs; the integers must match exactly, y within the SPEC tolerance."""
    d = backend.run_debug(handle, x)
    y_ref, p = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts, lw.spec.requant)
    for key in ("xq", "acc", "q"):
        if not torch.equal(d[key], p[key]):
            return f"{key} differs"
    ok = ref.within_y_tolerance(d["y"], y_ref, p["q"], p["sx"], lw.sw, lw.shift, lw.bias)
    return "ok" if ok else "y beyond tolerance"


def time_node(backend, handle, x, repeats: int) -> dict:
    """Medians over `repeats` calls: wall seconds of backend.run and of its GEMM part, and the
    threads' busy CPU seconds of the native call (a second series of calls, profiled)."""
    for _ in range(3):
        backend.run(handle, x, RunStats())
    walls, gemms = [], []
    for _ in range(repeats):
        stats = RunStats()
        t0 = time.perf_counter()
        backend.run(handle, x, stats)
        walls.append(time.perf_counter() - t0)
        gemms.append(stats.parts["gemm"])
    y = torch.empty(x.shape[0], handle.lw.out_features)
    busy = [handle.packed.profile(x.numpy(), y.numpy())["busy_seconds"] for _ in range(repeats)]
    return dict(wall=statistics.median(walls), gemm=statistics.median(gemms),
                busy=statistics.median(busy))


@dataclass
class RoundTimer:
    """Times one row's rounds: the peak loops, then the node's calls, with the fractions taken
    within the round (see the module docstring)."""
    nat: object                 # bertqa._native
    threads: int
    peak_seconds: float
    peak_isa: str | None        # the fastest path with a peak loop: %peak is against it

    def row(self, backend, handle, x, repeats: int, isa: str) -> dict:
        """The medians over ROUNDS rounds of the rates and fractions, and each round's peaks."""
        rounds = [self.round(backend, handle, x, max(3, repeats // ROUNDS), isa)
                  for _ in range(ROUNDS)]
        row = {key: statistics.median(r[key] for r in rounds) for key in rounds[0] if key != "peaks"}
        return dict(row, peaks=[r["peaks"] for r in rounds])

    def round(self, backend, handle, x, calls: int, isa: str) -> dict:
        # the loops this row's fractions need: the fastest path's and its own
        needed = [p for p in PEAK_PATHS if p in (self.peak_isa, isa)]
        peaks = measure_peaks(self.nat, needed, self.threads, self.peak_seconds / 5)
        wall_peak, core_peak = peaks.get(self.peak_isa, (float("nan"), float("nan")))
        t = time_node(backend, handle, x, calls)
        ops = 2.0 * x.shape[0] * handle.lw.in_features * handle.lw.out_features   # 2 M K N
        r = dict(peaks=peaks, wall_ms=t["wall"] * 1e3, wall_gops=ops / t["wall"] / 1e9,
                 gemm_gops=ops / t["gemm"] / 1e9, busy_gops=ops / (t["busy"] / self.threads) / 1e9)
        r.update(wall_frac=r["wall_gops"] / wall_peak, gemm_frac=r["gemm_gops"] / wall_peak,
                 busy_frac=r["busy_gops"] / (self.threads * core_peak),
                 busy_path_frac=r["busy_gops"] / (self.threads * peaks[isa][1]))
        return r


def measure_peaks(nat, isas, threads: int, seconds: float) -> dict:
    """{isa: (wall-clock GOPS on `threads` threads, CPU-clock GOPS of one thread)}, best of 2."""
    return {isa: (max(nat.measure_peak(isa, seconds, threads) for _ in range(2)),
                  max(nat.measure_peak(isa, seconds, 1, True) for _ in range(2)))
            for isa in isas}


def run_gemm_bench(threads: int | None = None, isas=None, shapes=BERT_LARGE_SHAPES,
                   tokens=TOKENS, repeats: int = 15, peak_seconds: float = 0.5) -> list[dict]:
    """One row per (ISA path, M, K, N). isas: default every path the CPU runs but 'scalar'.
    threads: for torch and the kernel during the run (restored after); None keeps the current.
    Where the extension is not built: one row {'skipped': reason}, which the printer says."""
    backend = load_backend("customcpu")
    ok, reason = backend.available()
    if not ok:
        return [dict(skipped=reason)]
    nat = native.extension()
    torch_threads = torch.get_num_threads()
    if threads is not None:
        native.set_threads(threads)
    try:
        return _run(backend, nat, isas, shapes, tokens, repeats, peak_seconds)
    finally:
        if threads is not None:
            native.set_threads(torch_threads)
            nat.set_threads(0)


def _run(backend, nat, isas, shapes, tokens, repeats, peak_seconds) -> list[dict]:
    nthreads = nat.get_threads()
    features = native.cpu_features()
    if isas is None:
        isas = [isa for isa in native.ISA_PATHS if features.get(isa) and isa != "scalar"]
    load_before = os.getloadavg()[0]
    peak_isa = next((isa for isa in PEAK_PATHS if features.get(isa)), None)   # the fastest
    timer = RoundTimer(nat, nthreads, peak_seconds, peak_isa)
    context = dict(cpu=cpu_name(), threads=nthreads, peak_isa=peak_isa,
                   openmp=os.path.basename(nat.openmp_runtime()), load_before=load_before)
    g = torch.Generator().manual_seed(0)
    rows = []
    try:
        for isa in isas:
            backend.set_isa(isa)
            for m in tokens:
                for k, n in shapes:
                    w, b = torch.randn(n, k, generator=g) * 0.03, torch.randn(n, generator=g)
                    x = torch.randn(m, k, generator=g)
                    lw = linear_weights(w, b, QuantSpec(shift=8), "int", name=f"gemm{k}x{n}")
                    handle = backend.prepare(lw)
                    check = check_against_reference(backend, handle, lw, x)
                    row = dict(context, isa=isa, path=handle.packed.path, m=m, k=k, n=n, check=check)
                    rows.append(row)
                    if check != "ok":
                        continue
                    row.update(timer.row(backend, handle, x, repeats, isa))
                    t0 = time.perf_counter()
                    for _ in range(3):
                        torch.nn.functional.linear(x, w, b)
                    row["torch_fp32_ms"] = (time.perf_counter() - t0) / 3 * 1e3
    finally:
        backend.set_isa(None)
    load_after = os.getloadavg()[0]
    for row in rows:
        row["load_after"] = load_after
    return rows


def print_gemm_table(rows: list[dict], file=None) -> None:
    if not rows or "skipped" in rows[0]:
        print(f"int8 GEMM table skipped: {rows[0]['skipped'] if rows else 'no rows'}", file=file)
        return
    c = rows[0]
    print(f"int8 Linear node (backend customcpu) on {c['cpu']}, {os.cpu_count()} CPUs: "
          f"{c['threads']} threads (OpenMP {c['openmp']}); 1-min load average "
          f"{c['load_before']:.1f} before, {rows[-1]['load_after']:.1f} after", file=file)
    if max(c["load_before"], rows[-1]["load_after"]) > 0.5:
        print("warning: other processes were running (load average above): wall-clock rates "
              "include their time slices; the busy columns do not", file=file)
    measured = [p for r in rows for p in r.get("peaks", [])]
    for isa in PEAK_PATHS:
        walls = [p[isa][0] for p in measured if isa in p]
        cores = [p[isa][1] for p in measured if isa in p]
        if walls:
            print(f"peak {isa}, measured before each row that needs it: {min(walls):.0f}-"
                  f"{max(walls):.0f} GOPS wall-clock on {c['threads']} threads, {min(cores):.0f}-"
                  f"{max(cores):.0f} GOPS per core by CPU time", file=file)
    print(f"%peak: against the int8 peak ({c['peak_isa']}), %path: against the row's own path, "
          f"each within one of {ROUNDS} rounds of [peak, timed calls], median of the rounds",
          file=file)
    print(f"{'isa':<11}{'M':>4}{'K':>6}{'N':>6} {'check':<6}{'wall ms':>8}{'wall GOPS':>10}"
          f"{'%peak':>7}{'gemm GOPS':>10}{'%peak':>7}{'busy GOPS':>10}{'%peak':>7}{'%path':>7}"
          f"{'fp32 torch ms':>14}", file=file)
    for r in rows:
        head = f"{r['isa']:<11}{r['m']:>4}{r['k']:>6}{r['n']:>6} "
        if r["check"] != "ok":
            print(head + f"FAILED: {r['check']}", file=file)
            continue
        print(head + f"{'ok':<6}{r['wall_ms']:>8.3f}{r['wall_gops']:>10.0f}{r['wall_frac']:>7.1%}"
              f"{r['gemm_gops']:>10.0f}{r['gemm_frac']:>7.1%}{r['busy_gops']:>10.0f}"
              f"{r['busy_frac']:>7.1%}{r['busy_path_frac']:>7.1%}{r['torch_fp32_ms']:>14.3f}",
              file=file)
    for note in sorted({r["path"] for r in rows if r["path"] != r["isa"]}):
        print(f"note: path {note}", file=file)


if __name__ == "__main__":
    print_gemm_table(run_gemm_bench())
