"""Host-side attention for the custom CPU targets: PyTorch's fp32 SDPA or the native bf16 kernel.

The Linear layers are the custom nodes; softmax(Q K^T / sqrt(d) + mask) V between the QKV and
output Linears stays on the host CPU (on the AIE target too: the seed offloads Linears only).
On BERT-large at seq 384 that attention is about a third of an int8 forward in fp32, so the
custom targets use the native AVX512-BF16 kernel (csrc/attention_bf16.cpp) where the CPU has it:
Q, K, V and the probabilities rounded to bf16, fp32 accumulation and softmax. It is not part of
SPEC-quant; README gives its EM/F1 next to fp32 attention's.

Modes: 'fp32' PyTorch SDPA; 'bf16' the native kernel (an error where it cannot run); 'auto'
bf16 for --precision int on customcpu and aie where available, else fp32.
"""
from __future__ import annotations

import torch

from bertqa.errors import TargetUnavailable

MODES = ("auto", "fp32", "bf16")
AUTO_TARGETS = ("customcpu", "aie")
FP32_LABEL = "fp32 (PyTorch SDPA)"
BF16_LABEL = "bf16 (native AVX512-BF16 kernel)"


def bf16_unavailable() -> str | None:
    """Why the native bf16 attention cannot run here, or None."""
    try:
        from bertqa import _native
    except ImportError as e:
        return f"native extension not built ({e})"
    if not _native.attention_bf16_supported():
        return "this CPU lacks AVX512-BF16"
    return None


def bf16_attention(qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """The native kernel with SelfAttention's core signature: qkv [B, S, 3H] -> [B, S, H]."""
    from bertqa import _native
    b, s, h3 = qkv.shape
    x = qkv.reshape(b * s, h3)
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.to(torch.float32).contiguous()
    bias = None
    if mask is not None:
        bias = mask.reshape(b, s).to(torch.float32).contiguous().numpy()
    out = torch.empty(b * s, h3 // 3, dtype=torch.float32)
    _native.attention_bf16(x.numpy(), bias, b, heads, (h3 // (3 * heads)) ** -0.5, out.numpy())
    return out.view(b, s, h3 // 3).to(qkv.dtype)


def choose(mode: str | None, target: str, precision: str, device: str = "cpu"):
    """(core or None for SDPA, label) for the attention of a model on target/precision."""
    mode = mode or "auto"
    if mode not in MODES:
        raise TargetUnavailable(f"unknown attention {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "fp32":
        return None, FP32_LABEL
    why = bf16_unavailable() if device == "cpu" else f"the model runs on {device}"
    if mode == "bf16":
        if why:
            raise TargetUnavailable(f"--attention bf16 cannot run here: {why}")
        return bf16_attention, BF16_LABEL
    if target in AUTO_TARGETS and precision == "int" and not why:
        return bf16_attention, BF16_LABEL
    return None, FP32_LABEL


def install(model: torch.nn.Module, mode: str | None, target: str, precision: str,
            device: str = "cpu") -> str:
    """Set the attention of `model` (a BertForQA) for target/precision; returns its label."""
    core, label = choose(mode, target, precision, device)
    setter = getattr(model, "set_attention", None)
    if setter is None:
        if core is not None:
            raise TargetUnavailable(f"{type(model).__name__} has no replaceable attention")
        return FP32_LABEL
    setter(core)
    return label
