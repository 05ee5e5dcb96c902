"""GEMM benchmark of the native int8 Linear (backend 'customcpu') on BERT-large shapes.

For every ISA path the CPU runs and every shape: check the result against the SPEC-quant
reference first (xq, acc, q bit-exact, y within tolerance), then time the node (median of
repeats) and print its rate as a fraction of the machine's int8 peak, measured in the same run
with a tight vpdpbusd loop (int8_peak.cpp). `python -m bertqa.bench.gemm` prints the table.

Two rates per shape: 'node' is the whole custom-node call (activation quantization, GEMM, fused
requantize/dequantize/bias) as the model sees it; 'gemm' is the native timer's GEMM part (the
GEMM with its fused epilogue, without the activation quantization pass).
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch

from bertqa.backends import get_backend
from bertqa.backends import customcpu
from bertqa.backends.base import RunStats
from bertqa.quant import reference as ref
from bertqa.quant.linear import linear_weights
from bertqa.quant.spec import QuantSpec

# (K, N) of BERT-large's Linear layers: fused QKV, attention output, FFN up, FFN down
BERT_LARGE_SHAPES = [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)]
TOKENS = (128, 384)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_against_reference(backend, handle, lw, x) -> str:
    """'ok' or what differs; the integers must match exactly, y within the SPEC tolerance."""
    d = backend.run_debug(handle, x)
    y_ref, p = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts, lw.spec.requant)
    for key in ("xq", "acc", "q"):
        if not torch.equal(d[key], p[key]):
            return f"{key} differs"
    mult = ref.dequant_multiplier(p["sx"], lw.sw, lw.shift)
    tol = 1e-6 * ((p["q"].float() * mult).abs() + lw.bias.abs()) + 1e-6 * mult
    return "ok" if bool(((d["y"] - y_ref).abs() <= tol).all()) else "y beyond tolerance"


def time_node(backend, handle, x, repeats: int) -> tuple[float, float]:
    """Median seconds of the whole call and of its GEMM part (native timer)."""
    for _ in range(3):
        backend.run(handle, x, RunStats())
    calls, gemms = [], []
    for _ in range(repeats):
        stats = RunStats()
        t0 = time.perf_counter()
        backend.run(handle, x, stats)
        calls.append(time.perf_counter() - t0)
        gemms.append(stats.parts["gemm"])
    return statistics.median(calls), statistics.median(gemms)


def run_gemm_bench(threads: int | None = None, isas=None, shapes=BERT_LARGE_SHAPES,
                   tokens=TOKENS, repeats: int = 15, peak_seconds: float = 0.5) -> list[dict]:
    """One row per (ISA path, M, K, N). isas: default every path the CPU runs but 'scalar'."""
    backend = get_backend("customcpu")
    nat = customcpu.native()
    if threads is not None:
        customcpu.set_threads(threads)
    nthreads = nat.get_threads()
    features = customcpu.cpu_features()
    if isas is None:
        isas = [isa for isa in customcpu.ISA_PATHS if features.get(isa) and isa != "scalar"]
    load_before = os.getloadavg()[0]
    # the peak of each path's multiply-add instruction; the machine's int8 peak is the best one
    path_peaks = {isa: max(nat.measure_peak(isa, peak_seconds, nthreads) for _ in range(2))
                  for isa in ("avx512vnni", "avx2") if features.get(isa)}
    peak_isa = max(path_peaks, key=path_peaks.get) if path_peaks else None
    peak = path_peaks.get(peak_isa, float("nan"))
    context = dict(cpu=cpu_name(), threads=nthreads, peak_isa=peak_isa, peak_gops=peak,
                   path_peaks=path_peaks, openmp=os.path.basename(nat.openmp_runtime()),
                   load_before=load_before)
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
                    if check == "ok":
                        call_s, gemm_s = time_node(backend, handle, x, repeats)
                        ops = 2.0 * m * k * n
                        row.update(node_ms=call_s * 1e3, node_gops=ops / call_s / 1e9,
                                   gemm_gops=ops / gemm_s / 1e9)
                        row.update(node_frac=row["node_gops"] / peak, gemm_frac=row["gemm_gops"] / peak,
                                   path_frac=row["gemm_gops"] / path_peaks.get(isa, float("nan")))
                        t0 = time.perf_counter()
                        for _ in range(3):
                            torch.nn.functional.linear(x, w, b)
                        row["torch_fp32_ms"] = (time.perf_counter() - t0) / 3 * 1e3
                    rows.append(row)
    finally:
        backend.set_isa(None)
    load_after = os.getloadavg()[0]
    for row in rows:
        row["load_after"] = load_after
    return rows


def print_gemm_table(rows: list[dict], file=None) -> None:
    if not rows:
        print("no rows", file=file)
        return
    c = rows[0]
    print(f"int8 GEMM, backend customcpu on {c['cpu']}: {c['threads']} threads "
          f"(OpenMP {c['openmp']}); 1-min load average {c['load_before']:.1f} before, "
          f"{rows[-1]['load_after']:.1f} after", file=file)
    peaks = ", ".join(f"{isa} {gops:.0f} GOPS" for isa, gops in c["path_peaks"].items())
    print(f"measured peaks (tight multiply-add loops, {c['threads']} threads): {peaks}; %peak is "
          f"against the int8 peak ({c['peak_isa']}), %path against the row's own path", file=file)
    print(f"{'isa':<11} {'M':>4} {'K':>5} {'N':>5} {'check':<6} {'node ms':>8} {'node GOPS':>9} "
          f"{'%peak':>6} {'gemm GOPS':>9} {'%peak':>6} {'%path':>6} {'fp32 torch ms':>13}", file=file)
    for r in rows:
        if r["check"] != "ok":
            print(f"{r['isa']:<11} {r['m']:>4} {r['k']:>5} {r['n']:>5} FAILED: {r['check']}", file=file)
            continue
        print(f"{r['isa']:<11} {r['m']:>4} {r['k']:>5} {r['n']:>5} {'ok':<6} {r['node_ms']:>8.3f} "
              f"{r['node_gops']:>9.0f} {r['node_frac']:>6.1%} {r['gemm_gops']:>9.0f} "
              f"{r['gemm_frac']:>6.1%} {r['path_frac']:>6.1%} {r['torch_fp32_ms']:>13.3f}", file=file)
    notes = {r["path"] for r in rows if r["path"] != r["isa"]}
    for note in sorted(notes):
        print(f"note: path {note}", file=file)


if __name__ == "__main__":
    print_gemm_table(run_gemm_bench())
