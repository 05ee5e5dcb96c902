"""The contract every Linear backend implements: one class, every member declared here.

A backend knows nothing of BERT or question answering: it receives one Linear layer's weights,
already quantized by the reference (docs/quantization.md, step 1, so every backend starts from
the same integers), packs them once in `prepare`, and maps activations x: [M, K] fp32 to
y: [M, N] fp32 in `run`. `available()` says whether it can run on this machine and why not.

Core (a new backend overrides these): name, precisions, available, prepare, run, run_debug,
describe (and configure where it takes options). Optional capabilities, each with the default
that a plain CPU backend wants: input_dtypes, fuses_input_scale, device, fp_compute, emulated,
flush, finish_model, kernel_name, layer_report, variants/set_variant, and calibration
(calibrator, calibrate, prepare_calibrated). Nothing outside reads a backend member that is
not declared here.

Calibration of the int16 shifts (bertqa.quant.linear.quantize_model) runs the model once with
every node on its target's `calibrator()`, whose `calibrate` returns y and the call's max |acc|:
the reference by default, customcpu's own native kernel for customcpu (bit-exact with it).
"""
from __future__ import annotations

import torch

from bertqa.errors import TargetUnavailable
from bertqa.quant.node_record import LinearWeights, RunStats

DEBUG_KEYS = ("xq", "sx", "acc", "q", "y", "saturated")


class LinearBackend:
    """Base class. Subclasses set `name` and override prepare/run/run_debug (and available)."""

    name = "?"
    precisions = ("fp", "int")
    input_dtypes = (torch.float32,)     # x dtypes `run` takes; others arrive as fp32
    # True: `run` takes input_scale=s ([K], or None) and computes the layer on x * s (the
    # smoothing multiply, one fp32 rounding) itself, bit for bit as if handed x * s; the node
    # then passes its scale with every call instead of multiplying. False: the node multiplies.
    fuses_input_scale = False
    device = "cpu"                      # where the model's activations live (torch device type)
    fp_compute = "fp32"                 # what precision 'fp' computes in, for the header
    emulated = False                    # True where an emulator stands in for the device
    native_pool = False                 # True: 'int' runs on the native extension's own threads

    def available(self) -> tuple[bool, str]:
        return True, "always available"

    def configure(self, **options) -> "LinearBackend":
        """The backend set up with target options (e.g. aie_device='emulator', gelu='native');
        a backend that takes options returns a new object bound to them. The base takes none."""
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

    def run_debug(self, handle, x: torch.Tensor) -> dict:
        """The integers of one precision 'int' call, for the parity suite: {'xq': [M, K] int8,
        'sx': [M, 1] or [1, 1] fp32, 'acc': [M, N] int32, 'q': [M, N] int32, 'y': [M, N] fp32
        (what `run` returns), 'saturated': int}, each as the backend itself computed it
        (docs/quantization.md, steps 2-5), on the host."""
        raise NotImplementedError(f"backend {self.name!r} does not expose its integers (run_debug)")

    def flush(self, items: list) -> None:
        """For [(handle, stats), ...] of this backend's layers: move counters kept on the device
        (saturations, non-finite flags) into stats, raising NonFiniteActivationError for a layer
        that saw NaN/Inf. A backend that counts on the host has nothing to do."""

    def finish_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model once its nodes are in place (e.g. moved to the device); the base keeps it."""
        return model

    def describe(self) -> str:
        """One line for the CLI header: what runs the GEMMs."""
        return self.name

    def kernel_name(self, handle) -> str:
        """What runs one prepared layer, in words (for `bertqa structure`)."""
        return self.describe()

    def layer_report(self, handle, stats: RunStats) -> dict | None:
        """What the device did for one layer since its stats were reset (`--stats`), or None."""
        return None

    def variants(self) -> list[tuple[str, bool, str]]:
        """(variant, runnable here, reason) for each code path that `set_variant` can force (the
        parity suite runs each); [] for a backend with one path."""
        return []

    def set_variant(self, variant: str | None) -> None:
        """Force one of `variants()` for layers prepared from now on; None: the default."""
        if variant is not None:
            raise TargetUnavailable(f"backend {self.name!r} has no variant {variant!r}")

    def calibrator(self) -> "LinearBackend":
        """The backend that runs the calibration forward of int8 nodes that end on this one (with
        its `calibrate`): by default the reference (cpu-reference). One that overrides it must give
        exactly the reference's y and max |acc|, so that calibration decides the same shifts."""
        from bertqa.backends import get_backend          # the registry imports this module
        return get_backend("cpu-reference")

    def calibrate(self, handle, x: torch.Tensor,
                  input_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Calibration, for a precision 'int' handle: x: [M, K] fp32 -> (y [M, N], max |acc|), the
        int of the largest |acc| of the call's exact int32 accumulators (docs/quantization.md,
        step 3; 0 for M = 0). y is steps 2-5 at the handle's current shift, then torch's GELU
        for lw.gelu, bit for bit the reference's (whatever GELU the backend applies in `run`).
        A backend with `fuses_input_scale` also takes input_scale, as in `run`. Saturations
        are not counted.
        Only backends that some `calibrator()` returns implement it."""
        raise NotImplementedError(f"backend {self.name!r} does not calibrate; its calibrator() does")

    def prepare_calibrated(self, lw: LinearWeights, calibration_handle):
        """prepare(lw) once calibration has set lw.shift. calibration_handle is lw's handle from
        this backend's calibrator(), not used again: a backend may take over what it packed there
        instead of packing anew (customcpu does). The base prepares anew."""
        return self.prepare(lw)
