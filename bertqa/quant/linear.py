"""Custom linear nodes and the module swap that puts them into any model.

`CustomLinear` (precision fp) and `QLinear` (precision int) replace `nn.Linear`; their forward
hands x: [..., K] to a named backend. A smoothed node's input_scale [K] multiplies x first: in
torch before the call, or inside the call for a backend with `fuses_input_scale` (customcpu),
which then gets the scale with every call. This module knows nothing of BERT: a model says which
Linear layers are fused projections (`quant_groups`) or may absorb their GELU (`gelu_fusions`)
through optional attributes.

Calibrating the int16 shifts (quantize_model): every node is built on its target backend's
`calibrator()` -- customcpu's native kernel for customcpu, the reference for the other targets
-- with the worst-case shift, and records the largest |acc| of its exact int32 accumulators
while `calibrate` runs; each shift then comes from that peak and the node moves to the target
(customcpu keeps the weights it packed for calibration: `prepare_calibrated`).
Every calibrator gives the reference's y and max |acc| bit for bit (torch's GELU included), so
the shifts do not depend on which one ran.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from bertqa.quant import reference as ref
from bertqa.quant.node_record import LinearWeights, RunStats
from bertqa.quant.smooth import channel_amax, smoothing_scale
from bertqa.quant.spec import QuantSpec


class CustomLinear(nn.Module):
    """A Linear layer whose math runs on a backend. x: [..., K] -> y: [..., N], x's dtype
    (fp32 unless the backend takes another dtype: `backend.input_dtypes`)."""

    def __init__(self, lw: LinearWeights, backend):
        super().__init__()
        self.lw = lw
        self.in_features, self.out_features = lw.in_features, lw.out_features
        self.stats = RunStats()
        self.max_abs_acc = None          # set to 0 to record max|acc| (calibration)
        # [K] per-channel multiply before step 2 of docs/quantization.md (smoothing); a buffer, so that moving the
        # model (to a GPU, to fp16) moves it too and a captured CUDA graph never copies it. A
        # backend with fuses_input_scale receives it with every call (never a copy kept from
        # prepare, which runs before it is set), else forward multiplies x by it.
        self.register_buffer("input_scale", None)
        self.set_backend(backend)

    def set_backend(self, backend, calibration_handle=None) -> None:
        """Prepare the node on `backend`; after calibration, with the handle it calibrated on,
        which `backend` may take over (LinearBackend.prepare_calibrated)."""
        self.backend = backend
        self.handle = backend.prepare(self.lw) if calibration_handle is None else \
            backend.prepare_calibrated(self.lw, calibration_handle)

    def extra_repr(self) -> str:
        text = f"{self.lw.name}: K={self.in_features}, N={self.out_features}, backend={self.backend.name}"
        if self.lw.precision == "int":
            text += f", {self.lw.spec.label()}, shift={self.lw.shift}"
        text += ", +smoothing" if self.input_scale is not None else ""
        return text + (", +gelu" if self.lw.gelu else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)                          # [M, K]
        if x2.dtype not in self.backend.input_dtypes:
            x2 = x2.to(torch.float32)
        scale = self.input_scale
        # the backend multiplies, bit for bit as torch would (also when it calibrates)
        fused = scale is not None and self.backend.fuses_input_scale
        if scale is not None and not fused:
            x2 = x2 * scale.to(dtype=x2.dtype)
        x2 = x2.contiguous()
        scale_arg = {"input_scale": scale} if fused else {}
        t0 = time.perf_counter()
        if self.max_abs_acc is not None:
            y = self._calibration_forward(x2, **scale_arg)
        else:
            y = self.backend.run(self.handle, x2, self.stats, **scale_arg)   # [M, N]
        self.stats.seconds += time.perf_counter() - t0
        self.stats.calls += 1
        self.stats.elements += y.numel()
        return y.to(x.dtype).reshape(*lead, self.out_features)       # the dtype the node got

    def _calibration_forward(self, x2: torch.Tensor, **scale_arg) -> torch.Tensor:
        """One call on a calibrating backend (LinearBackend.calibrate): the reference's y, torch's
        GELU for lw.gelu, recording the largest |acc| seen so far in max_abs_acc."""
        y, max_abs_acc = self.backend.calibrate(self.handle, x2, **scale_arg)
        self.max_abs_acc = max(self.max_abs_acc, max_abs_acc)
        return y


class QLinear(CustomLinear):
    """The int8 custom node (docs/quantization.md); the name the layer summary counts, as the seed did."""


def worst_case_shift(wq: torch.Tensor) -> int:
    """A shift that can never saturate: |acc| <= 127 * max_n sum_k |wq[n, k]|. (|wq| <= 127 is
    exact in int8, and a row sums to at most 127 * K < 2^31 in int32: no int64 copy of wq.)"""
    bound = 127 * int(wq.abs().sum(dim=1, dtype=torch.int32).max()) if wq.numel() else 0
    return ref.shift_for_max_acc(bound, margin_bits=0)


def linear_weights(weight, bias, spec: QuantSpec | None, precision: str, name: str = "linear",
                   groups: int = 1, gelu: bool = False, shift: int | None = None) -> LinearWeights:
    """Step 1 of docs/quantization.md (for int) plus the shift: the backend-independent part of preparing a layer."""
    weight = weight.detach().to(torch.float32).contiguous()
    bias = None if bias is None else bias.detach().to(torch.float32).contiguous()
    n, k = weight.shape
    lw = LinearWeights(name=name, in_features=k, out_features=n, precision=precision, bias=bias, gelu=gelu)
    if precision == "fp":
        lw.weight = weight
        return lw
    assert precision == "int", f"precision must be 'fp' or 'int', got {precision!r}"
    if spec is None:
        raise ValueError(f"{name}: precision 'int' needs a QuantSpec (QuantSpec.default() is the targets')")
    lw.spec = spec
    lw.wq, lw.sw = ref.quantize_weight_symmetric(weight, spec.weights, groups)
    if spec.requant == "int32":
        lw.shift = 0
    elif spec.shift is not None:
        lw.shift = spec.shift
    else:
        lw.shift = worst_case_shift(lw.wq) if shift is None else shift
    return lw


def prepare_linear(weight: torch.Tensor, bias: torch.Tensor | None, spec: QuantSpec | None = None, *,
                   backend, precision: str = "int", name: str = "linear",
                   groups: int = 1, gelu: bool = False, shift: int | None = None) -> CustomLinear:
    """One custom node for W: [N, K], b: [N] on `backend` (a backend object, e.g.
    bertqa.backends.get_backend(name)). Without a calibrated shift, a calibrated spec takes
    the worst-case shift of its weights (never saturates); quantize_model calibrates on data.
    spec None means QuantSpec.default() as for quantize_model and the targets, less its
    smoothing: one layer on its own has no calibration inputs to smooth by."""
    if spec is None and precision == "int":
        spec = replace(QuantSpec.default(), smooth=None)
    if precision == "int" and spec.smooth is not None:
        raise ValueError("QuantSpec.smooth needs calibration inputs: use quantize_model(..., calibrate=...)")
    lw = linear_weights(weight, bias, spec, precision, name, groups, gelu, shift)
    cls = QLinear if precision == "int" else CustomLinear
    return cls(lw, backend_object(backend))


def backend_object(backend):
    """`backend` itself; a clear error for a name (this layer does not look backends up: the
    caller resolves it, so that quantization never imports bertqa.backends)."""
    if isinstance(backend, str):
        raise TypeError(f"pass a backend object, not the name {backend!r} "
                        f"(bertqa.backends.get_backend({backend!r}))")
    return backend


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where the submodule of `model` with qualified name `name` ('a.b.c') is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def swap_linears(model: nn.Module, make_node: Callable[[str, nn.Linear], nn.Module]) -> int:
    """Replace every nn.Linear in `model` by make_node(qualified_name, linear); returns the count."""
    targets = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    for name, linear in targets:
        replace_module(model, name, make_node(name, linear))
    return len(targets)


def remove_modules(model: nn.Module, names) -> None:
    """Replace each named submodule by nn.Identity (an activation a node now applies itself)."""
    for name in names:
        replace_module(model, name, nn.Identity())


def custom_nodes(model: nn.Module) -> list[CustomLinear]:
    return [m for m in model.modules() if isinstance(m, CustomLinear)]


@dataclass
class QuantPlan:
    """What quantizing one model means, decided once from its arguments (see quantize_model)."""
    precision: str
    spec: QuantSpec
    target: object                     # the backend the nodes end on
    groups: dict                       # fused Linear -> weight tensors stacked in it
    fusions: dict                      # Linear -> the activation module it absorbs
    calibrate_shifts: bool             # int16 shifts from max|acc| on calibration inputs
    smooth: bool                       # activation smoothing from calibration inputs
    calibrator: object = None          # the backend nodes calibrate on: target.calibrator()

    @classmethod
    def make(cls, model: nn.Module, precision: str, backend, spec: QuantSpec | None,
             calibrate, fuse_gelu: bool) -> "QuantPlan":
        spec = QuantSpec.default() if spec is None else spec
        smooth = precision == "int" and spec.smooth is not None
        if smooth and calibrate is None:
            raise ValueError("QuantSpec.smooth needs calibration inputs (calibrate=...)")
        target = backend_object(backend)
        calibrate_shifts = precision == "int" and spec.calibrated and calibrate is not None
        return cls(precision, spec, target,
                   getattr(model, "quant_groups", lambda: {})(),
                   getattr(model, "gelu_fusions", lambda: {})() if fuse_gelu else {},
                   calibrate_shifts, smooth, target.calibrator() if calibrate_shifts else None)

    def build_node(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None,
                   x_amax: torch.Tensor | None = None) -> CustomLinear:
        """The node for one Linear's fp32 weights. With smoothing, x_amax: [K] is its input's
        per-channel max|x|: the node holds W * s and multiplies its input by 1 / s. While shifts
        are to be calibrated it runs on the calibrator (worst-case shift) and records max|acc|."""
        scale = None
        if self.smooth:
            assert x_amax is not None, f"{name}: smoothing needs the input's per-channel max|x|"
            scale = smoothing_scale(x_amax, weight, self.spec.smooth)      # [K]
            weight = weight.detach() * scale[None, :]
        lw = linear_weights(weight, bias, self.spec, self.precision, name,
                            self.groups.get(name, 1), gelu=name in self.fusions)
        cls = QLinear if self.precision == "int" else CustomLinear
        node = cls(lw, self.calibrator if self.calibrate_shifts else self.target)
        node.input_scale = None if scale is None else (1.0 / scale).contiguous()
        node.max_abs_acc = 0 if self.calibrate_shifts else None
        return node

    def fuse_activations(self, model: nn.Module) -> None:
        remove_modules(model, self.fusions.values())

    def finish(self, nodes: list[CustomLinear], margin_bits: int) -> None:
        """After calibration: each shift from its layer's max|acc|, then the target backend."""
        for node in nodes:
            if self.calibrate_shifts:
                node.lw.shift = ref.shift_for_max_acc(node.max_abs_acc, margin_bits)
                node.max_abs_acc = None
                node.set_backend(self.target, calibration_handle=node.handle)
            node.stats.reset()


def quantize_model(model: nn.Module, precision: str, backend, spec: QuantSpec | None = None,
                   calibrate: Callable[[nn.Module], None] | None = None, fuse_gelu: bool = False,
                   margin_bits: int = 1) -> list[CustomLinear]:
    """Swap every Linear of `model` for a custom node on `backend`, in place. spec None means
    QuantSpec.default(), the spec of the int targets.

    For a calibrated int16 spec, `calibrate(model)` runs a few representative inputs through the
    model while every node records its max |acc| (exact accumulators, on the backend's
    calibrator(): the native kernel for customcpu, else the reference, with the same results);
    each layer's shift is then the smallest that fits that peak in int16, plus `margin_bits`.
    With smoothing, the per-channel input statistics come from `calibrate` run on the fp32
    model first. `fuse_gelu` lets layers named by the model's `gelu_fusions()` apply GELU
    themselves. `backend` is a backend object (bertqa.backends.get_backend(name), or one set up
by `configure`).
    bertqa.quant.streaming does the same for a model whose Linear weights are read on demand.
    """
    plan = QuantPlan.make(model, precision, backend, spec, calibrate, fuse_gelu)
    x_amax = channel_amax(model, calibrate) if plan.smooth else {}
    swap_linears(model, lambda name, linear: plan.build_node(name, linear.weight, linear.bias,
                                                             x_amax.get(name)))
    plan.fuse_activations(model)
    nodes = custom_nodes(model)
    if plan.calibrate_shifts:
        with torch.inference_mode():
            calibrate(model)
    plan.finish(nodes, margin_bits)
    return nodes


def flush_stats(model: nn.Module | list) -> None:
    """Bring counters that backends keep on a device into each node's stats: one call per
    backend (a GPU backend synchronises once, not once per layer). `model`: a module, or the
    list of its custom nodes. Raises NonFiniteActivationError if a layer saw NaN/Inf since the
    last flush."""
    by_backend: dict = {}
    for node in custom_nodes(model) if isinstance(model, nn.Module) else model:
        by_backend.setdefault(node.backend, []).append((node.handle, node.stats))
    for backend, items in by_backend.items():
        backend.flush(items)


def layer_summary(model: nn.Module) -> dict:
    """{'total': leaf modules, '<ClassName>': count, ...} like the seed's 'Layers in model'."""
    def is_layer(m: nn.Module) -> bool:
        # a leaf, where torch's packed-weight holders do not count as children
        return not any(not type(c).__name__.endswith("PackedParams") for c in m.children()) \
            and not type(m).__name__.endswith("PackedParams")
    counts = Counter(m._get_name() for m in model.modules() if is_layer(m))
    return {"total": sum(counts.values()), **dict(counts.most_common())}
