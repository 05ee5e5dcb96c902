"""Backend 'gpu': custom linear nodes on a CUDA GPU (issue 7, `--target gpu`).

precision fp:  y = x @ W^T + b in fp16 (cuBLAS through torch), weights fp16 on the GPU.
precision int: docs/quantization.md steps 2-5 as Triton kernels (gpu_kernels.py): bit-exact xq, acc, q
               with the reference; y formed in fp32 and stored in the activation dtype
               (fp16 between layers under --target gpu: the model runs in fp16 around the nodes).

Weights move to the GPU once, in `prepare`; activations stay there between layers (the model is
moved by `finish_model`, which also captures CUDA graphs). Nothing in `run` synchronises with
the host: saturations and non-finite inputs are counted in a device tensor per layer and read
by `flush` (one synchronisation for the whole model, after a forward), which raises
NonFiniteActivationError naming the first layer that saw NaN/Inf. `RunStats.seconds` here is
host time spent launching, not device time; under CUDA graph replay the Python-side counters
(calls, elements, seconds) do not advance, the device counters do.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bertqa.backends.base import LinearBackend
from bertqa.errors import NonFiniteActivationError, TargetUnavailable
from bertqa.quant.node_record import LinearWeights, RunStats


@dataclass
class GpuLinear:
    """One prepared layer: tensors on `device`. fp: weight [N, K] act dtype; int: wq, sw, bias."""
    lw: LinearWeights
    weight: torch.Tensor | None = None
    wq: torch.Tensor | None = None
    sw: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    counters: torch.Tensor | None = None      # int32 [2]: saturated, non-finite inputs


def import_kernels():
    try:
        from bertqa.backends import gpu_kernels
    except ImportError as e:
        raise TargetUnavailable(f"--target gpu --precision int needs Triton: {e}") from e
    return gpu_kernels


class GpuBackend(LinearBackend):
    name = "gpu"
    device = "cuda"
    act_dtype = torch.float16               # activations between layers, and fp compute
    fp_compute = "fp16"
    input_dtypes = (torch.float16, torch.bfloat16, torch.float32)
    # v2 (quantize x inside the GEMM) for M <= this, else v1 (one int8 quantize pass, then a
    # pure int8 GEMM). On an H200 (docs/results/gpu-h200.txt) v1 was faster for all 4
    # BERT-large shapes at M = 384 and 12288 (v2 re-quantizes each x tile once per column of
    # output tiles, and its A operand goes through registers); the whole model was the same
    # within noise. So v1 everywhere; v2 stays selectable and tested.
    fuse_quantize_max_m = 0

    def available(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA device: torch.cuda.is_available() is False"
        return True, torch.cuda.get_device_name()

    def describe(self) -> str:
        return f"gpu ({torch.cuda.get_device_name()}): fp16 cuBLAS / int8 Triton (docs/quantization.md)"

    def prepare(self, lw: LinearWeights) -> GpuLinear:
        dev = torch.device(self.device)
        if lw.precision == "fp":
            bias = None if lw.bias is None else lw.bias.to(dev, self.act_dtype)
            return GpuLinear(lw, weight=lw.weight.to(dev, self.act_dtype), bias=bias)
        import_kernels()
        bias = None if lw.bias is None else lw.bias.to(dev, torch.float32)
        return GpuLinear(lw, wq=lw.wq.to(dev).contiguous(), sw=lw.sw.to(dev, torch.float32),
                         bias=bias, counters=torch.zeros(2, dtype=torch.int32, device=dev))

    def run(self, h: GpuLinear, x: torch.Tensor, stats: RunStats) -> torch.Tensor:
        # x: [M, K] on the GPU, fp16/bf16/fp32 contiguous -> y: [M, N], same dtype
        lw = h.lw
        assert x.device.type == torch.device(self.device).type, \
            f"layer {lw.name}: the gpu backend needs x on {self.device}, got {x.device}"
        if lw.precision == "fp":
            y = F.linear(x.to(self.act_dtype), h.weight, h.bias)
            return (F.gelu(y) if lw.gelu else y).to(x.dtype)
        kernels = import_kernels()
        return kernels.int8_linear(x, h.wq, h.sw, h.bias, lw.shift, lw.spec.acts, lw.spec.requant,
                                   lw.gelu, h.counters,
                                   fuse_quantize=x.shape[0] <= self.fuse_quantize_max_m)

    def run_debug(self, h: GpuLinear, x: torch.Tensor) -> dict:
        """The kernels' integers of one call, on the host: xq and sx from the quantize kernel,
        acc and q from the GEMM's debug outputs, y as `run` computes it (fresh counters: the
        layer's own are left alone)."""
        lw, kernels = h.lw, import_kernels()
        x = x.to(self.device).contiguous()
        dev, fuse = x.device, x.shape[0] <= self.fuse_quantize_max_m
        outs, counters = {}, {}
        for mode in ("acc", "q", "y"):
            counters[mode] = torch.zeros(2, dtype=torch.int32, device=dev)
            outs[mode] = kernels.int8_linear(x, h.wq, h.sw, h.bias, lw.shift, lw.spec.acts,
                                             lw.spec.requant, lw.gelu, counters[mode], out_mode=mode,
                                             fuse_quantize=fuse)
        xq, sx = kernels.quantize_activation(x, lw.spec.acts, torch.zeros(1, dtype=torch.int32, device=dev))
        saturated, nonfinite = counters["q"].tolist()
        if nonfinite:
            raise NonFiniteActivationError(f"layer {lw.name}: input activations contain NaN or Inf")
        return dict(xq=xq.cpu(), sx=sx.reshape(-1, 1).cpu(), acc=outs["acc"].cpu(), q=outs["q"].cpu(),
                    y=outs["y"].cpu(), saturated=saturated)

    def flush(self, items: list) -> None:
        """[(GpuLinear, RunStats)]: one stack and one copy to the host for all layers."""
        items = [(h, st) for h, st in items if h.counters is not None]
        if not items:
            return
        counters = [h.counters for h, _ in items]
        values = torch.stack(counters).tolist()                     # [layers, 2], synchronises
        torch._foreach_zero_(counters)
        bad = []
        for (h, stats), (saturated, nonfinite) in zip(items, values):
            stats.saturated += saturated
            if nonfinite:
                bad.append(h.lw.name)
        if bad:
            raise NonFiniteActivationError(
                f"layer {bad[0]}: input activations contain NaN or Inf ({len(bad)} layer(s) affected)")

    def finish_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """After the module swap: the rest of the model to the GPU in act_dtype, CUDA graphs on."""
        from bertqa.backends.cuda_graphs import GraphedModel
        model = model.to(device=self.device, dtype=self.act_dtype)
        return GraphedModel(model)
