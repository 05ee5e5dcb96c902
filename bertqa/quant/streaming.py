"""Quantize a model whose Linear weights are read on demand, one layer at a time.

quantize_model needs the whole fp32 model in memory; a BERT-large checkpoint is 1.3 GB of fp32
that ends as 0.3 GB of int8. Here each nn.Linear (built on `meta`) is first replaced by a
PendingLinear that knows how to fetch its fp32 (weight, bias); a node is built from them and
the fp32 tensors are dropped, so at most one layer's fp32 weights are alive at any time:

  no calibration      every pending layer is built in turn (read, quantize, backend.prepare).
  calibrated shifts   calibrate(model) runs once; each pending layer builds its node on its
                      first call (on the target's calibrator -- customcpu's native kernel, else
                      the reference -- recording max|acc|, as quantize_model's nodes do) and
                      hands that and every later call to it. Afterwards the shifts are set and
                      every node moves to the target backend (with its calibrated shift).
  smoothing           before that, one more calibrate(model) with the pending layers computing
                      fp32 (x W^T + b, reading their weights on each call) and recording their
                      input's per-channel max|x|: the statistics quantize_model takes from the
                      fp32 model.

So with the same calibration inputs the result is the one quantize_model gives (the tests
check shifts, input scales and logits), at the price of reading the weights twice when
smoothing. After each layer's fp32 tensors are dropped, their pages go back to the system
(bertqa.memory), or the heap would keep them as holes between the int8 blocks. The module knows
nothing of where the weights come from: `fetchers` maps each Linear's qualified name to a callable returning fresh fp32 tensors.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bertqa.memory import release_free_heap
from bertqa.quant.linear import CustomLinear, QuantPlan, custom_nodes, replace_module, swap_linears
from bertqa.quant.spec import QuantSpec

Fetch = Callable[[], tuple]            # () -> (weight [N, K] fp32, bias [N] fp32 | None)


class PendingLinear(nn.Module):
    """Stands where an nn.Linear was until its node is built; x: [..., K] -> y: [..., N]."""

    def __init__(self, name: str, in_features: int, out_features: int, fetch: Fetch,
                 build: Callable[["PendingLinear"], CustomLinear], gelu: bool):
        super().__init__()
        self.name, self.in_features, self.out_features = name, in_features, out_features
        self.fetch, self.build, self.gelu = fetch, build, gelu
        self.observe_fp32 = False        # calibrate in fp32, recording x_amax
        self.x_amax = None               # [K] per-channel max|x| over the observed calls
        self.node: CustomLinear | None = None

    def extra_repr(self) -> str:
        return f"{self.name}: K={self.in_features}, N={self.out_features}, weights not read yet"

    def materialize(self) -> CustomLinear:
        if self.node is None:
            with torch.inference_mode(False):     # plain tensors, as quantize_model's nodes hold
                self.node = self.build(self)
            release_free_heap()                   # the fp32 weights' pages (bertqa.memory)
        return self.node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.observe_fp32:
            return self.materialize()(x)
        weight, bias = self.fetch()
        amax = x.detach().reshape(-1, self.in_features).abs().amax(dim=0).float()   # [K]
        self.x_amax = amax if self.x_amax is None else torch.maximum(self.x_amax, amax)
        y = F.linear(x, weight, bias)             # what the nn.Linear it stands for computes
        del weight, bias
        release_free_heap()
        return F.gelu(y) if self.gelu else y      # its absorbed activation, as nn.GELU computes


def quantize_streaming(model: nn.Module, fetchers: dict[str, Fetch], precision: str, backend,
                       spec: QuantSpec | None = None,
                       calibrate: Callable[[nn.Module], None] | None = None,
                       fuse_gelu: bool = False, margin_bits: int = 1) -> list[CustomLinear]:
    """quantize_model for a model whose nn.Linear layers hold no weights yet (e.g. on `meta`):
    fetchers[name]() gives each one's fp32 weights when its node is built. Same arguments,
    same result for the same calibration inputs; see the module docstring for the order."""
    plan = QuantPlan.make(model, precision, backend, spec, calibrate, fuse_gelu)
    missing = sorted(n for n, m in model.named_modules() if type(m) is nn.Linear and n not in fetchers)
    assert not missing, f"no fetcher for Linear layers {missing[:3]}"

    def build(p: PendingLinear) -> CustomLinear:
        if plan.smooth and p.x_amax is None:
            raise ValueError(f"{p.name}: the calibration inputs never reached this layer, so "
                             "it has no statistics for smoothing")
        weight, bias = p.fetch()
        assert tuple(weight.shape) == (p.out_features, p.in_features), \
            f"{p.name}: fetched weight {tuple(weight.shape)}, expected {(p.out_features, p.in_features)}"
        return plan.build_node(p.name, weight, bias, p.x_amax)

    swap_linears(model, lambda name, linear: PendingLinear(
        name, linear.in_features, linear.out_features, fetchers[name], build, name in plan.fusions))
    plan.fuse_activations(model)
    pending = [m for m in model.modules() if isinstance(m, PendingLinear)]
    if plan.smooth:
        for p in pending:
            p.observe_fp32 = True
        with torch.inference_mode():
            calibrate(model)
        for p in pending:
            p.observe_fp32 = False
    if plan.calibrate_shifts:
        with torch.inference_mode():
            calibrate(model)
    for p in pending:                             # in model order; calibration built most
        p.materialize()
    swap_pending(model)
    nodes = custom_nodes(model)
    plan.finish(nodes, margin_bits)
    return nodes


def swap_pending(model: nn.Module) -> None:
    """Put each PendingLinear's node in its place."""
    for name, p in [(n, m) for n, m in model.named_modules() if isinstance(m, PendingLinear)]:
        replace_module(model, name, p.materialize())
