"""The AIE device seam: what the `aie` backend asks of an NPU, and two things that answer it.

The contract is tinygrad-small. A device takes a layer's padded int8 weights once
(`copy_weights`) and, per call, padded int8 activations in and the int16 (or, for requant mode
int32, int32) results out (`gemm_requant`): int8 x int8 tile GEMMs with int32 partial sums, then
the requantization stage of docs/quantization.md, step 4. Everything else (quantizing x, dequantizing
and adding the bias) stays on the host, in the backend.

    TileEmulator  the living definition: tile by tile what the device computes, exactly.
    NPUDevice     a thin adapter over AMD's Ryzen AI runtime (the seed's `RyzenAI` module).
                  It is not exercised by any test: no machine here has an NPU (docs/aie.md).
"""
from __future__ import annotations

import glob
import importlib.util
from typing import Callable

import torch

from bertqa.quant import reference as ref

NPU_RUNTIME = "RyzenAI"                  # the seed's Python module (Ryzen AI SW, transformers)
NPU_NODES = "/dev/accel/accel*"          # the Linux amdxdna driver's device nodes
FP32_EXACT_K = (1 << 24) // (127 * 127)  # 1040: up to this K, an fp32 GEMM of int8 is exact


def probe_npu() -> tuple[bool, str]:
    """(True, what was found) where the vendor runtime is importable and an NPU node exists, else
    (False, every reason). Looks, never loads: importing the runtime may touch the driver."""
    missing = []
    if importlib.util.find_spec(NPU_RUNTIME) is None:
        missing.append(f"vendor runtime {NPU_RUNTIME!r} not importable")
    nodes = sorted(glob.glob(NPU_NODES))
    if not nodes:
        missing.append(f"no device node {NPU_NODES}")
    if missing:
        return False, "; ".join(missing)
    return True, f"{NPU_RUNTIME} runtime, {nodes[0]}"


def int8_gemm_i32_fp32(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """xq: [M, Kt] int8, wq: [N, Kt] int8 -> [M, N] int32, exact, in fp32 where that is exact.

    Every product (|p| <= 127^2) and every partial sum (|s| <= Kt * 127^2 <= 2^24 for
    Kt <= 1040) is an integer that fp32 holds exactly, so any summation order gives the exact
    sum. Wider K slices, or an fp32 matmul allowed to drop precision (TF32/bf16), go to the
    float64 reference instead."""
    if xq.shape[1] > FP32_EXACT_K or torch.get_float32_matmul_precision() != "highest":
        return ref.int8_gemm_i32(xq, wq)
    return (xq.to(torch.float32) @ wq.to(torch.float32).T).to(torch.int32)


def output_stage(acc: torch.Tensor, shift: int, requant: str) -> tuple[torch.Tensor, int]:
    """The device's last step (docs/quantization.md, step 4): int32 accumulators -> (int16 q, number
    saturated); requant 'int32' sends the accumulators themselves."""
    if requant == "int32":
        assert shift == 0, "int32 mode has no shift"
        return acc, 0
    q, saturated = ref.requantize_i16(acc, shift)
    return q.to(torch.int16), saturated


class TileEmulator:
    """The device, emulated tile by tile: bit-exact with docs/quantization.md, steps 3 and 4.

    `tile_gemm(xq [m, kt] int8, wq [n, kt] int8) -> [m, n] int32` is the per-tile kernel seam
    (the reference `int8_gemm_i32`, the fp32-exact one above, or a native kernel). By default the
    emulator hands it all M x N tiles of one K slice at once: M and N tiling change no sum, and
    the int32 partial sums across K slices are added in the order the device adds them.
    `per_tile=True` calls it on every single tile instead (slow; tests compare the two)."""

    name = "emulator"

    def __init__(self, tile_gemm: Callable = int8_gemm_i32_fp32, per_tile: bool = False):
        self.tile_gemm = tile_gemm
        self.per_tile = per_tile

    def copy_weights(self, wq_padded: torch.Tensor):
        """wq_padded: [Np, Kp] int8, already padded to the layer's tile multiples."""
        return wq_padded.contiguous()

    def gemm_requant(self, wbuf: torch.Tensor, xq_padded: torch.Tensor, tile, shift: int,
                     requant: str) -> tuple[torch.Tensor, int]:
        """xq_padded: [Mp, Kp] int8 -> (q [Mp, Np] int16, or int32 for requant 'int32';
        number of saturated elements). Padding is zeros, so it never saturates."""
        mp, kp = xq_padded.shape
        np_ = wbuf.shape[0]
        assert mp % tile.m == 0 and kp % tile.k == 0 and np_ % tile.n == 0, \
            f"[{mp}, {kp}] x [{np_}, {kp}] is not padded to tile {tile}"
        acc = torch.zeros(mp, np_, dtype=torch.int32)                 # the int32 accumulators
        for k0 in range(0, kp, tile.k):
            xs, ws = xq_padded[:, k0:k0 + tile.k], wbuf[:, k0:k0 + tile.k]
            if not self.per_tile:
                acc += self.tile_gemm(xs, ws)
                continue
            for m0 in range(0, mp, tile.m):
                for n0 in range(0, np_, tile.n):
                    acc[m0:m0 + tile.m, n0:n0 + tile.n] += self.tile_gemm(
                        xs[m0:m0 + tile.m], ws[n0:n0 + tile.n])
        return output_stage(acc, shift, requant)


class NPUDevice:
    """Thin adapter over the seed's Ryzen AI runtime (`RyzenAI.qlinear_2_a8w8acc32`).

    Untested: no NPU exists where this project's tests run. The runtime tiles the GEMM with its
    own kernels and returns int32 accumulators, so `output_stage` (the int16 requantization)
    runs here, on the host side of the runtime; a kernel with that stage on the device would
    drop that line. The runtime needs the environment the seed documents
    (DEVICE=phx|stx and its xclbin); see docs/aie.md."""

    name = "npu"

    def __init__(self):
        import RyzenAI                                    # noqa: F401 (present: probe_npu said so)
        self.runtime = RyzenAI

    def copy_weights(self, wq_padded: torch.Tensor):
        gemm = self.runtime.qlinear_2_a8w8acc32("int8", "int8", "int32")
        gemm.initialize_weights(wq_padded.T.contiguous().numpy())    # the runtime takes [K, N]
        return gemm, wq_padded.shape[0]

    def gemm_requant(self, wbuf, xq_padded: torch.Tensor, tile, shift: int, requant: str):
        import numpy as np
        gemm, np_ = wbuf
        acc = np.zeros((xq_padded.shape[0], np_), dtype=np.int32)
        gemm.execute(xq_padded.contiguous().numpy(), acc)
        return output_stage(torch.from_numpy(acc), shift, requant)

