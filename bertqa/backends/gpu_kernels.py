"""Triton kernels for the int8 Linear (docs/quantization.md, steps 2-5) on a GPU.

What: y[M, N] = dequant(requant_i16(quant_i8(x) @ Wq^T)) + b, bit-exact with the reference on
xq, acc and q, and y within the spec's tolerance. Imported lazily by backends/gpu.py: importing
bertqa never needs Triton or CUDA.

How, per call (no host synchronisation, so a CUDA graph can capture it):
  1. amax: `tensor` acts -> `amax_partials_kernel` writes G <= 1024 partial maxima of |x| that
     every later program reduces itself (no zeroing, no grid-wide barrier); `row` acts ->
     `amax_rows_kernel` writes amax[M]. NaN/Inf count as +inf and add 1 to a device flag, which
     the backend reads lazily (once per forward, not per layer).
  2. v1 (`fuse_quantize=False`, the backend's default): `quantize_kernel` writes xq int8 [M, K]
     and sx [M]; the GEMM reads int8. v2 (`fuse_quantize=True`): the GEMM loads the fp16/fp32 x
     tile and quantizes it in registers with the same `_quantize_i8`, so xq never touches
     memory, but it does so once per column of output tiles; on an H200 v1 was faster.
  3. `int8_linear_kernel`: int8 x int8 -> int32 `tl.dot` (exact), then in the epilogue the int16
     requantization (saturations counted into a device counter with one atomic per tile), the
     dequantization multiplier (sx * sw) * 2^s in fp32, bias, optional exact GELU, and the store
     in the activation dtype (fp16 activations: y is formed in fp32 and rounded once on store).
     OUT_MODE 1/2 store acc or q instead of y: the parity tests compare those bit-exactly.

Rounding: `127 / amax` is `div_rn` (correctly rounded; Triton's `/` on fp32 may lower to an
approximate division), `x * inv` one fp32 multiply, then round-half-even: `libdevice.rint` on the
GPU (one cvt.rni, nothing for an FMA to fuse with), or, in Triton's CPU interpreter
(TRITON_INTERPRET=1, where libdevice does not exist), the exact floor-based
`_round_half_even_exact`. The GPU parity check (python -m bertqa.bench.gpu_check) covers the first, the
interpreter tests the second.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_G = 1024            # at most this many partial maxima for per-tensor amax
OUT_MODES = {"y": 0, "acc": 1, "q": 2}


# -- shared pieces -------------------------------------------------------------------------------

@triton.jit
def _round_half_even_exact(v):
    """Round-half-even of fp32 v with |v| <= 127 using floor only: on |v|, floor and the fraction
    a - floor(a) are exact (Sterbenz), ties go to the even neighbour; the sign is restored."""
    a = tl.abs(v)
    r = tl.math.floor(a)
    frac = a - r
    ri = r.to(tl.int32)
    up = (frac > 0.5) | ((frac == 0.5) & ((ri & 1) == 1))
    mag = (ri + up.to(tl.int32)).to(tl.float32)
    return tl.where(v < 0, -mag, mag)


@triton.jit
def _quantize_i8(x, inv, RINT: tl.constexpr):
    """x fp32 [..] * inv (one fp32 multiply) -> clamp +-127 -> round half-even -> int8.
    Clamping before rounding equals clamping after: rounding is monotone and 127 an integer."""
    v = tl.minimum(tl.maximum(x * inv, -127.0), 127.0)
    if RINT:
        v = libdevice.rint(v)
    else:
        v = _round_half_even_exact(v)
    return v.to(tl.int8)


@triton.jit
def _row_scales(src_ptr, G, rows, M, ACTS_ROW: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_G: tl.constexpr):
    """(inv, sx), each [BLOCK_M] fp32, for `rows`: amax from amax[M] (row) or the max of G
    partials (tensor); amax == 0 gives sx = 1 (and xq = 0, since then every x is 0)."""
    if ACTS_ROW:
        amax = tl.load(src_ptr + rows, mask=rows < M, other=0.0)
    else:
        g = tl.arange(0, BLOCK_G)
        amax_t = tl.max(tl.load(src_ptr + g, mask=g < G, other=0.0), axis=0)
        amax = tl.full([BLOCK_M], 0.0, tl.float32) + amax_t
    zero = amax == 0.0
    safe = tl.where(zero, 1.0, amax)
    inv = tl.math.div_rn(tl.full([BLOCK_M], 127.0, tl.float32), safe)
    sx = tl.where(zero, 1.0, tl.math.div_rn(safe, tl.full([BLOCK_M], 127.0, tl.float32)))
    return inv, sx


# -- step 2: activation scales and quantization --------------------------------------------------

@triton.jit
def amax_partials_kernel(x_ptr, partial_ptr, flag_ptr, numel, chunk, BLOCK: tl.constexpr):
    """partial[g] = max |x| over x.flat[g*chunk : (g+1)*chunk]; NaN/Inf -> +inf and flag += 1."""
    g = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    m = tl.zeros([BLOCK], tl.float32)
    for start in range(0, chunk, BLOCK):
        idx = g * chunk + start + offs
        x = tl.load(x_ptr + idx, mask=idx < numel, other=0.0).to(tl.float32)
        m = tl.maximum(m, tl.where(x == x, tl.abs(x), float("inf")))
    amax = tl.max(m, axis=0)
    tl.store(partial_ptr + g, amax)
    tl.atomic_add(flag_ptr, 1, mask=amax == float("inf"))


@triton.jit
def amax_rows_kernel(x_ptr, amax_ptr, flag_ptr, M, K, stride_xm,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """amax[m] = max_k |x[m, k]| for BLOCK_M rows; NaN/Inf -> +inf and flag += rows affected."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = (rows[:, None] < M) & (cols[None, :] < K)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0)
        x = x.to(tl.float32)
        m = tl.maximum(m, tl.where(x == x, tl.abs(x), float("inf")))
    amax = tl.max(m, axis=1)
    tl.store(amax_ptr + rows, amax, mask=rows < M)
    bad = tl.sum((amax == float("inf")).to(tl.int32), axis=0)
    tl.atomic_add(flag_ptr, bad, mask=bad > 0)


@triton.jit
def quantize_kernel(x_ptr, src_ptr, G, xq_ptr, sx_ptr, M, K, stride_xm,
                    ACTS_ROW: tl.constexpr, RINT: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """xq [M, K] int8 and sx [M] fp32 from x [M, K] and the amax source of step 1."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    inv, sx = _row_scales(src_ptr, G, rows, M, ACTS_ROW, BLOCK_M, BLOCK_G)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0)
    xq = _quantize_i8(x.to(tl.float32), inv[:, None], RINT)
    tl.store(xq_ptr + rows[:, None] * K + cols[None, :], xq, mask=mask)
    if tl.program_id(1) == 0:
        tl.store(sx_ptr + rows, sx, mask=rows < M)


# -- steps 3-5: GEMM with the requant / dequant / bias epilogue ----------------------------------

@triton.jit(do_not_specialize=["M", "shift", "pow2_shift"])
def int8_linear_kernel(a_ptr, w_ptr, scale_ptr, G, sw_ptr, bias_ptr, out_ptr, sat_ptr,
                       M, N, K, stride_am, stride_wn, stride_om, shift, pow2_shift,
                       A_INT8: tl.constexpr, ACTS_ROW: tl.constexpr,
                       REQUANT16: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                       OUT_MODE: tl.constexpr, RINT: tl.constexpr, EVEN_K: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, BLOCK_G: tl.constexpr):
    """a: xq [M, K] int8 with scale_ptr = sx [M] (A_INT8), or x [M, K] fp with scale_ptr = the
    amax source; w: Wq [N, K] int8; out [M, N]: y (activation dtype), acc or q (int32).
    shift and pow2_shift = 2.0^shift are run-time arguments: one compiled kernel serves every
    layer's calibrated shift; M is not specialised either (it changes with the batch)."""
    # grouped tile order: GROUP_M row tiles share the W column tiles in L2
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    first_m = (pid // (GROUP_M * num_n)) * GROUP_M
    group_rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % group_rows
    pid_n = (pid % (GROUP_M * num_n)) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = offs_m % M                      # wrapped rows/cols load in bounds; stores are masked
    rn = offs_n % N
    rk = tl.arange(0, BLOCK_K)
    if A_INT8:
        sx = tl.load(scale_ptr + rm)
    else:
        inv, sx = _row_scales(scale_ptr, G, rm, M, ACTS_ROW, BLOCK_M, BLOCK_G)
    a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :]          # [BM, BK]
    w_ptrs = w_ptr + rn[None, :] * stride_wn + rk[:, None]          # [BK, BN] = Wq^T tile
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_ptrs)
            w = tl.load(w_ptrs)
        else:
            a = tl.load(a_ptrs, mask=rk[None, :] < K - k0, other=0)
            w = tl.load(w_ptrs, mask=rk[:, None] < K - k0, other=0)
        if not A_INT8:
            a = _quantize_i8(a.to(tl.float32), inv[:, None], RINT)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    valid = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    if OUT_MODE == 1:
        tl.store(out_ptrs, acc, mask=valid)
    else:
        q = acc
        if REQUANT16:
            # floor((acc + 2^(s-1)) / 2^s): >> on int32 is arithmetic; |acc| + 2^15 fits int32
            shifted = (acc + ((1 << shift) >> 1)) >> shift
            sat = ((shifted < -32768) | (shifted > 32767)) & valid
            n_sat = tl.sum(tl.sum(sat.to(tl.int32), axis=1), axis=0)
            tl.atomic_add(sat_ptr, n_sat, mask=n_sat > 0)
            q = tl.minimum(tl.maximum(shifted, -32768), 32767)
        if OUT_MODE == 2:
            tl.store(out_ptrs, q, mask=valid)
        else:
            sw = tl.load(sw_ptr + rn)
            mult = (sx[:, None] * sw[None, :]) * pow2_shift        # (sx * sw) * 2^s, fp32
            y = q.to(tl.float32) * mult
            if HAS_BIAS:
                y = y + tl.load(bias_ptr + rn)[None, :]
            if GELU:
                y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
            tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=valid)


# -- launchers -----------------------------------------------------------------------------------

def _gemm_configs():
    """Hopper int8 tiles: big tiles for throughput batches, small ones to fill 132 SMs at M=384.
    Tiles whose stages overflow shared memory (fp16 A in v2) fail to compile and are skipped."""
    shapes = [(128, 128, 128, 8, 3), (128, 128, 128, 8, 4), (128, 256, 128, 8, 3),
              (256, 128, 128, 8, 3), (128, 128, 256, 8, 3), (64, 128, 128, 4, 4),
              (128, 64, 128, 4, 4), (64, 64, 128, 4, 4), (64, 64, 256, 4, 3)]
    return [triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8),
                          num_warps=w, num_stages=s) for bm, bn, bk, w, s in shapes]


def _bench_in_graph(fn, quantiles):
    """Autotuning times each config replayed from a CUDA graph, as the model runs it: timed
    from Python, a small-M kernel measures its launch overhead, not itself."""
    return triton.testing.do_bench_cudagraph(fn, rep=10, quantiles=quantiles)


_even_k = triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
_gemm_fixed = _even_k(int8_linear_kernel)          # the caller names the tiles
if INTERPRET:       # the interpreter runs every program in Python: one small fixed tile
    _gemm = _gemm_fixed
    _GEMM_META = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)
else:               # `restore_value`: benchmarking must not add to the saturation counter
    import triton.testing
    _gemm = triton.autotune(_gemm_configs(), key=["M", "N", "K", "A_INT8", "OUT_MODE"],
                            restore_value=["sat_ptr"], do_bench=_bench_in_graph)(
                                _even_k(int8_linear_kernel))
    _GEMM_META = {}


def amax_source(x: torch.Tensor, acts: str, flag: torch.Tensor):
    """Step 2's amax for x [M, K]: ('tensor') G partial maxima, or ('row') amax [M]; returns
    (source fp32 tensor, G)."""
    m, k = x.shape
    assert x.numel() < 2**31, f"x has {x.numel()} elements; the kernels index with int32"
    if acts == "row":
        amax = torch.empty(m, device=x.device, dtype=torch.float32)
        block_k = min(1024, triton.next_power_of_2(k))
        amax_rows_kernel[(triton.cdiv(m, 4),)](x, amax, flag, m, k, x.stride(0),
                                               BLOCK_M=4, BLOCK_K=block_k)
        return amax, m
    assert acts == "tensor", f"unknown activation granularity {acts!r}"
    block = 1024
    chunk = triton.cdiv(triton.cdiv(x.numel(), BLOCK_G), block) * block
    groups = triton.cdiv(x.numel(), chunk)
    partials = torch.empty(groups, device=x.device, dtype=torch.float32)
    amax_partials_kernel[(groups,)](x, partials, flag, x.numel(), chunk, BLOCK=block)
    return partials, groups


def quantize_activation(x: torch.Tensor, acts: str, flag: torch.Tensor):
    """x [M, K] fp32/fp16/bf16 contiguous -> (xq int8 [M, K], sx fp32 [M]), SPEC step 2."""
    m, k = x.shape
    src, groups = amax_source(x, acts, flag)
    xq = torch.empty(m, k, device=x.device, dtype=torch.int8)
    sx = torch.empty(m, device=x.device, dtype=torch.float32)
    bm, bk = (16, 32) if INTERPRET else (32, 128)
    quantize_kernel[(triton.cdiv(m, bm), triton.cdiv(k, bk))](
        x, src, groups, xq, sx, m, k, x.stride(0), ACTS_ROW=acts == "row", RINT=not INTERPRET,
        BLOCK_M=bm, BLOCK_K=bk, BLOCK_G=BLOCK_G)
    return xq, sx


def int8_linear(x: torch.Tensor, wq: torch.Tensor, sw: torch.Tensor, bias, shift: int, acts: str,
                requant: str, gelu: bool, counters: torch.Tensor, out_mode: str = "y",
                fuse_quantize: bool = False, config: dict | None = None) -> torch.Tensor:
    """SPEC steps 2-5 for x [M, K] (fp32/fp16/bf16, contiguous) and Wq [N, K] int8, sw [N] fp32,
    bias [N] fp32 or None -> out [M, N]: y in x's dtype ('y'), or int32 acc / q. counters: int32
    [2] on x's device, [0] += saturated elements, [1] += non-finite inputs seen. config: fixed
    tile meta-parameters (and num_warps/num_stages) instead of the autotuned choice."""
    m, k = x.shape
    n = wq.shape[0]
    assert wq.shape[1] == k and x.is_contiguous() and wq.is_contiguous(), "x [M, K], Wq [N, K]"
    assert 0 <= shift <= 16 and (requant == "int16" or shift == 0), f"bad shift {shift}"
    out_dtype = x.dtype if out_mode == "y" else torch.int32
    out = torch.empty(m, n, device=x.device, dtype=out_dtype)
    if m == 0:
        return out
    flag = counters[1:]
    if fuse_quantize:
        a, scale, groups = (x, *amax_source(x, acts, flag))
    else:
        a, scale = quantize_activation(x, acts, flag)
        groups = m
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
    kernel, meta = (_gemm_fixed, config) if config else (_gemm, _GEMM_META)
    kernel[grid](a, wq, scale, groups, sw, sw if bias is None else bias, out, counters,
                 m, n, k, a.stride(0), wq.stride(0), out.stride(0), shift, float(1 << shift),
                 A_INT8=not fuse_quantize, ACTS_ROW=acts == "row", REQUANT16=requant == "int16",
                 HAS_BIAS=bias is not None, GELU=gelu, OUT_MODE=OUT_MODES[out_mode],
                 RINT=not INTERPRET, BLOCK_G=BLOCK_G, **meta)
    return out
