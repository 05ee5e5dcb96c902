"""What the fused erf GELU costs the native int8 Linear: one shape timed with and without it.

`python -m bertqa.bench.epilogue [--m 155 --k 384 --n 1536 --threads 2]` (default: the bundled
model's ffn.up at the built-in questions' length) packs one random int8 layer twice, GELU fused
into its store and not, and times both on the native pool (bertqa.native.torch_on_caller, as a
customcpu int forward runs them), interleaved in rounds, against the machine's int8 peak
measured in every round (each round's rates against its own peak, then the median).
docs/speed.md ("Where the time goes") quotes it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bertqa import native
from bertqa.backends import load_backend
from bertqa.quant.linear import linear_weights
from bertqa.quant.spec import QuantSpec


def gelu_cost(m: int = 155, k: int = 384, n: int = 1536, rounds: int = 7, calls: int = 200) -> dict:
    """{'isa', 'peak_gops', 'plain_ms', 'gelu_ms', 'plain_gops', 'gelu_gops', 'plain_of_peak',
    'gelu_of_peak', 'gelu_share'}: medians over the rounds (the *_of_peak fractions: each round
    against its own peak); gelu_share is the GELU's part of the fused call's time."""
    backend = load_backend("customcpu")
    ok, reason = backend.available()
    if not ok:
        raise RuntimeError(f"customcpu: {reason}")
    backend = backend.configure(gelu="native")
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    packed = {gelu: backend.prepare(linear_weights(w, b, QuantSpec(shift=4), "int", name="up",
                                                   gelu=gelu)).packed
              for gelu in (False, True)}
    x = torch.randn(m, k, generator=g).numpy()
    y = np.empty((m, n), np.float32)
    ext = native.extension()
    isa = packed[False].isa
    peak_isa = "avx512vnni" if isa == "avx512vnni" else "avx2"
    peaks = []
    times = {False: [], True: []}
    with native.torch_on_caller():
        for _ in range(rounds):
            if isa != "scalar":                 # the VM's speed moves: the peak in every round
                peaks.append(max(ext.measure_peak(peak_isa, 0.1, 0, False) for _ in range(2)))
            for gelu, p in packed.items():
                for _ in range(max(1, calls // 10)):
                    p.run(x, y)
                t = time.perf_counter()
                for _ in range(calls):
                    p.run(x, y)
                times[gelu].append((time.perf_counter() - t) / calls)
    plain, fused = statistics.median(times[False]), statistics.median(times[True])
    ops = 2.0 * m * k * n

    def of_peak(gelu):                          # each round's rate against its own peak
        if not peaks:
            return float("nan")
        return statistics.median(ops / t / 1e9 / pk for t, pk in zip(times[gelu], peaks))

    return dict(isa=isa, peak_gops=statistics.median(peaks) if peaks else float("nan"),
                plain_ms=plain * 1e3, gelu_ms=fused * 1e3,
                plain_gops=ops / plain / 1e9, gelu_gops=ops / fused / 1e9,
                plain_of_peak=of_peak(False), gelu_of_peak=of_peak(True),
                gelu_share=1 - plain / fused)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bertqa.bench.epilogue", description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=155)
    p.add_argument("--k", type=int, default=384)
    p.add_argument("--n", type=int, default=1536)
    p.add_argument("--threads", type=int, default=None, help="default: torch's")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=200)
    a = p.parse_args(argv)
    if a.threads:
        native.set_threads(a.threads)
    r = gelu_cost(a.m, a.k, a.n, a.rounds, a.calls)
    threads = native.extension().get_threads()
    print(f"int8 Linear M {a.m} K {a.k} N {a.n}, {r['isa']} path, {threads} threads, native pool, "
          f"{a.rounds} interleaved rounds of {a.calls} calls, median; int8 peak {r['peak_gops']:.0f} GOPS (each round against its own)")
    for name, key in (("without GELU", "plain"), ("GELU fused", "gelu")):
        print(f"  {name:13s} {r[key + '_ms']:.3f} ms  {r[key + '_gops']:.0f} GOPS  "
              f"{100 * r[key + '_of_peak']:.0f}% of peak")
    print(f"  the GELU's share of the fused call: {100 * r['gelu_share']:.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
