"""Targets as data: one table row per --target, and the one prepare path that reads it.

    cpu fp          the plain PyTorch fp32 model (the reference)
    cpu int         PyTorch's own dynamic int8 quantization of the Linear layers (the seed's)
    customcpu fp    every Linear a custom node with fp32 compute (docs/quantization.md, section 6)
    customcpu int   every Linear a docs/quantization.md int8 node on the native kernel (or the reference)
    aie, gpu        custom nodes on an accelerator backend (see their backends)
    onnx            a directory written by `bertqa export`, run by ONNX Runtime (bertqa.export.runtime;
                    bertqa.load dispatches it before prepare_target)

A custom target lists its Linear backends in order of preference and takes the first that is
available here, saying why it skipped others; its row also says where the model runs, which
host kernels `--attention auto` picks, and which GELU the Linear backends apply. Adding a target
is one row here (and, for a new backend, one module plus one line in bertqa.backends.REGISTRY).

Where the weights come from is the `nodes` argument of prepare_target (a NodeSource): the fp32
weights the model holds (`from_weights`, the default), a checkpoint read one layer at a time
(`streamed(fetchers)`), or the int8 nodes of a saved model (bertqa.saved). Everything else --
host kernels, backend options, the backend's finishing step, the header -- is the same code.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from bertqa import attention as host_attention, native
from bertqa.backends import REGISTRY, load_backend
from bertqa.errors import TargetUnavailable
from bertqa.quant import QuantSpec, custom_nodes, flush_stats, quantize_model
from bertqa.quant.streaming import quantize_streaming


@dataclass(frozen=True)
class Target:
    """One --target. backends: Linear backends by preference, () for none (the model's own
    nn.Linear layers). device: where the model runs. host_kernels: 'native' makes --attention
    auto run the native host kernels for --precision int where they run, 'pytorch' never.
    gelu: the GELU of Linear layers that absorb it -- 'torch', or 'host': the host kernels'
    (the native GELU where the native host kernels run, so that the CPU backends agree bit for
    bit). options: backend options the target fixes (the caller's options override them).
    runner: 'torch' prepared here, 'onnx' an exported directory (bertqa.export.runtime)."""
    backends: tuple[str, ...] = ()
    device: str = "cpu"
    host_kernels: str = "pytorch"
    gelu: str = "torch"
    options: dict = field(default_factory=dict)
    runner: str = "torch"


TARGET_TABLE: dict[str, Target] = {
    "cpu": Target(),
    "customcpu": Target(backends=("customcpu", "cpu-reference"), host_kernels="native", gelu="host"),
    "aie": Target(backends=("aie",), host_kernels="native", gelu="host"),
    "gpu": Target(backends=("gpu",), device="cuda"),
    "onnx": Target(runner="onnx"),
}
TARGETS = tuple(TARGET_TABLE)
PRECISIONS = ("fp", "int")


def is_custom(target: str | None) -> bool:
    """Whether `target` runs custom Linear nodes (a backend from the registry)."""
    return target in TARGET_TABLE and bool(TARGET_TABLE[target].backends)


def target_of_backend(name: str) -> str:
    """The first target whose row lists backend `name`; 'customcpu' (the CPU host) for one that
    no row lists (e.g. registered at run time)."""
    return next((t for t, row in TARGET_TABLE.items() if name in row.backends), "customcpu")


@dataclass
class Prepared:
    model: nn.Module
    target: str
    precision: str
    backend: str                      # what runs the Linear layers, in words
    spec: QuantSpec | None = None
    notes: list[str] = field(default_factory=list)   # fallbacks and other facts for the header
    device: str = "cpu"
    attention: str = host_attention.FP32_LABEL     # what computes softmax(QK^T) V, in words


# (model, precision, backend, spec, calibrate, fuse_gelu) -> None: puts the custom nodes in place
NodeSource = Callable[[nn.Module, str, object, "QuantSpec | None", "Callable | None", bool], None]


def from_weights(model, precision, backend, spec, calibrate, fuse_gelu) -> None:
    """The nodes from the fp32 weights `model` holds (quant.linear.quantize_model)."""
    quantize_model(model, precision, backend, spec, calibrate, fuse_gelu=fuse_gelu)


def streamed(fetchers: dict) -> NodeSource:
    """The nodes from a model whose Linear layers hold no weights yet: fetchers[name]() reads
    them, one layer at a time (quant.streaming)."""
    def place(model, precision, backend, spec, calibrate, fuse_gelu) -> None:
        quantize_streaming(model, fetchers, precision, backend, spec, calibrate, fuse_gelu=fuse_gelu)
    return place


def choose_backend(target: str, requested: str | None = None):
    """(backend object, notes) for a custom target; TargetUnavailable listing every reason."""
    names = [requested] if requested else list(TARGET_TABLE[target].backends)
    reasons = []
    for name in names:
        if name not in REGISTRY:
            why = (f"no such backend (registered: {', '.join(sorted(REGISTRY))})" if requested
                   else "not implemented yet")
            reasons.append((name, why))
            continue
        backend = load_backend(name)
        ok, why = backend.available()
        if ok:
            notes = [f"backend {n} skipped: {r}" for n, r in reasons]
            return backend, notes
        reasons.append((name, why))
    detail = "; ".join(f"{n}: {r}" for n, r in reasons) or "no backend registered"
    raise TargetUnavailable(f"--target {target} is not available here ({detail})")


def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as e:
        raise TargetUnavailable(
            "--target cpu --precision int uses torch.ao.quantization.quantize_dynamic, which this "
            "torch no longer provides; use --target customcpu --precision int instead") from e
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def prepare_target(model: nn.Module, target: str, precision: str, spec: QuantSpec | None = None,
                   calibrate: Callable[[nn.Module], None] | None = None,
                   backend: str | None = None, fuse_gelu: bool = True,
                   options: dict | None = None, nodes: NodeSource | None = None,
                   attention_mode: str | None = None) -> Prepared:
    """Turn `model` into the model for target/precision (in place where possible), as the
    target's row in TARGET_TABLE says. `attention_mode`: 'auto' (None), 'fp32' or 'bf16'
    (bertqa.attention); it is set before calibration, so that calibration sees the activations
    inference will see. `options` go to the chosen backend's `configure` (e.g.
    {'aie_device': 'emulator'}). `nodes`: where the custom nodes come from (see the module
    docstring); None: the fp32 weights the model holds."""
    if target not in TARGET_TABLE:
        raise TargetUnavailable(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if precision not in PRECISIONS:
        raise TargetUnavailable(f"unknown precision {precision!r}; choose fp or int")
    row = TARGET_TABLE[target]
    if row.runner == "onnx":
        raise TargetUnavailable("--target onnx runs a directory written by `bertqa export` (--model DIR)")
    if not row.backends:
        return prepare_pytorch(model, target, precision, backend, options, nodes, attention_mode)
    chosen, notes = choose_backend(target, backend)
    if precision not in chosen.precisions:
        raise TargetUnavailable(f"--target {target} (backend {chosen.name}) computes --precision "
                                f"{' or '.join(chosen.precisions)} only, not {precision}")
    if chosen.device != row.device:
        raise TargetUnavailable(f"backend {chosen.name} runs on {chosen.device}, --target {target} "
                                f"on {row.device}; use --target {target_of_backend(chosen.name)}")
    kernels = host_attention.choose(attention_mode, precision, row.device,
                                    native_by_default=row.host_kernels == "native")
    backend_options = {**row.options, **(options or {})}
    if row.gelu == "host" and kernels.native:
        backend_options.setdefault("gelu", "native")            # GELU goes with the host kernels
    chosen = chosen.configure(**backend_options)
    spec = (spec or QuantSpec.default()) if precision == "int" else None
    att = host_attention.install(model, kernels)
    (nodes or from_weights)(model, precision, chosen, spec, calibrate, fuse_gelu)
    if precision == "int" and kernels.whole_layer and chosen.native_pool and hasattr(model, "set_forward_scope"):
        model.set_forward_scope(native.torch_on_caller)   # nothing heavy left on torch's threads
    model = chosen.finish_model(model)                         # e.g. to the GPU, CUDA graphs
    label = chosen.describe() + ("" if precision == "int" else f", {chosen.fp_compute} compute")
    return Prepared(model, target, precision, label, spec, notes, device=row.device, attention=att)


def prepare_pytorch(model: nn.Module, target: str, precision: str, backend: str | None,
                    options: dict | None, nodes: NodeSource | None, attention_mode: str | None) -> Prepared:
    """A target without custom nodes (--target cpu): the model's own nn.Linear layers."""
    if nodes is not None:
        raise TargetUnavailable(f"--target {target} needs the fp32 model (a custom target runs "
                                "a streamed checkpoint or a saved int8 model)")
    if backend or options:
        what = "--backend" if backend else "backend options (" + ", ".join(options) + ")"
        raise TargetUnavailable(f"{what} apply to the custom targets, not --target {target}")
    att = host_attention.install(model, host_attention.choose(attention_mode, precision))
    if precision == "fp":
        return Prepared(model, target, precision, "PyTorch fp32 (torch.nn.Linear)", attention=att)
    return Prepared(torch_dynamic_int8(model), target, precision,
                    "PyTorch dynamic int8 (torch.ao quantize_dynamic)", attention=att)


def int8_layer_report(model: nn.Module) -> list[dict]:
    """Per custom node: name, K, N, shift, saturation count and rate, time in the backend."""
    rows = []
    if not isinstance(model, nn.Module):                       # --target onnx: no custom nodes
        return rows
    flush_stats(model)                                         # counters kept on a device
    for node in custom_nodes(model):
        lw, st = node.lw, node.stats
        rows.append(dict(name=lw.name, K=lw.in_features, N=lw.out_features,
                         weights=lw.spec.weights if lw.spec else "-", shift=lw.shift,
                         saturated=st.saturated, sat_rate=st.saturated / st.elements if st.elements else 0.0,
                         calls=st.calls, seconds=st.seconds))
        report = node.backend.layer_report(node.handle, st)    # e.g. the AIE tile report
        if report is not None:
            rows[-1]["device"] = report
    return rows
