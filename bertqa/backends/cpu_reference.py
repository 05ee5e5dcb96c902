"""Backend 'cpu-reference': the reference of docs/quantization.md itself, run as a backend.

Slow and obviously right: it is the oracle the other backends are tested against, and what
`customcpu int` falls back to where the native kernel is not built. GELU (outside the int8 specification):
torch's, or with configure(gelu='native') the native epilogue's (bertqa.native.native_gelu), which
the int8 targets choose with their native host kernels. `calibrate` is the calibration forward
for every target but customcpu (LinearBackend.calibrator): the reference's y, then torch's GELU,
and the max |acc| of its exact accumulators.
"""
from __future__ import annotations

import torch

from bertqa.backends.base import LinearBackend
from bertqa.native import apply_gelu, check_gelu_mode
from bertqa.quant import reference as ref
from bertqa.quant.node_record import LinearWeights, RunStats


class ReferenceBackend(LinearBackend):
    name = "cpu-reference"

    def __init__(self, gelu: str = "torch"):
        self.gelu = gelu

    def configure(self, gelu: str = "torch", **others) -> "ReferenceBackend":
        super().configure(**others)
        check_gelu_mode(self.name, gelu)
        return self if gelu == self.gelu else ReferenceBackend(gelu)

    def describe(self) -> str:
        gelu = ", native GELU" if self.gelu == "native" else ""
        return f"cpu-reference (PyTorch reference of docs/quantization.md{gelu})"

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
            y = torch.nn.functional.gelu(y) if lw.precision == "fp" else apply_gelu(y, self.gelu)
        return y

    def run_debug(self, lw: LinearWeights, x: torch.Tensor) -> dict:
        y, parts = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts,
                                   lw.spec.requant, lw.name)
        return dict(parts, y=apply_gelu(y, self.gelu) if lw.gelu else y)

    def calibrate(self, lw: LinearWeights, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        y, parts = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts,
                                   lw.spec.requant, lw.name)
        acc = parts["acc"]
        max_abs_acc = int(acc.abs().max()) if acc.numel() else 0
        return (torch.nn.functional.gelu(y) if lw.gelu else y), max_abs_acc
