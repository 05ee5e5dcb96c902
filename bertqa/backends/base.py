"""The contract every Linear backend implements (see ../shared/STYLE.md, point 2).

A backend knows nothing of BERT or question answering: it receives one Linear layer's weights,
already quantized by the reference (SPEC-quant section 1, so every backend starts from the same
integers), packs them once in `prepare`, and maps activations x: [M, K] fp32 to y: [M, N] fp32
in `run`. `available()` says whether it can run on this machine and why not; `supports()` says
which shapes its fast path takes, so that callers can fall back instead of crashing.

Calibration of the int16 shifts (bertqa.quant.linear.quantize_model) runs the model once with
every node on its target's `calibrator()`, whose `calibrate` returns y and the call's max |acc|:
the reference by default, customcpu's own native kernel for customcpu (bit-exact with it).
"""
from __future__ import annotations

import torch

from bertqa.errors import TargetUnavailable
from bertqa.quant.node_record import LinearWeights, RunStats


class LinearBackend:
    """Base class. Subclasses set `name` and override prepare/run (and available/supports)."""

    name = "?"
    precisions = ("fp", "int")
    input_dtypes = (torch.float32,)     # x dtypes `run` takes; others arrive as fp32
    # True: `run` takes input_scale=s ([K], or None) and computes the layer on x * s (the
    # smoothing multiply, one fp32 rounding) itself, bit for bit as if handed x * s; the node
    # then passes its scale with every call instead of multiplying. False: the node multiplies.
    fuses_input_scale = False

    def available(self) -> tuple[bool, str]:
        return True, "always available"

    def supports(self, m: int, k: int, n: int) -> bool:
        return True

    def configure(self, **options) -> "LinearBackend":
        """The backend set up with target options (e.g. aie_device='emulator'); a backend that
        takes options returns a new object bound to them. The base takes none."""
        if options:
            raise TargetUnavailable(f"option {', '.join(options)} does not apply to backend {self.name!r}")
        return self

    def prepare(self, lw: LinearWeights):
        """Pack the weights once; returns the handle that `run` receives."""
        raise NotImplementedError

    def run(self, handle, x: torch.Tensor, stats: RunStats) -> torch.Tensor:
        """x: [M, K] contiguous, fp32 or one of input_dtypes -> y: [M, N], x's dtype.
        Adds saturations to stats.saturated (or keeps them for `flush`). A backend with
        `fuses_input_scale` also takes the keyword input_scale (see there)."""
        raise NotImplementedError

    def calibrator(self) -> "LinearBackend":
        """The backend that runs the calibration forward of int8 nodes that end on this one (with
        its `calibrate`): by default the reference (cpu-reference). One that overrides it must give
        exactly the reference's y and max |acc|, so that calibration decides the same shifts."""
        from bertqa.backends import get_backend          # the registry imports this module
        return get_backend("cpu-reference")

    def calibrate(self, handle, x: torch.Tensor,
                  input_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Calibration, for a precision 'int' handle: x: [M, K] fp32 -> (y [M, N], max |acc|), the
        int of the largest |acc| of the call's exact int32 accumulators (SPEC step 3; 0 for M = 0).
        y is SPEC steps 2-5 at the handle's current shift, then torch's GELU for lw.gelu, bit for
        bit the reference's (whatever GELU the backend applies in `run`). A backend with
        `fuses_input_scale` also takes input_scale, as in `run`. Saturations are not counted.
        Only backends that some `calibrator()` returns implement it."""
        raise NotImplementedError(f"backend {self.name!r} does not calibrate; its calibrator() does")

    def prepare_calibrated(self, lw: LinearWeights, calibration_handle):
        """prepare(lw) once calibration has set lw.shift. calibration_handle is lw's handle from
        this backend's calibrator(), not used again: a backend may take over what it packed there
        instead of packing anew (customcpu does). The base prepares anew."""
        return self.prepare(lw)

    def flush(self, items: list) -> None:
        """For [(handle, stats), ...] of this backend's layers: move counters kept on the device
        (saturations, non-finite flags) into stats, raising NonFiniteActivationError for a layer
        that saw NaN/Inf. A backend that counts on the host has nothing to do."""

    def describe(self) -> str:
        """One line for the CLI header: what runs the GEMMs."""
        return self.name
