"""Replay a model's forward from CUDA graphs: one graph per input signature (shapes, dtypes).

At batch 1, seq 384 a BERT-large forward is a few hundred small kernels, and launching them
from Python costs more than running them; a graph replays the whole forward with one launch.
Knows nothing of BERT: any module whose forward takes tensors (or None) and returns a tensor or
a tuple of tensors, does the same device work for the same shapes (no data-dependent control
flow) and never synchronises with the host.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from bertqa.quant.linear import custom_nodes, flush_stats


class GraphedModel(nn.Module):
    """model(*args) replayed from a graph captured at the first call with each signature.

    Inputs are copied into the graph's static buffers, outputs cloned out of them (graphs share
    one memory pool). At most `max_graphs` signatures are captured; others run eagerly.
    `flush_every_forward`: read the layers' device counters after each forward (one sync), so
    that NaN/Inf inputs raise at once and saturation counts stay current.
    """

    def __init__(self, model: nn.Module, max_graphs: int = 16, warmup: int = 2,
                 flush_every_forward: bool = True):
        super().__init__()
        self.model = model
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.flush_every_forward = flush_every_forward
        self._graphs: OrderedDict = OrderedDict()    # signature -> Captured
        self._pool = None
        self._nodes = custom_nodes(model)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)   # e.g. config, quant_groups

    @staticmethod
    def signature(args) -> tuple:
        return tuple(None if a is None else (tuple(a.shape), a.dtype, a.device) for a in args)

    def forward(self, *args):
        with torch.inference_mode():
            if not all(a is None or a.is_cuda for a in args):
                out = self.model(*args)
            else:
                key = self.signature(args)
                if key not in self._graphs and len(self._graphs) < self.max_graphs:
                    self._graphs[key] = self._capture(args)
                if key in self._graphs:
                    out = self._graphs[key].replay(args)
                else:
                    out = self.model(*args)
            if self.flush_every_forward:
                flush_stats(self._nodes)
            return out

    def _capture(self, args) -> "Captured":
        nodes = self._nodes
        flush_stats(nodes)
        before = [(n.stats.calls, n.stats.elements, n.stats.saturated, n.stats.seconds) for n in nodes]
        inputs = [None if a is None else a.clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):          # warm-up: autotuning and lazy allocations
            for _ in range(self.warmup):
                self.model(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        flush_stats(nodes)                     # raises here if the inputs give NaN/Inf
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.model(*inputs)
        self._pool = graph.pool()
        # warm-up and capture are not counted: restore the host counters, and keep one
        # forward's worth of calls/elements per layer to add at every replay
        deltas = []
        for node, (calls, elements, saturated, seconds) in zip(nodes, before):
            st, runs = node.stats, self.warmup + 1
            deltas.append((st, (st.calls - calls) // runs, (st.elements - elements) // runs))
            st.calls, st.elements, st.saturated, st.seconds = calls, elements, saturated, seconds
        outputs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return Captured(graph, inputs, outputs, deltas)


class Captured:
    """One captured forward: static inputs and outputs, and the per-layer host counter deltas."""

    def __init__(self, graph, inputs, outputs, deltas):
        self.graph, self.inputs, self.outputs, self.deltas = graph, inputs, outputs, deltas

    def replay(self, args):
        for static, a in zip(self.inputs, args):
            if a is not None:
                static.copy_(a)
        self.graph.replay()
        for st, calls, elements in self.deltas:
            st.calls += calls
            st.elements += elements
        out = tuple(o.clone() for o in self.outputs)
        return out[0] if len(out) == 1 else out
