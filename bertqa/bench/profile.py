"""Where a forward pass spends its time: the Linear layers by type (and the parts their backend
reports), the host kernels (attention, residual + LayerNorm: named by what runs them), the other
modules (embeddings, an unfused GELU), what is left, and the QA work outside the model.

Timing uses forward hooks that exist only inside `ForwardProfiler`, so an unprofiled model runs
untouched. A Linear layer's time is its module's wall time, whatever runs it (nn.Linear, PyTorch's
dynamic int8 Linear, a custom node); for custom nodes the time inside the backend and its parts
(`stats.parts`, e.g. quantize/gemm/dequant, when the backend fills them) are shown beneath.
Host kernels are the functions a module holds (SelfAttention.core, add_norm: bertqa.structure),
timed by wrapping them while profiling. Attention glue is each attention module's time minus its
Linear layers and host kernels (head split, reshapes). The rest is the forward's time outside all
of these (the mask, Python between modules). The model knows nothing of this; modules are
recognised by kind (Linear, activations, the model's other top-level children) and by class name
(`...Attention`). Each profile first answers a few questions unprofiled (WARMUP_QUESTIONS).

On a device that computes asynchronously (CUDA) every clock read synchronises, and the custom
nodes' own backend seconds (host time: kernel launches) are not shown. A model replayed from
CUDA graphs runs no module code to hook, so the profile runs its eager model instead and says so.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Callable, Sequence

from torch import nn

from bertqa.quant import CustomLinear, custom_nodes
from bertqa.quant.linear import flush_stats
from bertqa.structure import HOST_ROLES, host_kernels

ACTIVATIONS = (nn.GELU, nn.ReLU, nn.Tanh, nn.SiLU)
WARMUP_QUESTIONS = 3         # answered unprofiled first: allocations, kernel choice, pools
PEAK_SAMPLE_SECONDS = 0.02   # the int8 peak loop after every profiled question (PeakSampler)


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
        self.macs: dict[str, int] = defaultdict(int)          # Linear name -> multiply-adds
        self.linears = [n for n, m in model.named_modules() if is_linear(m)]
        self._linear_names = set(self.linears)
        self.attention = [n for n, m in model.named_modules() if is_attention(m)]
        # timed as themselves: activations, and the model's top-level children that are
        # neither Linear layers nor the list of layers (embeddings)
        self.others = list(dict.fromkeys(                  # an activation may be a top-level child
            [n for n, m in model.named_modules() if isinstance(m, ACTIVATIONS)] +
            [n for n, m in model.named_children() if not is_linear(m) and not isinstance(m, nn.ModuleList)]))
        self.host = list(host_kernels(model))             # (path, module, attribute, function)
        self.host_seconds: dict[str, float] = defaultdict(float)   # 'path.attribute' -> s
        self.host_calls: dict[str, int] = defaultdict(int)
        self._start: dict[str, float] = {}
        self._handles = []

    def _clock(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def _hook(self, name: str, module: nn.Module) -> None:
        def before(_module, _args):
            self._start[name] = self._clock()

        def after(_module, args, output):
            self.seconds[name] += self._clock() - self._start.pop(name)
            self.calls[name] += 1
            if name in self._linear_names and args and hasattr(args[0], "shape"):
                k = args[0].shape[-1]                        # [.., K] -> [.., N]: M * K * N
                self.macs[name] += args[0].numel() // max(1, k) * k * output.shape[-1]
        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def _wrap(self, key: str, fn):
        def timed(*args, **kwargs):
            t0 = self._clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.host_seconds[key] += self._clock() - t0
                self.host_calls[key] += 1
        return timed

    def __enter__(self) -> "ForwardProfiler":
        modules = dict(self.model.named_modules())
        for name in ["", *self.linears, *self.attention, *self.others]:
            self._hook(name, modules[name])
        for path, module, attr, fn in self.host:
            setattr(module, attr, self._wrap(f"{path}.{attr}" if path else attr, fn))
        for node in custom_nodes(self.model):
            node.stats.reset()
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for _path, module, attr, fn in self.host:
            setattr(module, attr, fn)

    def summary(self) -> dict:
        """{'linear': {type: {'seconds', 'calls', 'backend', 'parts'}}, 'linear_total',
        'host': {attribute: {'seconds', 'calls', 'kernels'}}, 'modules': {kind: {'seconds',
        'calls'}}, 'attention' (glue), 'rest', 'forward', 'forwards'} in seconds; linear_total,
        host, modules, attention and rest add up to forward."""
        nodes = {n.lw.name: n for n in custom_nodes(self.model)}
        by_type: dict[str, dict] = {}
        for name in self.linears:
            row = by_type.setdefault(layer_type(name), {"seconds": 0.0, "calls": 0, "backend": None,
                                                        "parts": defaultdict(float), "macs": 0})
            row["seconds"] += self.seconds[name]
            row["calls"] += self.calls[name]
            row["macs"] += self.macs[name]
            node = nodes.get(name)
            if node is not None and self.sync is None:
                row["backend"] = (row["backend"] or 0.0) + node.stats.seconds
                for part, s in node.stats.parts.items():
                    row["parts"][part] += s
        linear_total = sum(self.seconds[n] for n in self.linears)
        host: dict[str, dict] = {}
        for path, _module, attr, fn in self.host:
            key = f"{path}.{attr}" if path else attr
            row = host.setdefault(attr, {"seconds": 0.0, "calls": 0, "kernels": set()})
            row["seconds"] += self.host_seconds[key]
            row["calls"] += self.host_calls[key]
            row["kernels"].add(fn.__name__)
        modules: dict[str, dict] = {}
        kinds = dict(self.model.named_modules())
        for name in self.others:
            kind = f"{layer_type(name)} ({type(kinds[name]).__name__})" if "." in name else name
            row = modules.setdefault(kind, {"seconds": 0.0, "calls": 0})
            row["seconds"] += self.seconds[name]
            row["calls"] += self.calls[name]

        def inside_attention(name: str) -> bool:
            return any(name.startswith(a + ".") for a in self.attention)
        inner = sum(self.seconds[n] for n in self.linears if inside_attention(n)) + \
            sum(self.host_seconds[k] for k in self.host_seconds if inside_attention(k))
        attention = sum(self.seconds[a] for a in self.attention) - inner
        forward = self.seconds[""]
        accounted = linear_total + attention + sum(r["seconds"] for r in host.values()) + \
            sum(r["seconds"] for r in modules.values())
        return {"linear": by_type, "linear_total": linear_total, "host": host, "modules": modules,
                "attention": attention, "rest": forward - accounted, "forward": forward,
                "forwards": self.calls[""],
                "fused_gelu": [n.lw.name for n in custom_nodes(self.model) if n.lw.gelu]}


def eager_model(model: nn.Module) -> nn.Module:
    """The module whose forward runs module by module: a CUDA-graph wrapper's inner model."""
    from bertqa.backends.cuda_graphs import GraphedModel
    return model.model if isinstance(model, GraphedModel) else model


def host_labels(qa) -> dict[str, str]:
    """Host kernel attribute -> what runs it, in words, from the model's header."""
    attention, _, norm = qa.header()["attention"].partition(", ")
    return {"core": attention, "add_norm": norm or "PyTorch add, then LayerNorm"}


def profile_questions(qa, pairs: Sequence[tuple[str, str]], warmup: int = WARMUP_QUESTIONS) -> dict:
    """Answer (question, context) pairs one at a time under the profiler, after `warmup` of them
    unprofiled; the summary plus 'total' (wall seconds for all questions), 'questions',
    'labels' (host_labels) and 'notes'."""
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
        for question, context in list(pairs)[:max(1, warmup)]:    # warm-up, not profiled
            qa.answer(question, context)
        sampler = PeakSampler(model, qa.threads, sync is None)
        with ForwardProfiler(model, sync) as prof:
            t0 = time.perf_counter()
            for question, context in pairs:
                qa.answer(question, context)
                sampler.sample(sum(prof.macs.values()))
            total = time.perf_counter() - t0 - sampler.seconds
        flush_stats(model)                                 # device-side saturation counters
    finally:
        qa.pipeline.model = graphed
    note = first_layer_note(prof, qa.threads)
    summary = prof.summary()
    peak = None
    if any(row["parts"].get("gemm") for row in summary["linear"].values()):
        peak = sampler.summary()
    return {**summary, "total": total, "questions": len(pairs), "labels": host_labels(qa),
            "peak": peak, "notes": notes + ([note] if note else [])}


class PeakSampler:
    """The machine's int8 peak loop (bertqa.bench.machine), run for PEAK_SAMPLE_SECONDS after
    every profiled question on the threads, and inside the forward scope (so on the pool), that
    the model's kernels use. A shared VM's speed moves within seconds: one measurement after the
    questions was at times 20 % off what the GEMMs had (docs/speed.md). The peak the profile
    compares with is each question's sample weighted by its multiply-adds (the rate at which the
    questions' GEMM work would run at the sampled peaks). Its time is left out of the total. It
    samples only while some custom node reports a `gemm` part (customcpu): the fraction is
    printed for those alone."""

    def __init__(self, model: nn.Module, threads: int, enabled: bool = True):
        from bertqa.bench.machine import peak_path
        self.nodes = custom_nodes(model)
        self.isa = peak_path() if enabled and self.nodes else None
        self.threads = threads
        self.scope = getattr(model, "forward_scope", None)
        self.samples: list[tuple[int, float]] = []       # (the question's multiply-adds, GOPS)
        self.macs = 0
        self.seconds = 0.0

    def sample(self, macs_so_far: int) -> None:
        """After a question: `macs_so_far`, the profiler's multiply-adds up to now."""
        if self.isa is None or not any(n.stats.parts.get("gemm") for n in self.nodes):
            return
        from bertqa import native
        t0 = time.perf_counter()
        with self.scope() if self.scope else nullcontext():
            gops = native.extension().measure_peak(self.isa, PEAK_SAMPLE_SECONDS, self.threads)
        self.seconds += time.perf_counter() - t0
        self.samples.append((macs_so_far - self.macs, gops))
        self.macs = macs_so_far

    def summary(self) -> dict | None:
        """{isa, threads, gops (the weighted peak), low, high, samples}, or None without samples."""
        weighted = [(m, g) for m, g in self.samples if m > 0 and g > 0]
        if not weighted:
            return None
        gops = sum(m for m, _ in weighted) / sum(m / g for m, g in weighted)
        rates = [g for _, g in self.samples]
        return dict(isa=self.isa, threads=self.threads, gops=gops, low=min(rates), high=max(rates),
                    samples=len(rates))


def first_layer_note(prof: ForwardProfiler, threads: int) -> str | None:
    """A note when the first layer's Linear layers take far longer than the median layer's:
    with several threads, the pool's workers sleep during the Python work between forwards
    (tokenize, decode) and the first parallel kernels of each forward wait for them to wake."""
    import statistics
    per_layer: dict[int, float] = defaultdict(float)
    for name in prof.linears:
        digits = [int(p) for p in name.split(".") if p.isdigit()]
        if digits:
            per_layer[digits[0]] += prof.seconds[name]
    if len(per_layer) < 3 or threads <= 1:
        return None
    first, typical = per_layer[min(per_layer)], statistics.median(per_layer.values())
    if typical <= 0 or first < 3 * typical:
        return None
    return (f"the first layer's Linear layers took {first / typical:.1f}x the median layer's: with "
            f"{threads} threads each forward's first kernels wait for the thread pool to wake "
            "(compare --threads 1)")


def format_profile(summary: dict) -> str:
    """The summary as a table: ms, share of all time, calls."""
    if summary.get("kind") == "onnx":
        from bertqa.export.profiling import format_onnx_profile
        return format_onnx_profile(summary)
    total = summary["total"]
    lines = [f"{summary['questions']} questions, {summary['forwards']} forward passes, "
             f"{total * 1e3:.1f} ms in all ({total * 1e3 / summary['questions']:.1f} ms per question)",
             f"{'':64} {'ms':>10} {'share':>7} {'calls':>7}"]

    def add(label: str, seconds: float, calls: int | str = "") -> None:
        lines.append(f"{label:64} {seconds * 1e3:10.1f} {100 * seconds / total:6.1f}% {calls:>7}")

    peak = summary.get("peak")

    def gops(macs: int, seconds: float) -> str:
        if not seconds or not macs:
            return ""
        rate = 2 * macs / seconds / 1e9
        return f"{rate:.0f} GOPS" + (f", {100 * rate / peak['gops']:.0f}% of peak" if peak else "")

    for kind, row in summary["linear"].items():
        add(f"Linear {kind}", row["seconds"], row["calls"])
        if row["backend"] is not None:
            add("    in the backend", row["backend"])
        for part, s in sorted(row["parts"].items()):
            add(f"      {part}" + (f" ({gops(row.get('macs', 0), s)})" if part == "gemm" else ""), s)
    add("Linear, all layers", summary["linear_total"])
    macs = sum(row.get("macs", 0) for row in summary["linear"].values())
    gemm = sum(row["parts"].get("gemm", 0.0) for row in summary["linear"].values())
    if gemm and macs:
        lines.append(f"int8 GEMMs (with their fused epilogues) inside the model: {2 * macs / 1e9:.2f} "
                     f"GOP in {gemm * 1e3:.1f} ms = {gops(macs, gemm)}" +
                     (f" ({peak['isa']} multiply-add loop on {peak['threads']} threads: {peak['gops']:.0f} "
                      f"GOPS, sampled after each of the {peak['samples']} questions and weighted by "
                      f"its work; samples {peak['low']:.0f}-{peak['high']:.0f})" if peak else ""))
    labels = summary.get("labels", {})
    for attr, row in summary.get("host", {}).items():
        role = HOST_ROLES.get(attr, attr)
        runs = labels.get(attr) or ", ".join(sorted(row["kernels"]))
        add(f"{role}: {runs}"[:64], row["seconds"], row["calls"])
    add("attention glue (head split, reshapes)", summary["attention"])
    for kind, row in summary.get("modules", {}).items():
        add(kind, row["seconds"], row["calls"])
    if summary.get("fused_gelu"):
        lines.append(f"GELU: fused into Linear {layer_type(summary['fused_gelu'][0])} (in its time)")
    add("rest of the forward (mask, Python between modules)", summary["rest"])
    add("model forward", summary["forward"], summary["forwards"])
    add("outside the model (tokenize, windows, decode)", total - summary["forward"])
    return "\n".join(lines + [f"note: {n}" for n in summary.get("notes", [])])
