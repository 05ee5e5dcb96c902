"""Activation smoothing (SmoothQuant's idea): move per-channel activation outliers into weights.

For a Linear y = x W^T + b and any positive per-input-channel vector s: y = (x / s)(W * s)^T + b.
With s_k = max|x_k|^alpha / max|W_:,k|^(1 - alpha), measured on calibration inputs, the node's
input x / s has flatter channels, so its 8-bit activation grid loses less to outlier channels,
while W * s absorbs them (weights quantize well). Every backend still computes the int8 numerics (docs/quantization.md) on
(x / s, W * s): the division is a per-channel multiply applied before step 2, by the node in
torch or, for a backend with `fuses_input_scale` (customcpu), inside its quantization pass.
In post-LayerNorm BERT the scale cannot be folded into the LayerNorm (its output is also the
residual), so it stays a multiply on the node's input.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def channel_amax(model: nn.Module, run: Callable[[nn.Module], None]) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of every nn.Linear of `model` over what `run(model)` feeds it."""
    amax: dict[str, torch.Tensor] = {}

    def recorder(name):
        def hook(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(dim=0).float()
            amax[name] = torch.maximum(amax[name], x) if name in amax else x
        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules()
               if type(m) is nn.Linear]
    try:
        with torch.inference_mode():
            run(model)
    finally:
        for h in handles:
            h.remove()
    return amax


def smoothing_scale(x_amax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """s: [K] = max|x_k|^alpha / max_n |W[n, k]|^(1 - alpha), guarded against zero channels."""
    assert 0.0 <= alpha <= 1.0, f"smoothing alpha must be in [0, 1], got {alpha}"
    w_amax = weight.detach().abs().amax(dim=0).float()
    s = x_amax.clamp(min=1e-5).pow(alpha) / w_amax.clamp(min=1e-5).pow(1.0 - alpha)
    return s.clamp(min=1e-5, max=1e5)
