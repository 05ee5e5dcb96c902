"""Where a forward pass spends its time: the Linear layers by type (and the parts their backend
reports), attention, the rest of the model, and the QA work outside it.

Timing uses forward hooks that exist only inside `ForwardProfiler`, so an unprofiled model runs
untouched. A Linear layer's time is its module's wall time, whatever runs it (nn.Linear, PyTorch's
dynamic int8 Linear, a custom node); for custom nodes the time inside the backend and its parts
(`stats.parts`, e.g. quantize/gemm/dequant, when the backend fills them) are shown beneath.
Attention is each attention module's time minus its Linear layers' time: SDPA, the head
reshapes, the residual add and the LayerNorm. The model knows nothing of this; modules are
recognised by kind (Linear) and by class name (`...Attention`).

On a device that computes asynchronously (CUDA) every clock read synchronises, and the custom
nodes' own backend seconds (host time: kernel launches) are not shown. A model replayed from
CUDA graphs runs no module code to hook, so the profile runs its eager model instead and says so.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable, Sequence

from torch import nn

from bertqa.quant import CustomLinear, custom_nodes
from bertqa.quant.linear import flush_stats


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, CustomLinear)) or type(module).__name__ == "Linear"


def is_attention(module: nn.Module) -> bool:
    return type(module).__name__.endswith("Attention")


def layer_type(name: str) -> str:
    """'layers.3.attention.qkv' -> 'attention.qkv': the name after the last layer index."""
    parts = name.split(".")
    digits = [i for i, p in enumerate(parts) if p.isdigit()]
    return ".".join(parts[digits[-1] + 1:]) if digits else name


class ForwardProfiler:
    """with ForwardProfiler(model) as prof: ... -> prof.seconds / prof.calls by module name
    ('' is the whole model). `sync` (e.g. torch.cuda.synchronize) runs before every clock read
    on devices that compute asynchronously."""

    def __init__(self, model: nn.Module, sync: Callable[[], None] | None = None):
        self.model = model
        self.sync = sync
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.linears = [n for n, m in model.named_modules() if is_linear(m)]
        self.attention = [n for n, m in model.named_modules() if is_attention(m)]
        self._start: dict[str, float] = {}
        self._handles = []

    def _clock(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def _hook(self, name: str, module: nn.Module) -> None:
        def before(_module, _args):
            self._start[name] = self._clock()

        def after(_module, _args, _output):
            self.seconds[name] += self._clock() - self._start.pop(name)
            self.calls[name] += 1
        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def __enter__(self) -> "ForwardProfiler":
        modules = dict(self.model.named_modules())
        for name in ["", *self.linears, *self.attention]:
            self._hook(name, modules[name])
        for node in custom_nodes(self.model):
            node.stats.reset()
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def summary(self) -> dict:
        """{'linear': {type: {'seconds', 'calls', 'backend', 'parts'}}, 'linear_total',
        'attention', 'rest', 'forward', 'forwards'} in seconds."""
        nodes = {n.lw.name: n for n in custom_nodes(self.model)}
        by_type: dict[str, dict] = {}
        for name in self.linears:
            row = by_type.setdefault(layer_type(name), {"seconds": 0.0, "calls": 0, "backend": None,
                                                        "parts": defaultdict(float)})
            row["seconds"] += self.seconds[name]
            row["calls"] += self.calls[name]
            node = nodes.get(name)
            if node is not None and self.sync is None:
                row["backend"] = (row["backend"] or 0.0) + node.stats.seconds
                for part, s in node.stats.parts.items():
                    row["parts"][part] += s
        linear_total = sum(self.seconds[n] for n in self.linears)
        inner = sum(self.seconds[n] for n in self.linears
                    if any(n.startswith(a + ".") for a in self.attention))
        attention = sum(self.seconds[a] for a in self.attention) - inner
        forward = self.seconds[""]
        return {"linear": by_type, "linear_total": linear_total, "attention": attention,
                "rest": forward - linear_total - attention, "forward": forward,
                "forwards": self.calls[""]}


def eager_model(model: nn.Module) -> nn.Module:
    """The module whose forward runs module by module: a CUDA-graph wrapper's inner model."""
    from bertqa.backends.cuda_graphs import GraphedModel
    return model.model if isinstance(model, GraphedModel) else model


def profile_questions(qa, pairs: Sequence[tuple[str, str]]) -> dict:
    """Answer (question, context) pairs one at a time under the profiler; the summary plus
    'total' (wall seconds for all questions), 'questions' and 'notes'."""
    assert pairs, "profile needs at least one question"
    if not isinstance(qa.pipeline.model, nn.Module):          # --target onnx: ORT's own profiler
        from bertqa.export.profiling import profile_onnx
        return profile_onnx(qa, pairs)
    sync, notes = None, []
    if str(qa.prepared.device).startswith("cuda"):
        import torch
        sync = torch.cuda.synchronize
        notes.append("every clock read synchronises the GPU; the backends' own (host) time is not shown")
    graphed = qa.pipeline.model
    model = eager_model(graphed)
    if model is not graphed:
        notes.append("CUDA graphs off while profiling: the model runs eagerly, module by module")
    qa.pipeline.model = model
    try:
        qa.answer(*pairs[0])                               # warm-up, not profiled
        with ForwardProfiler(model, sync) as prof:
            t0 = time.perf_counter()
            for question, context in pairs:
                qa.answer(question, context)
            total = time.perf_counter() - t0
        flush_stats(model)                                 # device-side saturation counters
    finally:
        qa.pipeline.model = graphed
    return {**prof.summary(), "total": total, "questions": len(pairs), "notes": notes}


def format_profile(summary: dict) -> str:
    """The summary as a table: ms, share of all time, calls."""
    if summary.get("kind") == "onnx":
        from bertqa.export.profiling import format_onnx_profile
        return format_onnx_profile(summary)
    total = summary["total"]
    lines = [f"{summary['questions']} questions, {summary['forwards']} forward passes, "
             f"{total * 1e3:.1f} ms in all ({total * 1e3 / summary['questions']:.1f} ms per question)",
             f"{'':48} {'ms':>10} {'share':>7} {'calls':>7}"]

    def add(label: str, seconds: float, calls: int | str = "") -> None:
        lines.append(f"{label:48} {seconds * 1e3:10.1f} {100 * seconds / total:6.1f}% {calls:>7}")

    for kind, row in summary["linear"].items():
        add(f"Linear {kind}", row["seconds"], row["calls"])
        if row["backend"] is not None:
            add("    in the backend", row["backend"])
        for part, s in sorted(row["parts"].items()):
            add(f"      {part}", s)
    add("Linear, all layers", summary["linear_total"])
    add("attention (SDPA, head reshapes, residual, norm)", summary["attention"])
    add("rest of the model (embeddings, GELU, FFN norm)", summary["rest"])
    add("model forward", summary["forward"], summary["forwards"])
    add("outside the model (tokenize, windows, decode)", total - summary["forward"])
    return "\n".join(lines + [f"note: {n}" for n in summary.get("notes", [])])
