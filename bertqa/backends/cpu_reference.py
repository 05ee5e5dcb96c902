"""Backend 'cpu-reference': the SPEC-quant reference itself, run as a backend.

Slow and obviously right: it is the oracle the other backends are tested against, and what
`customcpu int` falls back to where the native kernel is not built.
"""
from __future__ import annotations

import torch

from bertqa.backends.base import LinearBackend, LinearWeights, RunStats
from bertqa.quant import reference as ref


class ReferenceBackend(LinearBackend):
    name = "cpu-reference"

    def describe(self) -> str:
        return "cpu-reference (PyTorch reference of SPEC-quant)"

    def prepare(self, lw: LinearWeights):
        return lw

    def run(self, lw: LinearWeights, x: torch.Tensor, stats: RunStats) -> torch.Tensor:
        if lw.precision == "fp":
            y = ref.fp_linear(x, lw.weight, lw.bias)
        else:
            y, parts = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts,
                                       lw.spec.requant, lw.name)
            stats.saturated += parts["saturated"]
        if lw.gelu:
            y = torch.nn.functional.gelu(y)
        return y
