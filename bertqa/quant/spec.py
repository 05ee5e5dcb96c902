"""QuantSpec: which variant of docs/quantization.md a prepared model computes.

A QuantSpec is a small validated value. It names the granularities and the requantization mode;
the per-layer shifts themselves are found by calibration (or forced by `shift`) and live on the
prepared layers, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict

WEIGHT_GRANULARITIES = ("tensor", "channel")
ACT_GRANULARITIES = ("tensor", "row")
REQUANT_MODES = ("int16", "int32")

# Named presets for the command line (`--spec NAME`); also accepted: "key=value,key=value".
# "default" is what the int targets use when no spec is given: per-tensor activations (the seed's
# scheme, preset "tensor") lost 3.1 F1 against fp32 on the first 300 SQuAD eval questions with the
# bundled model; per-channel weights, per-row activations and smoothing lost 0.3 (README, Accuracy).
PRESETS = {
    "default": dict(weights="channel", acts="row", requant="int16", shift=None, smooth=0.5),
    "tensor": dict(weights="tensor", acts="tensor", requant="int16", shift=None),
    "int32": dict(weights="tensor", acts="tensor", requant="int32", shift=None),
    "channel-row": dict(weights="channel", acts="row", requant="int16", shift=None),
    "seed-shift4": dict(weights="tensor", acts="tensor", requant="int16", shift=4),
    "channel-row-smooth": dict(weights="channel", acts="row", requant="int16", shift=None, smooth=0.5),
}


@dataclass(frozen=True)
class QuantSpec:
    """The field defaults are the base scheme of docs/quantization.md (the seed's: per tensor, int16 calibrated);
    the int targets default to QuantSpec.default() instead.

    weights: 'tensor' | 'channel'; acts: 'tensor' | 'row'; requant: 'int16' | 'int32';
    shift: None (calibrate per layer) or a fixed right shift 0..16 for every layer (int16 only);
    smooth: None, or the migration strength alpha in [0, 1] of activation smoothing
    (bertqa.quant.smooth), a model transform applied before the int8 steps (docs/quantization.md, section 7)."""

    weights: str = "tensor"
    acts: str = "tensor"
    requant: str = "int16"
    shift: int | None = None
    smooth: float | None = None

    def __post_init__(self):
        if self.weights not in WEIGHT_GRANULARITIES:
            raise ValueError(f"QuantSpec.weights must be one of {WEIGHT_GRANULARITIES}, got {self.weights!r}")
        if self.acts not in ACT_GRANULARITIES:
            raise ValueError(f"QuantSpec.acts must be one of {ACT_GRANULARITIES}, got {self.acts!r}")
        if self.requant not in REQUANT_MODES:
            raise ValueError(f"QuantSpec.requant must be one of {REQUANT_MODES}, got {self.requant!r}")
        if self.shift is not None:
            if isinstance(self.shift, bool) or not isinstance(self.shift, int) or not 0 <= self.shift <= 16:
                raise ValueError(f"QuantSpec.shift must be None or an int in 0..16, got {self.shift!r}")
            if self.requant == "int32":
                raise ValueError("QuantSpec.shift applies to requant='int16' only (int32 keeps the accumulator)")
        if self.smooth is not None and (isinstance(self.smooth, bool) or not 0.0 <= float(self.smooth) <= 1.0):
            raise ValueError(f"QuantSpec.smooth must be None or a number in [0, 1], got {self.smooth!r}")

    @property
    def calibrated(self) -> bool:
        return self.requant == "int16" and self.shift is None

    def label(self) -> str:
        """Short human label, e.g. 'w=tensor a=tensor int16 s=calibrated'."""
        if self.requant == "int32":
            tail = "int32"
        else:
            tail = "int16 s=" + ("calibrated" if self.shift is None else str(self.shift))
        smooth = "" if self.smooth is None else f" smooth={self.smooth:g}"
        return f"w={self.weights} a={self.acts} {tail}{smooth}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def default(cls) -> "QuantSpec":
        """The spec of the int targets when none is given (PRESETS['default'])."""
        return cls(**PRESETS["default"])

    @classmethod
    def parse(cls, text: str | None) -> "QuantSpec":
        """A preset name (see PRESETS) or 'weights=channel,acts=row,requant=int16,shift=4'."""
        if text is None or text == "":
            return cls.default()
        if text in PRESETS:
            return cls(**PRESETS[text])
        fields = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in ("weights", "acts", "requant", "shift", "smooth"):
                raise ValueError(
                    f"cannot read quantization spec {text!r}: use a preset ({', '.join(PRESETS)}) "
                    "or key=value pairs with keys weights, acts, requant, shift, smooth")
            if key == "shift":
                if value in ("", "none", "None", "calibrated"):
                    fields[key] = None
                else:
                    try:
                        fields[key] = int(value)
                    except ValueError:
                        raise ValueError(f"quantization spec: shift must be an integer, got {value!r}") from None
            elif key == "smooth":
                try:
                    fields[key] = None if value in ("", "none", "None") else float(value)
                except ValueError:
                    raise ValueError(f"quantization spec: smooth must be a number, got {value!r}") from None
            else:
                fields[key] = value
        return cls(**fields)
