"""What a custom Linear node hands its backend, and the counters the backend updates.

The quantization layer owns these records: a node is built here (quant.linear, quant.persist)
and backends depend on it, never the reverse. `LinearWeights` is docs/quantization.md step 1's
output plus what calibration chose; `RunStats` is what a backend reports per call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bertqa.quant.spec import QuantSpec


@dataclass
class LinearWeights:
    """One Linear layer as handed to a backend.

    weight: [N, K] fp32 (kept for precision 'fp'; None once an int8 backend dropped it),
    bias: [N] fp32 or None. For precision 'int': wq [N, K] int8, sw [N] fp32 (per output row,
    also for per-tensor scales), shift (0 for requant int32), spec.
    """
    name: str
    in_features: int
    out_features: int
    precision: str                      # 'fp' | 'int'
    bias: torch.Tensor | None
    weight: torch.Tensor | None = None
    wq: torch.Tensor | None = None
    sw: torch.Tensor | None = None
    shift: int = 0
    spec: QuantSpec | None = None
    gelu: bool = False                  # apply exact GELU after the bias (fused FFN up-projection)


@dataclass
class RunStats:
    """Counters a backend updates per call; read by the profiler and `--stats`."""
    calls: int = 0
    elements: int = 0
    saturated: int = 0
    seconds: float = 0.0
    parts: dict = field(default_factory=dict)   # e.g. {'quantize': s, 'gemm': s, 'dequant': s}
    counters: dict = field(default_factory=dict)  # a backend's own event counts (e.g. AIE tiles)

    def reset(self):
        self.calls = self.elements = self.saturated = 0
        self.seconds = 0.0
        self.parts.clear()
        self.counters.clear()
