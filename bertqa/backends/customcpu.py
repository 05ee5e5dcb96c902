"""Backend 'customcpu': the native int8 Linear (csrc/, built by `pip install .` as bertqa._native).

`prepare` packs the reference's int8 weights once for one ISA path; `run` computes SPEC-quant
steps 2-5 (and the fused GELU) in one native call over zero-copy NumPy views of the tensors.

Smoothing (`fuses_input_scale`): a smoothed node hands its input_scale [K] to `run` with every
call, as a zero-copy view of the node's tensor (so the native code never holds a stale copy),
instead of multiplying x by it first. The native quantization computes v = x * input_scale (one
fp32 multiply) in registers for max|v|, and again, identically, when it quantizes the row, so
xq, sx, acc, q and y are bit for bit those of x * input_scale handed in, and NaN/Inf is found in
v as before. It saves torch's separate multiply, a full pass over [M, K] in memory: on one core
(avx512vnni, [384, 4096]) the quantize phase grew by ~0.1-0.15 ms where the multiply cost ~0.65 ms.

Precision 'fp' runs torch.nn.functional.linear (PyTorch's MKL/oneDNN sgemm; no native fp32 path
was written, so there is nothing to compare it with yet): the node, its timing and the backend
seam stay the same as for int8.

ISA path: the best this CPU runs (avx512vnni, then avx2, then scalar), unless BERTQA_ISA or
`set_isa` names one; `cpu_features` is the probe, which tests patch. The choice is made per
layer when it is prepared: layers already prepared keep their path.

Threads: the extension is built with OpenMP and resolves to the libgomp that torch loaded, so
the kernel and torch's intra-op work share one pool of `torch.get_num_threads()` threads and
never run on top of each other; `set_threads(n)` sets both. A contention guard in the extension
(csrc/int8_linear_runtime.cpp) runs the native kernels on one thread for a while whenever a
sampled call shows that another process took a core from one of its threads (an OpenMP region
waits for its slowest thread); the episodes grow from 20 ms to 0.2 s while the contention lasts.
BERT-large beside a busy-looping process, guard on vs off: 782 vs 941 ms median at seq 384, 275
vs 355 ms at seq 128; no change on an idle machine. BERTQA_THREAD_GUARD=0 or
native().thread_guard(False) turns it off.

GELU (layers with lw.gelu, the FFN up-projections): gelu='torch' (the backend's default)
applies torch.nn.functional.gelu to the native output; the native y equals the reference's bit
for bit (same fp32 multiply, then add), so whole models give exactly the answers of
cpu-reference. gelu='native' applies the extension's own erf GELU inside the GEMM's store
(vec_gelu.h: within ~3e-7 * |y| of exact erf, not bit-identical to torch's); `native_gelu` is
the same function over a whole tensor, which cpu-reference and aie apply with gelu='native', so
the three backends still agree exactly. The int8 targets choose 'native' with their native host
kernels (bertqa.attention): on BERT-large at seq 384 it saved ~8 ms of a ~430 ms forward.

Calibration (`calibrator`, `calibrate`): the int16 shifts of a customcpu model are calibrated on
this native kernel, not on the reference: a backend with gelu='torch' (this one, or a copy on
the same ISA path) runs each calibration call as `run` does, the epilogue also returning the
largest |acc| of the exact int32 accumulators. y and max |acc| are those of the reference bit
for bit (torch's GELU applied after, as calibration always has), so the shifts, smoothing scales
and logits are exactly those of a reference calibration, in a fraction of its time. Afterwards
`prepare_calibrated` keeps the packed weights and only sets the epilogue's shift and GELU: on
BERT-large, packing every layer again cost ~0.7 s, three times the native calibration itself.

The extension is imported lazily: where it is not built, `available()` says why and nothing
else in bertqa is affected.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from bertqa.backends.base import LinearBackend
from bertqa.quant.node_record import LinearWeights, RunStats
from bertqa.errors import NonFiniteActivationError, TargetUnavailable

ISA_PATHS = ("avx512vnni", "avx2", "scalar")     # fastest first
ISA_ENV = "BERTQA_ISA"
THREAD_GUARD_ENV = "BERTQA_THREAD_GUARD"
GELU_MODES = ("torch", "native")

_native = None


def native():
    """The extension module bertqa._native; ImportError where it is not built. BERTQA_THREAD_GUARD=0
    turns its contention guard off (see `set_threads`)."""
    global _native
    if _native is None:
        from bertqa import _native as module
        if os.environ.get(THREAD_GUARD_ENV, "1") == "0":
            module.thread_guard(False)
        _native = module
    return _native


def cpu_features() -> dict:
    """{'avx512vnni': bool, 'avx2': bool, 'scalar': True}: the ISA paths this CPU can run."""
    return dict(native().cpu_features())


def select_isa(requested: str | None = None) -> str:
    """The ISA path to pack for: `requested`, else $BERTQA_ISA, else the best the CPU runs."""
    requested = requested or os.environ.get(ISA_ENV) or None
    features = cpu_features()
    if requested is None:
        return next(isa for isa in ISA_PATHS if features.get(isa))
    if requested not in ISA_PATHS:
        raise ValueError(f"unknown ISA path {requested!r}; choose one of {', '.join(ISA_PATHS)}")
    if not features.get(requested):
        raise TargetUnavailable(f"this CPU cannot run the {requested} path of customcpu")
    return requested


def native_gelu(y: torch.Tensor) -> torch.Tensor:
    """gelu(y) in place (y: contiguous fp32 on the CPU), computed as the fused epilogue of this
    CPU's ISA path computes it; returns y."""
    assert y.dtype == torch.float32 and y.is_contiguous() and y.device.type == "cpu", \
        "native_gelu takes a contiguous fp32 CPU tensor"
    native().gelu(y.detach().numpy(), select_isa())
    return y


def apply_gelu(y: torch.Tensor, mode: str) -> torch.Tensor:
    """The GELU of a backend's gelu mode ('torch' or 'native') on y."""
    if mode == "native":
        return native_gelu(y.contiguous() if y.dtype == torch.float32 else y.float().contiguous())
    return torch.nn.functional.gelu(y)


def check_gelu_mode(backend: str, gelu: str) -> None:
    if gelu not in GELU_MODES:
        raise TargetUnavailable(f"{backend} gelu must be one of {', '.join(GELU_MODES)}, got {gelu!r}")
    if gelu == "native":
        try:
            native()
        except ImportError as e:
            raise TargetUnavailable(f"{backend} gelu='native' needs the native extension ({e})") from None


def set_threads(n: int) -> None:
    """Threads for torch's intra-op pool and the native kernel (one shared OpenMP pool)."""
    assert n >= 1, f"threads must be >= 1, got {n}"
    torch.set_num_threads(n)
    try:
        native().set_threads(n)
    except ImportError:
        pass


@dataclass
class PackedLayer:
    lw: LinearWeights
    packed: object          # bertqa._native.PackedLinear: K, N, shift, isa, path, run, run_debug
    gelu_after: bool        # apply torch's GELU to the native output (else none, or fused)
    isa: str                # the path asked for (packed.isa names a fallback's)


class CustomCPUBackend(LinearBackend):
    name = "customcpu"
    fuses_input_scale = True
    gelu_modes = GELU_MODES

    def __init__(self, gelu: str = "torch"):
        assert gelu in GELU_MODES, f"gelu must be one of {GELU_MODES}, got {gelu!r}"
        self.gelu = gelu
        self._isa = None    # None: select_isa() at the next prepare

    def configure(self, gelu: str = "torch", **others) -> "CustomCPUBackend":
        """gelu='native': the native erf GELU in the GEMM's store (see the module docstring)."""
        super().configure(**others)
        check_gelu_mode("customcpu", gelu)
        if gelu == self.gelu:
            return self
        backend = CustomCPUBackend(gelu)
        backend._isa = self._isa
        return backend

    def available(self) -> tuple[bool, str]:
        try:
            native()
        except ImportError as e:
            return False, f"native extension not built: {e}"
        try:
            return True, f"native int8 Linear, {self.isa} path"
        except (ValueError, TargetUnavailable) as e:
            return False, str(e)

    def supports(self, m: int, k: int, n: int) -> bool:
        """Every M, N and K up to the SPEC's int32 bound (avx512vnni itself hands K above its own
        +128-offset bound to the avx2 path and names that fallback in the layer's path)."""
        try:
            max_k = native().MAX_K
        except ImportError:
            return False
        return m >= 0 and n >= 1 and 1 <= k <= max_k

    @property
    def isa(self) -> str:
        if self._isa is None:
            self._isa = select_isa()
        return self._isa

    def set_isa(self, isa: str | None) -> None:
        """Force an ISA path for layers prepared from now on; None goes back to the default."""
        self._isa = select_isa(isa) if isa else None

    def variants(self) -> list[tuple[str, bool, str]]:
        """(isa, runnable here, reason) for each path, for tests that force every one."""
        features = cpu_features()
        return [(isa, bool(features.get(isa)), "" if features.get(isa) else f"this CPU lacks {isa}")
                for isa in ISA_PATHS]

    def describe(self) -> str:
        ok, reason = self.available()
        if not ok:
            return f"customcpu (unavailable: {reason})"
        nat = native()
        gelu = ", native GELU fused" if self.gelu == "native" else ""
        return (f"customcpu (native int8 GEMM, {self.isa} path, {nat.get_threads()} threads, "
                f"OpenMP: {os.path.basename(nat.openmp_runtime())}{gelu})")

    def kernel_name(self, handle) -> str:
        """What runs one prepared layer, in words (for `bertqa structure`)."""
        if isinstance(handle, LinearWeights):
            return "torch linear, fp32"
        gelu = " + GELU epilogue" if handle.lw.gelu and not handle.gelu_after else ""
        return f"native int8 GEMM, {handle.packed.path} path{gelu}"

    def calibrator(self) -> LinearBackend:
        """This backend with torch's GELU (the calibration forward applies torch's), on the same
        ISA path; the reference where the native kernel cannot run here."""
        if not self.available()[0]:
            return super().calibrator()
        return self.configure(gelu="torch")

    def calibrate(self, handle: PackedLayer, x: torch.Tensor,
                  input_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """(y, max |acc|) of one calibration call (LinearBackend.calibrate): `run`, whose
        epilogues also find max |acc| from the exact int32 accumulators (nothing [M, N] stored)."""
        assert handle.gelu_after == handle.lw.gelu, \
            f"{handle.lw.name}: calibrate with gelu='torch' (calibrator()), not a fused native GELU"
        x = _as_input(x)                                               # x: [M, K]
        y = torch.empty(x.shape[0], handle.lw.out_features, dtype=torch.float32)   # [M, N]
        max_abs_acc, _, nonfinite = handle.packed.calibrate(x.numpy(), y.numpy(),
                                                            _as_scale(input_scale))
        if nonfinite:
            raise NonFiniteActivationError(
                f"layer {handle.lw.name}: input activations contain {nonfinite}")
        return (torch.nn.functional.gelu(y) if handle.gelu_after else y), int(max_abs_acc)

    def prepare(self, lw: LinearWeights):
        if lw.precision == "fp":
            return lw
        assert lw.wq is not None and lw.wq.dtype == torch.int8, f"{lw.name}: wq must be int8 [N, K]"
        bias = None if lw.bias is None else lw.bias.detach().to(torch.float32).contiguous().numpy()
        fused = lw.gelu and self.gelu == "native"
        packed = native().pack(lw.wq.contiguous().numpy(), lw.sw.to(torch.float32).contiguous().numpy(),
                               bias, lw.shift, lw.spec.acts, lw.spec.requant, fused, self.isa)
        return PackedLayer(lw, packed, gelu_after=lw.gelu and not fused, isa=self.isa)

    def prepare_calibrated(self, lw: LinearWeights, calibration_handle):
        """Takes over the calibration handle's packed weights (calibrator(): this backend with
        torch's GELU, on the same path), setting only lw's calibrated shift and this backend's
        GELU in its epilogue: what prepare(lw) would pack, without packing again."""
        old = calibration_handle
        if not (isinstance(old, PackedLayer) and old.lw is lw and old.isa == self.isa):
            return self.prepare(lw)
        packed, old.packed = old.packed, None          # the calibration handle cannot run again
        fused = lw.gelu and self.gelu == "native"
        packed.set_epilogue(lw.shift, fused)
        return PackedLayer(lw, packed, gelu_after=lw.gelu and not fused, isa=self.isa)

    def run(self, handle, x: torch.Tensor, stats: RunStats,
            input_scale: torch.Tensor | None = None) -> torch.Tensor:
        """input_scale: [K] or None; y is the layer applied to x * input_scale (fused)."""
        if isinstance(handle, LinearWeights):                          # precision 'fp'
            if input_scale is not None:                                # torch's multiply
                x = x * input_scale.to(dtype=x.dtype)
            y = torch.nn.functional.linear(x, handle.weight, handle.bias)
            return torch.nn.functional.gelu(y) if handle.gelu else y
        x = _as_input(x)                                               # x: [M, K]
        y = torch.empty(x.shape[0], handle.lw.out_features, dtype=torch.float32)   # [M, N]
        saturated, nonfinite, t_quantize, t_gemm = handle.packed.run(x.numpy(), y.numpy(),
                                                                     _as_scale(input_scale))
        if nonfinite:
            raise NonFiniteActivationError(
                f"layer {handle.lw.name}: input activations contain {nonfinite}")
        stats.saturated += saturated
        parts = stats.parts
        parts["quantize"] = parts.get("quantize", 0.0) + t_quantize
        parts["gemm"] = parts.get("gemm", 0.0) + t_gemm                   # + fused epilogue
        return torch.nn.functional.gelu(y) if handle.gelu_after else y

    def run_debug(self, handle: PackedLayer, x: torch.Tensor,
                  input_scale: torch.Tensor | None = None) -> dict:
        """The same fused call, also returning xq [M, K], sx [M, 1], acc and q [M, N] (tests)."""
        out = handle.packed.run_debug(_as_input(x).numpy(), _as_scale(input_scale))
        if out["nonfinite"]:
            raise NonFiniteActivationError(
                f"layer {handle.lw.name}: input activations contain {out['nonfinite']}")
        result = {key: torch.from_numpy(out[key]) for key in ("y", "xq", "acc", "q")}
        if handle.gelu_after:
            result["y"] = torch.nn.functional.gelu(result["y"])
        result["sx"] = torch.from_numpy(out["sx"]).reshape(-1, 1)
        result["saturated"] = int(out["saturated"])
        return result


def _as_input(x: torch.Tensor) -> torch.Tensor:
    """x as a contiguous fp32 CPU tensor that .numpy() can view (no copy when it already is)."""
    assert x.dim() == 2, f"x must be [M, K], got {tuple(x.shape)}"
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        x = x.to(device="cpu", dtype=torch.float32).contiguous()
    return x.detach() if x.requires_grad else x


def _as_scale(scale: torch.Tensor | None):
    """input_scale [K] as an fp32 NumPy view (a copy only where it is not one already), or None."""
    if scale is None:
        return None
    if scale.dtype != torch.float32 or scale.device.type != "cpu" or not scale.is_contiguous():
        scale = scale.to(device="cpu", dtype=torch.float32).contiguous()
    return (scale.detach() if scale.requires_grad else scale).numpy()
