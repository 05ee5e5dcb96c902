"""Scheme spec: bertqa's int8 Linear (docs/quantization.md, steps 2-5) in standard ONNX operators.

Each custom node (QLinear, from a prepared customcpu/cpu-reference model) becomes:

    v    = x * input_scale                         smoothing, one fp32 Mul (when the node has one)
    amax = ReduceMax(|v|) per row (axis -1) or over the tensor, kept as [B, S, 1] / [1, 1, 1]
    xq   = Cast<int8>(Clip(Round(v * (127 / amax)), -127, 127))   step 2: one fp32 Div, one
                                                   fp32 Mul, Round is round-half-even
    sx   = amax == 0 ? 1 : amax / 127              (amax == 0 makes v, so xq, all zero)
    acc  = MatMulInteger(xq, Wq^T)                 step 3: int8 x int8 -> exact int32
    q    = Clip(floor((acc + 2^(s-1)) / 2^s), -32768, 32767)      step 4, in int32: t = acc + h,
                                                   (t - Mod(t, 2^s)) / 2^s, where Mod with fmod=0
                                                   takes the divisor's sign, so the Div is exact
                                                   and the result is the floor (no signed BitShift
                                                   in ONNX); requant int32 skips it (q = acc)
    y    = float(q) * (sx * (sw * 2^s)) + b        step 5; sw * 2^s is exact (a power of two),
                                                   so the multiplier equals (sx * sw) * 2^s

so xq, acc and q are bit for bit the reference's and y is within the spec's step-5 tolerance.
Everything uses opset-17 operators that ONNX Runtime's CPU provider implements for these types
(MatMulInteger int8 x int8, Mod/Div/Clip on int32). One caveat is ONNX Runtime's, not ONNX's:
its int8 GEMM (MLAS) is exact on CPUs with AVX512-VNNI or AVX-VNNI; on older AVX2-only CPUs its
u8 x s8 path sums pairs of products in saturating int16, which can differ for large inputs.
NaN/Inf cannot raise inside a graph: they reach the logits, where the runner checks them.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from bertqa.export.graph import GraphWriter, to_numpy

INT16_MIN, INT16_MAX = -32768, 32767


class SpecScheme:
    name = "spec"
    precision = "int"

    def __init__(self):
        self.taps: dict[str, dict[str, str]] = {}     # layer -> names of its xq, sx, acc, q, y
        self.layers: dict[str, dict] = {}             # layer -> K, N, shift, spec (the manifest)

    def linear(self, g: GraphWriter, name: str, node, x: str) -> str:
        lw = getattr(node, "lw", None)
        assert lw is not None and lw.precision == "int" and lw.wq is not None, \
            f"{name}: scheme spec exports int8 custom nodes (a model prepared with --precision int)"
        spec, shift = lw.spec, int(lw.shift)
        taps = {}
        if node.input_scale is not None:                                     # smoothing
            scale = g.weight(f"{name}.input_scale", to_numpy(node.input_scale).astype(np.float32))
            x = g.op("Mul", [x, scale], name=f"{name}.smoothed")
        # step 2: per-row (or per-tensor) symmetric dynamic quantization
        reduce = dict(axes=[-1], keepdims=1) if spec.acts == "row" else dict(keepdims=1)
        amax = g.op("ReduceMax", [g.op("Abs", [x])], name=f"{name}.amax", **reduce)
        zero = g.op("Equal", [amax, g.const(0.0)])
        safe = g.op("Where", [zero, g.const(1.0), amax])
        inv = g.op("Div", [g.const(127.0), safe])
        xr = g.op("Clip", [g.op("Round", [g.op("Mul", [x, inv])]), g.const(-127.0), g.const(127.0)])
        taps["xq"] = xq = g.op("Cast", [xr], to=TensorProto.INT8, name=f"{name}.xq")
        taps["sx"] = sx = g.op("Where", [zero, g.const(1.0), g.op("Div", [amax, g.const(127.0)])],
                               name=f"{name}.sx")
        # step 3: exact int32 accumulation
        wq_t = g.weight(f"{name}.wq_t", to_numpy(lw.wq).astype(np.int8).T)           # [K, N]
        taps["acc"] = q = g.op("MatMulInteger", [xq, wq_t], name=f"{name}.acc")
        # step 4: round-half-up arithmetic shift, then int16 saturation
        if spec.requant == "int16":
            if shift > 0:
                t = g.op("Add", [q, g.const(1 << (shift - 1), np.int32)])
                d = g.const(1 << shift, np.int32)
                q = g.op("Div", [g.op("Sub", [t, g.op("Mod", [t, d], fmod=0)]), d])
            q = g.op("Clip", [q, g.const(INT16_MIN, np.int32), g.const(INT16_MAX, np.int32)],
                     name=f"{name}.q")
        else:
            assert shift == 0, f"{name}: requant int32 has no shift"
        taps["q"] = q
        # step 5: dequantize and bias
        sw_shifted = to_numpy(lw.sw).astype(np.float32) * np.float32(1 << shift)     # exact
        mult = g.op("Mul", [sx, g.weight(f"{name}.sw_shifted", sw_shifted)], name=f"{name}.mult")
        y = g.op("Mul", [g.op("Cast", [q], to=TensorProto.FLOAT), mult])
        if lw.bias is not None:
            y = g.op("Add", [y, g.weight(f"{name}.bias", to_numpy(lw.bias).astype(np.float32))], name=name)
        taps["y"] = y
        self.taps[name] = taps
        self.layers[name] = {"in_features": lw.in_features, "out_features": lw.out_features,
                             "shift": shift, "smoothed": node.input_scale is not None}
        return y

    def matmul(self, g: GraphWriter, tag: str, a: str, b: str) -> str:
        """Attention stays fp32, as on the bertqa CPU targets with --attention fp32."""
        return g.op("MatMul", [a, b], name=tag)

    def describe(self) -> dict:
        return {"weights": "int8 (docs/quantization.md step 1, from the prepared model)",
                "activations": "int8, dynamic symmetric scales computed in the graph",
                "attention": "fp32"}
