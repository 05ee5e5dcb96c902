"""Schemes qdq-a8w8, qdq-xint8, qdq-a16w8: static QDQ graphs in the layout the NPU flow reads.

Every MatMul gets quantized inputs: a QuantizeLinear -> DequantizeLinear pair on each activation
input (the Linear inputs, and Q, K^T, the probabilities and V of attention) with a per-tensor
scale calibrated offline (bertqa.export.calibration: max |x| over the calibration windows), and
int8 weight initializers behind a DequantizeLinear. All zero points are 0 (symmetric).

    qdq-a8w8    int8 activations, int8 weights, float scales (weights per channel by default)
    qdq-xint8   int8 activations and weights, per tensor, power-of-two scales
                2^ceil(log2(amax / 127)) (rounded up, so that the calibrated peak never clips)
    qdq-a16w8   int16 activations (QuantizeLinear int16 needs opset 21), int8 weights

Biases, LayerNorm, softmax, GELU and the residual adds stay fp32 between the pairs; no MatMul
reads an unquantized float activation. The graph runs on ONNX Runtime's CPU provider, which
computes the float ops between DequantizeLinear and QuantizeLinear (or fuses QDQ MatMuls into
integer kernels); an NPU provider takes the Q/DQ-delimited parts it supports.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from bertqa.export.graph import GraphWriter, to_numpy

KINDS = {  # scheme -> activation type, its qmax, power-of-two scales, opset, default weights
    "qdq-a8w8": (TensorProto.INT8, 127, False, 17, "channel"),
    "qdq-xint8": (TensorProto.INT8, 127, True, 17, "tensor"),
    "qdq-a16w8": (TensorProto.INT16, 32767, False, 21, "channel"),
}
ACT_NP = {TensorProto.INT8: np.int8, TensorProto.INT16: np.int16}


def symmetric_scale(amax: float, qmax: int, power_of_two: bool) -> float:
    """amax / qmax as fp32 (1 for amax 0), or the power of two at or above it."""
    if not amax > 0 or not math.isfinite(amax):
        return 1.0
    s = amax / qmax
    return float(2.0 ** math.ceil(math.log2(s))) if power_of_two else float(np.float32(s))


def quantize_weight_qdq(w_t: np.ndarray, per_channel: bool, power_of_two: bool):
    """w_t: [K, N] fp32 -> (int8 [K, N], scale fp32 [N] per channel or [] per tensor)."""
    if per_channel:
        amax = np.abs(w_t).max(axis=0)
        scale = np.array([symmetric_scale(float(a), 127, power_of_two) for a in amax], np.float32)
    else:
        scale = np.array(symmetric_scale(float(np.abs(w_t).max()) if w_t.size else 0.0, 127,
                                         power_of_two), np.float32)
    wq = np.clip(np.rint(w_t / scale), -127, 127).astype(np.int8)     # rint: half to even
    return wq, scale


class QdqScheme:
    precision = "int"

    def __init__(self, name: str, act_amax: dict[str, float], weights: str | None = None):
        assert name in KINDS, f"unknown QDQ scheme {name!r}"
        self.name = name
        self.act_type, self.qmax, self.power_of_two, self.opset, default = KINDS[name]
        self.weights = weights or default
        assert self.weights in ("tensor", "channel"), f"weights must be tensor or channel, got {weights!r}"
        assert not (self.power_of_two and self.weights == "channel"), "XINT8 weights are per tensor"
        self.act_amax = act_amax
        self.scales: dict[str, float] = {}          # activation tag -> its scale (the manifest)

    def qdq_activation(self, g: GraphWriter, x: str, tag: str) -> str:
        assert tag in self.act_amax, f"no calibration statistic for {tag}"
        scale = symmetric_scale(self.act_amax[tag], self.qmax, self.power_of_two)
        self.scales[tag] = scale
        s = g.const(scale)
        zp = g.const(0, ACT_NP[self.act_type])
        q = g.op("QuantizeLinear", [x, s, zp], name=f"{tag}.quantize")
        return g.op("DequantizeLinear", [q, s, zp], name=f"{tag}.dequantize")

    def linear(self, g: GraphWriter, name: str, module, x: str) -> str:
        assert hasattr(module, "weight") and module.weight is not None, \
            f"{name}: the QDQ schemes quantize fp32 nn.Linear layers"
        x = self.qdq_activation(g, x, name)
        w_t = to_numpy(module.weight).astype(np.float32).T                           # [K, N]
        wq, scale = quantize_weight_qdq(w_t, self.weights == "channel", self.power_of_two)
        axis = {"axis": 1} if scale.ndim else {}
        w = g.op("DequantizeLinear", [g.weight(f"{name}.weight_q", wq), g.weight(f"{name}.weight_scale", scale),
                                      g.weight(f"{name}.weight_zero_point", np.zeros(scale.shape, np.int8))],
                 name=f"{name}.weight", **axis)
        y = g.op("MatMul", [x, w], name=f"{name}.matmul")
        if module.bias is None:
            return y
        return g.op("Add", [y, g.weight(f"{name}.bias", to_numpy(module.bias).astype(np.float32))], name=name)

    def matmul(self, g: GraphWriter, tag: str, a: str, b: str) -> str:
        return g.op("MatMul", [self.qdq_activation(g, a, f"{tag}.a"), self.qdq_activation(g, b, f"{tag}.b")],
                    name=tag)

    def describe(self) -> dict:
        bits = "int16" if self.act_type == TensorProto.INT16 else "int8"
        return {"activations": f"{bits}, symmetric, per tensor, static (calibrated max |x|)",
                "weights": f"int8, symmetric, per {self.weights}",
                "scales": "power of two" if self.power_of_two else "float"}
