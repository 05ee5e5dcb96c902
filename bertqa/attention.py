"""Host kernels of the int8 CPU targets: attention and the residual LayerNorm around the nodes.

The Linear layers are the custom nodes; softmax(Q K^T / sqrt(d) + mask) V between the QKV and
output Linears, and LayerNorm(x + y) after the output and down projections, stay on the host CPU
(on the AIE target too: the seed offloads Linears only). On BERT-large at seq 384 PyTorch's fp32
SDPA alone is about a third of an int8 forward, so the int8 targets use native kernels
(csrc/attention_bf16.cpp, csrc/add_layer_norm.cpp) where they run:

    attention      Q, K, V and the probabilities rounded to bf16 (AVX512-BF16), fp32 accumulation
                   and softmax. Not part of docs/quantization.md; README gives its EM/F1 next to fp32's.
                   Where the CPU lacks AVX512-BF16: fp32 throughout on AVX2
                   (csrc/attention_fp32.cpp), a few fp32 ulps from PyTorch's SDPA.
    residual norm  LayerNorm(x + y) in one pass per row, fp32 (a few ulps from PyTorch's).
    GELU           the native erf GELU (~3e-7 relative), fused into customcpu's GEMM epilogue
                   and applied on the host by cpu-reference and aie (backend option gelu, which
                   a target passes along with the native kernels: Target.gelu in bertqa.targets).

Modes (--attention): 'fp32' PyTorch for both; 'bf16' both native (an error where the bf16 kernel
cannot run); 'auto' (default) native for --precision int on the targets whose row in
bertqa.targets says so (customcpu and aie) where available, else PyTorch. Every other
configuration runs PyTorch's kernels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from bertqa import native
from bertqa.errors import TargetUnavailable

MODES = ("auto", "fp32", "bf16", "fp32-native")
FP32_LABEL = "fp32 (PyTorch SDPA)"
BF16_LABEL = "bf16 (native AVX512-BF16 kernel)"
FP32_NATIVE_LABEL = "fp32 (native AVX2 kernel)"
NATIVE_NORM = "native add+LayerNorm"


def native_unavailable() -> str | None:
    """Why the native host kernels cannot run here, or None."""
    return native.unavailable()


def bf16_unavailable() -> str | None:
    """Why the native bf16 attention cannot run here, or None."""
    why = native_unavailable()
    if why is None and not native.extension().attention_bf16_supported():
        why = "this CPU lacks AVX512-BF16"
    return why


def fp32_native_unavailable() -> str | None:
    """Why the native fp32 attention cannot run here, or None."""
    why = native_unavailable()
    if why is None and not native.extension().attention_fp32_supported():
        why = "this CPU lacks AVX2 and FMA"
    return why


def _native_attention(kernel: str, qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """A native kernel with SelfAttention's core signature: qkv [B, S, 3H] -> [B, S, H]."""
    b, s, h3 = qkv.shape
    x = _fp32_rows(qkv)
    bias = None if mask is None else mask.reshape(b, s).to(torch.float32).contiguous().numpy()
    out = torch.empty(b * s, h3 // 3, dtype=torch.float32)
    getattr(native.extension(), kernel)(x.numpy(), bias, b, heads, (h3 // (3 * heads)) ** -0.5, out.numpy())
    return out.view(b, s, h3 // 3).to(qkv.dtype)


def bf16_attention(qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """The native bf16 kernel (AVX512-BF16)."""
    return _native_attention("attention_bf16", qkv, mask, heads)


def fp32_native_attention(qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """The native fp32 kernel (AVX2)."""
    return _native_attention("attention_fp32", qkv, mask, heads)


def native_add_norm(x: torch.Tensor, y: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm(x + y) in one native pass, with the model's add_norm signature. The result is
    written over y where y is a contiguous fp32 tensor (the branch's output, a temporary in
    BertForQA): a fresh [S, H] output costs about as much as the kernel saves."""
    xs, ys = _fp32_rows(x), _fp32_rows(y)
    out = ys if ys.data_ptr() == y.data_ptr() else torch.empty_like(xs)
    native.extension().add_layer_norm(xs.numpy(), ys.numpy(),
                                      norm.weight.detach().float().contiguous().numpy(),
                                      norm.bias.detach().float().contiguous().numpy(),
                                      float(norm.eps), out.numpy())
    return out.view(x.shape).to(x.dtype)


def _fp32_rows(t: torch.Tensor) -> torch.Tensor:
    """t [..., N] as a contiguous fp32 [rows, N] tensor (a view when it already is one)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.dtype == torch.float32 and t.is_contiguous() else t.to(torch.float32).contiguous()


@dataclass
class HostKernels:
    attention: Callable | None          # None: PyTorch's SDPA
    residual_norm: Callable | None      # None: add, then torch LayerNorm
    label: str

    @property
    def native(self) -> bool:
        """Whether native host kernels run (the residual norm at least)."""
        return self.residual_norm is not None

    @property
    def whole_layer(self) -> bool:
        """Whether every non-Linear kernel of a layer is native (attention and residual norm)."""
        return self.attention is not None and self.residual_norm is not None


def choose(mode: str | None, precision: str, device: str = "cpu",
           native_by_default: bool = False) -> HostKernels:
    """The host kernels of a model computing `precision` on `device` (see the module docstring);
    native_by_default: mode 'auto' runs the native kernels for --precision int where they run
    (a target's choice: bertqa.targets, Target.host_kernels)."""
    mode = mode or "auto"
    if mode not in MODES:
        raise TargetUnavailable(f"unknown attention {mode!r}; choose one of {', '.join(MODES)}")
    pytorch = HostKernels(None, None, FP32_LABEL)
    if mode == "fp32":
        return pytorch
    if device != "cpu":
        if mode == "bf16":
            raise TargetUnavailable(f"--attention bf16 cannot run here: the model runs on {device}")
        return pytorch
    bf16 = HostKernels(bf16_attention, native_add_norm, f"{BF16_LABEL}, {NATIVE_NORM}")
    fp32 = HostKernels(fp32_native_attention, native_add_norm, f"{FP32_NATIVE_LABEL}, {NATIVE_NORM}")
    for name, kernels, unavailable in (("bf16", bf16, bf16_unavailable),
                                       ("fp32-native", fp32, fp32_native_unavailable)):
        if mode == name:
            why = unavailable()
            if why:
                raise TargetUnavailable(f"--attention {name} cannot run here: {why}")
            return kernels
    if not native_by_default or precision != "int" or native_unavailable():
        return pytorch
    if not bf16_unavailable():
        return bf16
    if not fp32_native_unavailable():
        return fp32
    return HostKernels(None, native_add_norm, f"{FP32_LABEL}, {NATIVE_NORM}")


def install(model: torch.nn.Module, kernels: HostKernels) -> str:
    """Set the host kernels of `model` (a BertForQA); returns their label."""
    setter = getattr(model, "set_host_kernels", None)
    if setter is None:
        if kernels.attention or kernels.residual_norm:
            raise TargetUnavailable(f"{type(model).__name__} has no replaceable attention")
        return FP32_LABEL
    setter(kernels.attention, kernels.residual_norm)
    return kernels.label
