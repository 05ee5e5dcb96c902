"""The reference implementation of docs/quantization.md: the test oracle for every backend.

Each function is one numbered step of the spec, written for clarity, in PyTorch on the CPU.
Integers are exact: the int8 x int8 GEMM runs in float64, where every partial sum is an integer
below 2^53 (|acc| <= K * 127 * 127), so the BLAS result is the exact integer sum.
"""
from __future__ import annotations

import torch

from bertqa.errors import NonFiniteActivationError

INT16_MIN, INT16_MAX = -32768, 32767


# -- 1. weights ---------------------------------------------------------------------------------

def quantize_weight_symmetric(weight: torch.Tensor, granularity: str, groups: int = 1):
    """weight: [N, K] fp32 -> (wq int8 [N, K], sw fp32 [N]).

    granularity 'tensor': one scale per weight tensor of the checkpoint. A fused projection
    (Q, K and V stacked as N = 3H) passes groups=3 so that each original tensor keeps its own
    scale, exactly as if the three Linear layers were quantized apart. 'channel': one per row.
    The scale is always returned per output row, so backends see one layout.
    """
    assert weight.dim() == 2, f"weight must be [N, K], got {tuple(weight.shape)}"
    w = weight.detach().to(torch.float32)
    n = w.shape[0]
    if granularity == "channel":
        amax = w.abs().amax(dim=1)                                   # [N]
    elif granularity == "tensor":
        assert n % groups == 0, f"N={n} does not split into {groups} equal groups"
        amax = w.abs().reshape(groups, -1).amax(dim=1)               # [G]
        amax = amax.repeat_interleave(n // groups)                   # [N]
    else:
        raise ValueError(f"unknown weight granularity {granularity!r}")
    sw = torch.where(amax == 0, torch.ones_like(amax), amax / torch.tensor(127.0))
    wq = torch.round(w / sw[:, None]).clamp_(-127, 127).to(torch.int8)
    return wq, sw.to(torch.float32)


# -- 2. activations -----------------------------------------------------------------------------

def check_finite(x: torch.Tensor, layer: str) -> None:
    if not torch.isfinite(x).all():
        bad = "NaN" if torch.isnan(x).any() else "Inf"
        raise NonFiniteActivationError(f"layer {layer}: input activations contain {bad}")


def quantize_activation_symmetric(x: torch.Tensor, granularity: str):
    """x: [M, K] fp32 -> (xq int8 [M, K], sx fp32 [M, 1]); sx is repeated per row for 'tensor'."""
    assert x.dim() == 2 and x.dtype == torch.float32, "x must be fp32 [M, K]"
    if granularity == "tensor":
        amax = x.abs().amax().reshape(1, 1).expand(x.shape[0], 1)    # [M, 1]
    elif granularity == "row":
        amax = x.abs().amax(dim=1, keepdim=True)                     # [M, 1]
    else:
        raise ValueError(f"unknown activation granularity {granularity!r}")
    zero = amax == 0
    safe = torch.where(zero, torch.ones_like(amax), amax)
    inv = torch.tensor(127.0, dtype=torch.float32) / safe            # one fp32 division
    xq = torch.round(x * inv).clamp_(-127, 127)                      # one fp32 multiply, half-even
    xq = torch.where(zero, torch.zeros_like(xq), xq).to(torch.int8)
    sx = torch.where(zero, torch.ones_like(amax), amax / torch.tensor(127.0, dtype=torch.float32))
    return xq, sx


# -- 3. accumulate ------------------------------------------------------------------------------

def int8_gemm_i32(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """xq: [M, K] int8, wq: [N, K] int8 -> acc [M, N] int32, exact."""
    assert xq.dtype == torch.int8 and wq.dtype == torch.int8
    assert xq.shape[1] == wq.shape[1], f"K mismatch: {xq.shape[1]} vs {wq.shape[1]}"
    return (xq.to(torch.float64) @ wq.to(torch.float64).T).to(torch.int32)


# -- 4. requantize ------------------------------------------------------------------------------

def requantize_i16(acc: torch.Tensor, shift: int):
    """acc int32 [M, N] -> (q int32 tensor holding int16 values, number of saturated elements).

    Arithmetic right shift with round-half-up: floor((acc + 2^(s-1)) / 2^s), then saturation."""
    assert 0 <= shift <= 16, f"shift must be in 0..16, got {shift}"
    half = (1 << (shift - 1)) if shift >= 1 else 0
    shifted = (acc.to(torch.int64) + half) >> shift                 # >> on signed ints is floor
    saturated = int(((shifted < INT16_MIN) | (shifted > INT16_MAX)).sum())
    return shifted.clamp_(INT16_MIN, INT16_MAX).to(torch.int32), saturated


def shift_for_max_acc(max_abs_acc: int, margin_bits: int = 1) -> int:
    """Smallest s in 0..16 whose round-half-up shift of max_abs_acc fits int16, plus margin_bits.

    The margin exists because calibration sees only a few inputs: one extra bit lets unseen inputs
    reach twice the calibrated peak before saturating, at the cost of one bit of resolution in a
    format that keeps at least 14 significant bits for the calibrated peak."""
    s = 0
    while s < 16 and ((max_abs_acc + ((1 << (s - 1)) if s else 0)) >> s) > INT16_MAX:
        s += 1
    return min(16, s + margin_bits)


# -- 5. dequantize and bias ---------------------------------------------------------------------

def dequant_multiplier(sx: torch.Tensor, sw: torch.Tensor, shift: int) -> torch.Tensor:
    """sx [M, 1], sw [N] -> mult [M, N] fp32, formed as (sx * sw) * 2^s in fp32."""
    return (sx * sw[None, :]) * torch.tensor(float(1 << shift), dtype=torch.float32)


def dequantize_bias(q: torch.Tensor, sx, sw, shift: int, bias) -> torch.Tensor:
    y = q.to(torch.float32) * dequant_multiplier(sx, sw, shift)
    return y + bias if bias is not None else y


def y_tolerance(q: torch.Tensor, sx: torch.Tensor, sw: torch.Tensor, shift: int, bias) -> torch.Tensor:
    """[M, N]: how far a backend's y may lie from the reference's, given the reference's own
    integers q and scales (docs/quantization.md, tolerances): a few fp32 roundings of the
    dequantization and bias add, 1e-6 * (|q * mult| + |b|) + 1e-6 * mult. The integers
    themselves (xq, acc, q) have no tolerance: they must match exactly."""
    mult = dequant_multiplier(sx, sw, shift)                           # [M, N]
    b = 0.0 if bias is None else bias.abs()
    return 1e-6 * ((q.to(torch.float32) * mult).abs() + b) + 1e-6 * mult


def within_y_tolerance(y: torch.Tensor, y_ref: torch.Tensor, q, sx, sw, shift: int, bias) -> bool:
    """Whether y is within y_tolerance of the reference's y_ref everywhere."""
    return bool(((y.to(torch.float32) - y_ref).abs() <= y_tolerance(q, sx, sw, shift, bias)).all())


# -- the whole node -----------------------------------------------------------------------------

def int8_linear(x: torch.Tensor, wq: torch.Tensor, sw: torch.Tensor, bias, shift: int,
                acts: str, requant: str, layer: str = "?"):
    """Steps 2-5 for x: [M, K] fp32. Returns (y [M, N] fp32, dict of xq, sx, acc, q, saturated)."""
    check_finite(x, layer)
    xq, sx = quantize_activation_symmetric(x, acts)
    acc = int8_gemm_i32(xq, wq)
    if requant == "int16":
        q, saturated = requantize_i16(acc, shift)
    else:
        assert shift == 0, "int32 mode has no shift"
        q, saturated = acc, 0
    y = dequantize_bias(q, sx, sw, shift, bias)
    return y, dict(xq=xq, sx=sx, acc=acc, q=q, saturated=saturated)


def fp_linear(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """Spec section 6: the same node with fp32 compute."""
    return torch.nn.functional.linear(x, weight, bias)
