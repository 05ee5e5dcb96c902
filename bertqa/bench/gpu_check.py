"""Issue 7's GPU check: parity first, then kernel and model timings, on one CUDA device.

    python -m bertqa.bench.gpu_check          # the GPU machine, about 3 minutes
    python -m bertqa.bench.gpu_check --dry    # CPU, Triton interpreter, tiny shapes:
                                              # exercises the code paths, times nothing
1. device and versions.
2. parity of the Triton kernels with the int8 reference (docs/quantization.md) (CPU, float64 GEMM) at BERT-large
   shapes: xq, sx, acc, q bit-exact, the saturation count exact, y within the spec tolerance.
3. one Linear at seq 384, batch 1 and 32 (M = 384, 12288), fp16 activations: int8 v2 (quantize
   fused into the GEMM), int8 v1 (separate quantize pass), torch fp16 F.linear, torch._int_mm
   (the bare int8 GEMM, no quantize or epilogue).
4. BERT-large (hidden 1024, 24 layers, 16 heads, intermediate 4096, random weights), seq 384:
   batch-1 latency and batch-32 throughput for torch fp16 eager, gpu fp (fp16 custom nodes, CUDA
   graph) and gpu int (int8 custom nodes, CUDA graph; also eager), and logits agreement.
Every section runs even if an earlier one failed; the summary comes last.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback

DRY = "--dry" in sys.argv
if DRY:
    # Triton reads it when a kernel is decorated, i.e. when gpu_kernels is first imported
    if "bertqa.backends.gpu_kernels" in sys.modules:
        sys.exit("gpu_check: error: --dry cannot switch on Triton's interpreter: the gpu kernels "
                 "were imported before this module (run it as python -m bertqa.bench.gpu_check --dry)")
    os.environ["TRITON_INTERPRET"] = "1"

import torch                                                    # noqa: E402
import torch.nn.functional as F                                 # noqa: E402

from bertqa.backends import gpu_kernels as gk                   # noqa: E402
from bertqa.backends.gpu import GpuBackend                      # noqa: E402
from bertqa.model.bert import BertConfig, random_model          # noqa: E402
from bertqa.quant import QuantSpec, reference as ref            # noqa: E402
from bertqa.quant.linear import custom_nodes                    # noqa: E402
from bertqa.targets import int8_layer_report, prepare_target    # noqa: E402

DEV = "cpu" if DRY else "cuda"
T0 = time.perf_counter()
SUMMARY: list[str] = []
FIXED = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3)
if DRY:
    FIXED = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)
# (K, N) of BERT-large's Linear layers: qkv, attention out, ffn up, ffn down, qa head
SHAPES = [(64, 96), (64, 32), (64, 128), (128, 32), (64, 2)] if DRY else \
    [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024), (1024, 2)]
SEQ, BIG_BATCH = (24, 3) if DRY else (384, 32)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def section(fn):
    try:
        fn()
    except Exception:                                          # noqa: BLE001 - report, go on
        log(f"SECTION {fn.__name__} FAILED:\n{traceback.format_exc()}")
        SUMMARY.append(f"{fn.__name__}: FAILED (see above)")


def sync():
    if not DRY:
        torch.cuda.synchronize()


# -- 1 -------------------------------------------------------------------------------------------

def environment():
    import triton
    name = "cpu (dry run)" if DRY else torch.cuda.get_device_name()
    extra = "" if DRY else f", {torch.cuda.get_device_properties(0).multi_processor_count} SMs"
    log(f"device: {name}{extra}; torch {torch.__version__}, triton {triton.__version__}")
    SUMMARY.append(f"device: {name}")


# -- 2 -------------------------------------------------------------------------------------------

def parity_case(m, k, n, acts, dtype, fuse, requant="int16", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen) * 3
    x[0, 0] = 127.0                        # amax 127: inv = 1, so the next values are exact ties
    x[min(1, m - 1), :64] = torch.arange(-16.0, 16.0, 0.5)[:min(64, k)]
    x[min(1, m - 1), min(64, k - 1)] = 127.0
    x = x.to(dtype)
    wq, sw = ref.quantize_weight_symmetric(torch.randn(n, k, generator=gen) * 0.02, "tensor")
    b = torch.randn(n, generator=gen) * 0.02
    acc_ref = ref.int8_gemm_i32(ref.quantize_activation_symmetric(x.float(), acts)[0], wq)
    shift = 0 if requant == "int32" else max(0, ref.shift_for_max_acc(int(acc_ref.abs().max()), 0) - 1)
    y_ref, parts = ref.int8_linear(x.float(), wq, sw, b, shift, acts, requant)
    xg, wg, swg, bg = (t.to(DEV) for t in (x, wq, sw, b))
    flag = torch.zeros(1, dtype=torch.int32, device=DEV)
    xq, sx = gk.quantize_activation(xg, acts, flag)
    checks = {"xq": torch.equal(xq.cpu(), parts["xq"]),
              "sx": torch.equal(sx.cpu(), parts["sx"].reshape(-1))}
    counters = torch.zeros(2, dtype=torch.int32, device=DEV)
    args = (xg, wg, swg, bg, shift, acts, requant, False)
    acc = gk.int8_linear(*args, counters, "acc", fuse, FIXED)
    checks["acc"] = torch.equal(acc.cpu(), parts["acc"])
    q = gk.int8_linear(*args, counters, "q", fuse, FIXED)
    checks["q"] = torch.equal(q.cpu(), parts["q"])
    checks["saturated"] = counters.tolist() == [parts["saturated"], 0]
    model_path = dtype == torch.float16 and acts == "tensor" and fuse and requant == "int16"
    y = gk.int8_linear(*args, torch.zeros_like(counters), "y", fuse, None if model_path else FIXED)
    mult = ref.dequant_multiplier(parts["sx"], sw, shift)
    tol = 1e-6 * ((parts["q"].float() * mult).abs() + b.abs()) + 1e-6 * mult
    y_ref_d = y_ref.to(dtype).float()      # fp16 activations: y is rounded once, on store
    if dtype != torch.float32:             # plus one ulp of the 16-bit format
        tol = tol + y_ref.abs() * torch.finfo(dtype).eps + torch.finfo(dtype).smallest_normal
    checks["y"] = bool(((y.cpu().float() - y_ref_d).abs() <= tol).all())
    ok = all(checks.values())
    bad = [key for key, v in checks.items() if not v]
    log(f"parity M={m:5d} K={k:4d} N={n:4d} acts={acts:6s} x={str(dtype)[6:]:7s} "
        f"{'v2 fused' if fuse else 'v1 split'} {requant} s={shift:2d} sat={parts['saturated']:5d}: "
        f"{'OK' if ok else 'MISMATCH ' + ','.join(bad)}")
    return ok


def parity():
    cases = [(SEQ, k, n, "tensor", torch.float16, True) for k, n in SHAPES]
    m_odd = 40 if DRY else 1000
    cases += [(m_odd, SHAPES[3][0], SHAPES[3][1], "row", torch.float32, True),
              (m_odd, SHAPES[1][0], SHAPES[1][1], "tensor", torch.float32, False),
              (SEQ, SHAPES[2][0], SHAPES[2][1], "row", torch.float16, False),
              (7, SHAPES[0][0], SHAPES[0][1], "tensor", torch.float16, True)]
    cases.append((SEQ, *SHAPES[1], "tensor", torch.float16, True, "int32"))
    results = []
    for i, case in enumerate(cases):
        try:
            results.append(parity_case(*case, seed=i))
        except Exception:                                      # noqa: BLE001
            log(f"parity case {case} FAILED:\n{traceback.format_exc()}")
            results.append(False)
    SUMMARY.append(f"parity (xq, sx, acc, q, saturations bit-exact; y in tolerance): "
                   f"{sum(results)}/{len(results)} cases OK")


# -- 3 -------------------------------------------------------------------------------------------

def bench_ms(fn) -> float:
    """Median ms of fn replayed from a CUDA graph (as in the model; from Python, small-M
    kernels would time their launch overhead)."""
    fn()                                      # autotune and compile outside the capture
    if DRY:
        return float("nan")
    import triton.testing
    return triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median")


def kernels():
    peak_i8, peak_f16 = (1979e12, 989e12)       # H100/H200 SXM datasheet, dense
    log("one Linear, fp16 activations, CUDA-graph timed (ms; TOP/s, % of the datasheet dense peak)")
    for batch in (1, BIG_BATCH):
        m = SEQ * batch
        for k, n in SHAPES[:4]:
            x = torch.randn(m, k, device=DEV).half()
            w = torch.randn(n, k) * 0.02
            wq, sw = ref.quantize_weight_symmetric(w, "tensor")
            wq, sw, b = wq.to(DEV), sw.to(DEV), torch.randn(n, device=DEV) * 0.02
            w16, b16 = w.to(DEV).half(), b.half()
            c = torch.zeros(2, dtype=torch.int32, device=DEV)
            t = {"int8 v2": bench_ms(lambda: gk.int8_linear(x, wq, sw, b, 8, "tensor", "int16", False, c,
                                                           fuse_quantize=True)),
                 "int8 v1": bench_ms(lambda: gk.int8_linear(x, wq, sw, b, 8, "tensor", "int16", False, c,
                                                           fuse_quantize=False)),
                 "fp16": bench_ms(lambda: F.linear(x, w16, b16))}
            if not DRY:
                xq = torch.randint(-127, 128, (m, k), dtype=torch.int8, device=DEV)
                t["_int_mm"] = bench_ms(lambda: torch._int_mm(xq, wq.t()))
            ops = 2.0 * m * k * n
            cells = "  ".join(f"{name} {ms:7.4f} ms {ops / ms / 1e9:6.0f} T "
                              f"({100 * ops / ms / 1e-3 / (peak_f16 if name == 'fp16' else peak_i8):3.0f}%)"
                              for name, ms in t.items())
            log(f"M={m:5d} K={k:4d} N={n:4d}: {cells}")


# -- 4 -------------------------------------------------------------------------------------------

def model_inputs(batch, gen):
    ids = torch.randint(1000, 30000, (batch, SEQ), generator=gen)
    types = torch.zeros_like(ids)
    types[:, SEQ // 6:] = 1
    mask = torch.ones_like(ids)
    return ids.to(DEV), types.to(DEV), mask.to(DEV)


def timed(model, inputs, iters):
    """(median ms of synchronised single calls, mean ms of back-to-back calls)."""
    model(*inputs)
    model(*inputs)
    singles = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        model(*inputs)
        sync()
        singles.append((time.perf_counter() - t0) * 1e3)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        model(*inputs)
    sync()
    return sorted(singles)[len(singles) // 2], (time.perf_counter() - t0) * 1e3 / iters


def int_variant(base, max_m):
    """The gpu int model with v2 up to M = max_m, v1 above (captured graphs keep their choice)."""
    GpuBackend.fuse_quantize_max_m = max_m
    return prepare_target(copy.deepcopy(base), "gpu", "int", QuantSpec()).model


def profile_top_kernels(model, inputs, top=12):
    from torch.profiler import ProfilerActivity, profile
    try:
        model(*inputs)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(*inputs)
            sync()
    except Exception:                                          # noqa: BLE001
        log(f"profiler failed:\n{traceback.format_exc()}")
        return
    log("profile of one eager forward, top kernels by device time:\n" + prof.key_averages().table(
        sort_by="self_device_time_total", row_limit=top, max_name_column_width=60))


def whole_model():
    if DRY:
        GpuBackend.device = "cpu"
        GpuBackend.available = lambda self: (True, "dry run")
        GpuBackend.describe = lambda self: "gpu (dry run on cpu)"
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128) if DRY else BertConfig.bert_large()
    base = random_model(config, seed=0)
    log(f"model: hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, seq {SEQ}")
    gen = torch.Generator().manual_seed(1)
    one, big = model_inputs(1, gen), model_inputs(BIG_BATCH, gen)
    default_max_m = GpuBackend.fuse_quantize_max_m
    variants = {"torch fp16 eager": copy.deepcopy(base).to(DEV, torch.float16)}
    variants["torch fp32 eager"] = copy.deepcopy(base).to(DEV)     # logits reference only
    variants["gpu fp (graph)"] = prepare_target(copy.deepcopy(base), "gpu", "fp").model
    graphed = variants["gpu int (graph)"] = int_variant(base, default_max_m)
    shifts = sorted({node.lw.shift for node in custom_nodes(graphed)})
    log(f"int8 models: worst-case shifts {shifts} (no calibration); default: v2 for "
        f"M <= {default_max_m}, else v1")
    variants["gpu int v2 only (graph)"] = int_variant(base, 1 << 30)
    variants["gpu int v1 only (graph)"] = int_variant(base, 0)
    GpuBackend.fuse_quantize_max_m = default_max_m
    variants["gpu int (eager)"] = graphed.model
    rows = []
    with torch.inference_mode():
        same = all(torch.equal(a, b) for a, b in zip(graphed(*one), graphed.model(*one)))
        log(f"gpu int: graph replay and eager forward give identical logits: {same}")
        SUMMARY.append(f"gpu int: graph replay == eager forward: {same}")
        ref_start = variants["torch fp32 eager"](*one)[0].float()
        for name, model in variants.items():
            start = model(*one)[0].float()
            err = ((start - ref_start).norm() / ref_start.norm()).item()
            log(f"{name:24s} start logits vs torch fp32: rel. L2 error {err:.2e}")
        del variants["torch fp32 eager"]
        for name, model in variants.items():
            try:
                lat, _ = timed(model, one, 2 if DRY else 30)
                _, per_batch = timed(model, big, 1 if DRY else 10)
            except Exception:                                  # noqa: BLE001
                log(f"{name} FAILED:\n{traceback.format_exc()}")
                continue
            rows.append((name, lat, per_batch, BIG_BATCH / per_batch * 1e3))
            log(f"{name:24s} batch 1: {lat:8.3f} ms   batch {BIG_BATCH}: {per_batch:8.3f} ms "
                f"= {rows[-1][3]:7.0f} questions/s")
        report = int8_layer_report(graphed)
        log(f"int8 layer report (default model): {len(report)} layers, "
            f"{sum(r['calls'] for r in report)} calls, {sum(r['saturated'] for r in report)} saturated")
    SUMMARY.append(f"BERT-large seq {SEQ}:        batch-1 latency (median ms)   batch-{BIG_BATCH} "
                   "ms per batch   questions/s")
    SUMMARY.extend(f"  {n:24s} {lat:10.3f} {pb:12.3f} {qps:10.0f}" for n, lat, pb, qps in rows)
    if not DRY:
        with torch.inference_mode():
            profile_top_kernels(graphed.model, big)


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--dry", action="store_true", help="CPU, Triton interpreter, tiny shapes")
    cli.parse_args()                                           # DRY was read from sys.argv above
    for step in (environment, parity, kernels, whole_model):
        section(step)
    print("\n== summary ==")
    print("\n".join(SUMMARY))
    print(f"total {time.perf_counter() - T0:.0f}s")
