"""What a prepared model is made of, read from the model object: the steps of one forward pass.

One short forward (a real tokenized window) runs with hooks on every leaf module and with the
modules' replaceable host kernels (function attributes such as SelfAttention.core and add_norm)
wrapped for the duration; each call becomes a Step in call order, with its input and output
shapes, and for a custom node (CustomLinear/QLinear) its backend, the kernel that backend runs
and its int8 details. Steps inside a host kernel (PyTorch's LayerNorm inside add_norm) are listed
under it. A ModuleList of identical layers is shown once: layer 0's steps, and the count.
Nothing here knows BERT: names come from the module tree, host kernels from the attributes
that hold functions. The picture (bertqa.structure_plot) and the text form both draw a Structure.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch
from torch import nn

from bertqa.quant import CustomLinear, custom_nodes

# what a host kernel attribute computes, by attribute name (the label says which kernel runs it)
HOST_ROLES = {"core": "attention softmax(QK^T/sqrt(d)) V", "add_norm": "residual add + LayerNorm"}


@dataclass
class Step:
    name: str                    # module path ("layers.0.attention.qkv") or path.attribute
    op: str                      # class name, or the host kernel's function name
    kind: str                    # 'node' (custom linear node), 'host' (host kernel), 'torch' (module)
    lines: list[str] = field(default_factory=list)      # what to print under it
    shape_in: tuple = ()
    shape_out: tuple = ()
    inner: list["Step"] = field(default_factory=list)   # modules called inside a host kernel


@dataclass
class Structure:
    title: str
    facts: list[str]             # model, target, backend, quantization, attention
    before: list[Step]           # steps before the repeated layers (embeddings)
    layer: list[Step]            # one repeated layer's steps
    layer_name: str              # e.g. "layers"
    repeats: int                 # how many such layers
    after: list[Step]            # steps after them (the QA head)
    inputs: str
    outputs: str
    batch: int = 1               # the traced window's batch and sequence sizes
    seq: int = 1


def _is_leaf(m: nn.Module) -> bool:
    """No children, where torch's packed-weight holders (dynamic int8 Linear) do not count."""
    return all(type(c).__name__.endswith("PackedParams") for c in m.children())


def _shape(x) -> tuple:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return tuple(x[0].shape)
    return ()


def host_kernels(model: nn.Module):
    """(module path, module, attribute, function) for each function held by a module."""
    for path, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)) and not attr.startswith("_"):
                yield path, module, attr, value


def _short(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def describe_module(name: str, m: nn.Module) -> Step:
    """The Step of one leaf module, before its shapes are known."""
    op = type(m).__name__
    if isinstance(m, CustomLinear):
        lw = m.lw
        lines = [f"K {lw.in_features} -> N {lw.out_features}",
                 f"{m.backend.name}: {m.backend.kernel_name(m.handle)}"]
        extras = [f"int8, shift {lw.shift}"] if lw.precision == "int" else ["fp32 weights"]
        if m.input_scale is not None:
            extras.append("smoothed input")
        if lw.gelu:
            extras.append("GELU fused")
        return Step(name, op, "node", lines + [", ".join(extras)])
    if isinstance(m, nn.Embedding):
        return Step(name, op, "torch", [f"{m.num_embeddings} x {m.embedding_dim}"])
    if isinstance(m, nn.LayerNorm):
        return Step(name, op, "torch", [f"over {m.normalized_shape[-1]}, PyTorch"])
    in_f, out_f = getattr(m, "in_features", None), getattr(m, "out_features", None)
    if in_f is not None:
        dynamic = "quantized" in type(m).__module__          # torch.ao...quantized.dynamic.Linear
        return Step(name, m._get_name(), "torch",
                    [f"K {in_f} -> N {out_f}", "PyTorch dynamic int8" if dynamic else "PyTorch fp32"])
    return Step(name, op, "torch", ["PyTorch"])


def trace_steps(model: nn.Module, inputs: tuple, host_labels: dict[str, str]) -> list[Step]:
    """The steps of model(*inputs) in call order (see the module docstring). host_labels:
    attribute name -> what runs it, in words (e.g. from the model header)."""
    steps: list[Step] = []
    depth = [0]                                   # >0 while inside a host kernel
    handles, restore = [], []

    def hook(name, module):
        def after(_m, args, output):
            step = describe_module(name, module)
            step.shape_in, step.shape_out = _shape(args), _shape(output)
            (steps[-1].inner if depth[0] and steps else steps).append(step)
        return after

    def wrap(path, attr, fn):
        label = host_labels.get(attr, "")

        def traced(*args, **kwargs):
            step = Step(f"{path}.{attr}" if path else attr, fn.__name__, "host",
                        [x for x in (HOST_ROLES.get(attr, ""), label) if x])
            step.shape_in = _shape(args[0]) if args else ()
            steps.append(step)
            depth[0] += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                depth[0] -= 1
            step.shape_out = _shape(out)
            return out
        return traced

    for name, module in model.named_modules():
        if name and _is_leaf(module):
            handles.append(module.register_forward_hook(hook(name, module)))
    for path, module, attr, fn in list(host_kernels(model)):
        restore.append((module, attr, fn))
        setattr(module, attr, wrap(path, attr, fn))
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for module, attr, fn in restore:
            setattr(module, attr, fn)
    for node in custom_nodes(model):                 # the trace is not part of any run's stats
        node.stats.reset()
    return [s for s in steps if s.op != "Identity"]  # an activation a node now applies itself


def repeated_list(model: nn.Module) -> tuple[str, int] | None:
    """(path, length) of the largest ModuleList of more than one module of one class."""
    best = None
    for path, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(c) for c in m}) == 1:
            if best is None or len(m) > best[1]:
                best = (path, len(m))
    return best


def split_layers(steps: list[Step], layers: tuple[str, int] | None):
    """(before, layer 0's steps, after): steps of the other repeated layers are dropped."""
    if layers is None:
        return steps, [], []
    prefix = layers[0] + "."
    before, layer, after = [], [], []
    for s in steps:
        if s.name.startswith(prefix):
            if s.name.startswith(prefix + "0."):
                layer.append(s)
        else:
            (after if layer else before).append(s)
    return before, layer, after


def model_structure(qa) -> Structure:
    """The Structure of a QAModel's prepared model, traced on one short window."""
    from bertqa.bench.profile import eager_model
    from bertqa.qa.windows import collate
    model = eager_model(qa.prepared.model)
    windows = qa.pipeline.windows(["Who kept the lighthouse?"], ["Margarethe Olsen kept the lighthouse."])
    ids, types_, mask = (t.to(qa.pipeline.device) for t in collate(windows[:1], qa.tokenizer.pad_id))
    header = qa.header()
    attention, _, norm = header["attention"].partition(", ")
    steps = trace_steps(model, (ids, types_, mask),
                        {"core": attention, "add_norm": norm or "PyTorch add, then LayerNorm"})
    layers = repeated_list(model)
    before, layer, after = split_layers(steps, layers)
    facts = [f"model {header['model']} ({header['parameters'] / 1e6:.0f} M parameters), "
             f"--target {header['target']} --precision {header['precision']}",
             f"Linear layers: {header['linear backend']}",
             f"quantization: {header['quantization']}; host attention: {header['attention']}"]
    return Structure(f"{header['model']} as prepared for {header['target']} {header['precision']}",
                     facts, before, layer, layers[0] if layers else "", layers[1] if layers else 0,
                     after, f"input_ids, token_type_ids, attention_mask [B, S] (traced with "
                     f"B={ids.shape[0]}, S={ids.shape[1]})", "start, end logits [B, S]",
                     int(ids.shape[0]), int(ids.shape[1]))


def format_structure(st: Structure) -> str:
    """The structure as indented text for the terminal."""
    lines = [st.title, *(f"  {f}" for f in st.facts), f"in: {st.inputs}"]

    def add(step: Step, indent: str) -> None:
        shapes = f"{_short(step.shape_in)} -> {_short(step.shape_out)}" if step.shape_in else ""
        lines.append(f"{indent}{step.name}  {step.op}  {shapes}".rstrip())
        lines.extend(f"{indent}    {x}" for x in step.lines)
        for inner in step.inner:
            lines.append(f"{indent}    calls {inner.name} ({inner.op})")

    for s in st.before:
        add(s, "  ")
    if st.layer:
        lines.append(f"  {st.layer_name}.0 .. {st.layer_name}.{st.repeats - 1}: {st.repeats} x the same layer:")
        for s in st.layer:
            add(s, "    ")
    for s in st.after:
        add(s, "  ")
    lines.append(f"out: {st.outputs}")
    return "\n".join(lines)
