"""Targets and precisions: one fp32 BertForQA in, the model that runs on the target out.

    cpu fp          the plain PyTorch fp32 model (the reference)
    cpu int         PyTorch's own dynamic int8 quantization of the Linear layers (the seed's)
    customcpu fp    every Linear a custom node with fp32 compute (SPEC-quant section 6)
    customcpu int   every Linear a SPEC-quant int8 node on the native kernel (or the reference)
    aie, gpu        custom nodes on an accelerator backend (see their backends)
    onnx            a directory written by `bertqa export`, run by ONNX Runtime (bertqa.export.runtime;
                    bertqa.load dispatches it before prepare_target)

The custom targets are the same module swap on different backends; a target lists backends in
order of preference and takes the first that is available here, saying why it skipped others.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from bertqa import attention as host_attention
from bertqa.backends import REGISTRY, load_backend
from bertqa.errors import TargetUnavailable
from bertqa.quant import QuantSpec, custom_nodes, flush_stats, quantize_model
from bertqa.quant.streaming import quantize_streaming

TARGETS = ("cpu", "customcpu", "aie", "gpu", "onnx")
PRECISIONS = ("fp", "int")
# target -> Linear backends by preference
TARGET_BACKENDS = {
    "customcpu": ["customcpu", "cpu-reference"],
    "aie": ["aie"],
    "gpu": ["gpu"],
}
# targets whose Linear backends take the native GELU along with the native host kernels
NATIVE_GELU_TARGETS = ("customcpu", "aie")


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


def choose_backend(target: str, requested: str | None = None):
    """(backend object, notes) for a custom target; TargetUnavailable listing every reason."""
    names = [requested] if requested else TARGET_BACKENDS.get(target, [])
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
                   backend_options: dict | None = None, fetchers: dict | None = None,
                   build_nodes: Callable[[nn.Module, object], None] | None = None,
                   attention_mode: str | None = None) -> Prepared:
    """Turn an fp32 model into the model for target/precision (in place where possible).
    `attention_mode`: 'auto' (None), 'fp32' or 'bf16' (bertqa.attention); it is set before
    calibration, so that calibration sees the activations inference will see.
    `backend_options` go to the chosen backend's `configure` (e.g. {'aie_device': 'emulator'}).
    Custom targets only: with `fetchers` the model's Linear layers hold no weights yet and
    fetchers[name]() reads them; they are quantized one layer at a time (quant.streaming).
    With `build_nodes`, build_nodes(model, backend) puts the nodes in place itself (a saved
    prepared model: quant.persist), and nothing is quantized or calibrated here."""
    if target not in TARGETS:
        raise TargetUnavailable(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if precision not in PRECISIONS:
        raise TargetUnavailable(f"unknown precision {precision!r}; choose fp or int")
    if target == "onnx":
        raise TargetUnavailable("--target onnx runs a directory written by `bertqa export` (--model DIR)")
    if target == "cpu":
        assert fetchers is None and build_nodes is None, "--target cpu needs the fp32 model"
        if backend or backend_options:
            what = "--backend" if backend else "backend options (" + ", ".join(backend_options) + ")"
            raise TargetUnavailable(f"{what} apply to the custom targets, not --target cpu")
        att = host_attention.install(model, host_attention.choose(attention_mode, target, precision))
        if precision == "fp":
            return Prepared(model, target, precision, "PyTorch fp32 (torch.nn.Linear)", attention=att)
        return Prepared(torch_dynamic_int8(model), target, precision,
                        "PyTorch dynamic int8 (torch.ao quantize_dynamic)", attention=att)
    chosen, notes = choose_backend(target, backend)
    if precision not in chosen.precisions:
        raise TargetUnavailable(f"--target {target} (backend {chosen.name}) computes --precision "
                                f"{' or '.join(chosen.precisions)} only, not {precision}")
    kernels = host_attention.choose(attention_mode, target, precision, chosen.device)
    options = dict(backend_options or {})
    if target in NATIVE_GELU_TARGETS and kernels.gelu != "torch":
        options.setdefault("gelu", kernels.gelu)                 # GELU goes with the host kernels
    chosen = chosen.configure(**options)
    spec = (spec or QuantSpec.default()) if precision == "int" else None
    att = host_attention.install(model, kernels)
    if build_nodes is not None:
        build_nodes(model, chosen)
    elif fetchers is None:
        quantize_model(model, precision, chosen, spec, calibrate, fuse_gelu=fuse_gelu)
    else:
        quantize_streaming(model, fetchers, precision, chosen, spec, calibrate, fuse_gelu=fuse_gelu)
    model = chosen.finish_model(model)                         # e.g. to the GPU, CUDA graphs
    label = chosen.describe() + ("" if precision == "int" else f", {chosen.fp_compute} compute")
    return Prepared(model, target, precision, label, spec, notes, device=chosen.device, attention=att)


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
