"""Backend 'customcpu': the native int8 Linear (csrc/, built by `pip install .` as bertqa._native).

`prepare` packs the reference's int8 weights once for one ISA path; `run` computes docs/quantization.md
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
`set_isa` names one (bertqa.native.select_isa; tests patch its probe `cpu_features`). The
choice is made per layer when it is prepared: layers already prepared keep their path.

Threads and the contention guard belong to the native runtime (bertqa.native, one setting
for the whole process).

GELU (layers with lw.gelu, the FFN up-projections): gelu='torch' (the backend's default)
applies torch.nn.functional.gelu to the native output; the native y equals the reference's bit
for bit (same fp32 multiply, then add), so whole models give exactly the answers of
cpu-reference. gelu='native' applies the extension's own erf GELU inside the GEMM's store
(vec_gelu.h: within ~3e-7 * |y| of exact erf, not bit-identical to torch's);
bertqa.native.native_gelu is the same function over a whole tensor, which cpu-reference and aie
apply with gelu='native', so the three backends still agree exactly. The int8 targets choose
'native' with their native host kernels (bertqa.targets, Target.gelu).

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

from dataclasses import dataclass

import torch

from bertqa import native
from bertqa.backends.base import LinearBackend
from bertqa.errors import NonFiniteActivationError, TargetUnavailable
from bertqa.native import GELU_MODES, ISA_PATHS, check_gelu_mode, select_isa
from bertqa.quant.node_record import LinearWeights, RunStats

@dataclass
class PackedLayer:
    lw: LinearWeights
    packed: object          # bertqa._native.PackedLinear: K, N, shift, isa, path, run, run_debug
    gelu_after: bool        # apply torch's GELU to the native output (else none, or fused)
    isa: str                # the path asked for (packed.isa names a fallback's)


class CustomCPUBackend(LinearBackend):
    name = "customcpu"
    fuses_input_scale = True
    native_pool = True

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
        why = native.unavailable()
        if why:
            return False, why
        try:
            return True, f"native int8 Linear, {self.isa} path"
        except (ValueError, TargetUnavailable) as e:
            return False, str(e)

    @property
    def isa(self) -> str:
        if self._isa is None:
            self._isa = select_isa()
        return self._isa

    def set_isa(self, isa: str | None) -> None:
        """Force an ISA path for layers prepared from now on; None goes back to the default."""
        self._isa = select_isa(isa) if isa else None

    def set_variant(self, variant: str | None) -> None:
        """The variants are the ISA paths (set_isa)."""
        self.set_isa(variant)

    def variants(self) -> list[tuple[str, bool, str]]:
        """(isa, runnable here, reason) for each path, for tests that force every one."""
        features = native.cpu_features()
        return [(isa, bool(features.get(isa)), "" if features.get(isa) else f"this CPU lacks {isa}")
                for isa in ISA_PATHS]

    def describe(self) -> str:
        ok, reason = self.available()
        if not ok:
            return f"customcpu (unavailable: {reason})"
        nat = native.extension()
        gelu = ", native GELU fused" if self.gelu == "native" else ""
        return f"customcpu (native int8 GEMM, {self.isa} path, {nat.get_threads()} threads{gelu})"

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
        packed = native.extension().pack(lw.wq.contiguous().numpy(), lw.sw.to(torch.float32).contiguous().numpy(),
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
