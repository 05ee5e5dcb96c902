"""Schemes fp32 and bf16: the Linear layers as MatMul + Add on float weights.

fp32: W^T [K, N] fp32 initializers, the plain model. bf16: what the Ryzen AI NPU runs for
transformers. The weights are stored as bfloat16 initializers and every MatMul input (weights,
Linear inputs and both operands of the attention products) is rounded to bf16 by a Cast pair
(fp32 -> bf16 -> fp32, round to nearest even), so that ONNX Runtime's CPU provider, which has
no bf16 MatMul, computes bf16 x bf16 products with fp32 accumulation; biases, LayerNorm,
softmax and GELU stay fp32. A provider that runs bf16 natively can drop the Cast pairs.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto
from torch import nn

from bertqa.export.graph import GraphWriter, bf16_bits, to_numpy


def _float_linear(module) -> nn.Linear:
    assert type(module) is nn.Linear, \
        f"the float schemes export fp32 nn.Linear layers, got {type(module).__name__}"
    return module


class Fp32Scheme:
    name = "fp32"
    precision = "fp"

    def linear(self, g: GraphWriter, name: str, module, x: str) -> str:
        lin = _float_linear(module)
        w = g.weight(f"{name}.weight_t", to_numpy(lin.weight).astype(np.float32).T)   # [K, N]
        y = g.op("MatMul", [x, w], name=f"{name}.matmul")
        if lin.bias is None:
            return y
        return g.op("Add", [y, g.weight(f"{name}.bias", to_numpy(lin.bias).astype(np.float32))], name=name)

    def matmul(self, g: GraphWriter, tag: str, a: str, b: str) -> str:
        return g.op("MatMul", [a, b], name=tag)

    def describe(self) -> dict:
        return {"weights": "fp32", "activations": "fp32"}


class Bf16Scheme(Fp32Scheme):
    name = "bf16"

    def round_bf16(self, g: GraphWriter, x: str) -> str:
        return g.op("Cast", [g.op("Cast", [x], to=TensorProto.BFLOAT16)], to=TensorProto.FLOAT)

    def linear(self, g: GraphWriter, name: str, module, x: str) -> str:
        lin = _float_linear(module)
        w_t = to_numpy(lin.weight).astype(np.float32).T                               # [K, N]
        w = g.weight(f"{name}.weight_t_bf16", bf16_bits(w_t), TensorProto.BFLOAT16)
        w = g.op("Cast", [w], to=TensorProto.FLOAT, name=f"{name}.weight_fp32")
        y = g.op("MatMul", [self.round_bf16(g, x), w], name=f"{name}.matmul")
        if lin.bias is None:
            return y
        return g.op("Add", [y, g.weight(f"{name}.bias", to_numpy(lin.bias).astype(np.float32))], name=name)

    def matmul(self, g: GraphWriter, tag: str, a: str, b: str) -> str:
        return g.op("MatMul", [self.round_bf16(g, a), self.round_bf16(g, b)], name=tag)

    def describe(self) -> dict:
        return {"weights": "bf16", "activations": "bf16 at every MatMul input (Cast pairs), "
                "fp32 accumulation, fp32 elsewhere"}
