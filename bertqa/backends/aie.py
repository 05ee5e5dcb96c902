"""Backend 'aie': int8 Linear layers (docs/quantization.md) as fixed-shape tile GEMMs on an AIE device.

The AIE kernels take fixed tile shapes (the seed's: 1/4/8 x 2048 x 2048 and 8 x 4096 x 4096,
as M x K x N). Per layer, `prepare` picks a tile K x N from the catalogue, pads the int8 weights
to its multiples and copies them to the device once; per call, `run` quantizes x on the host,
picks the tile M for this call's M, pads and sends the int8 activations, lets the device run
the int8 tile GEMMs (int32 partial sums) and requantize to int16, and dequantizes and adds the
bias on the host. The device is a seam (aie_device.py): the NPU through the vendor runtime
where there is one, the tile-exact emulator otherwise; the header says which one runs.

Tile choice. A tile costs a fixed setup plus its MACs, padding included; each layer takes the
K x N (at prepare, for a reference M of one 384-token window) and each call the M variant that
minimize   tiles * SETUP_CYCLES + padded MACs / MACS_PER_CYCLE.   Both constants are
assumptions that only rank tiles (no time is reported from them): a setup worth ~1000 cycles
stops a 1-row tile from winning a 384-row call, and padding is paid at full price, so the
seed's 2048-wide tiles, which would pad the bundled MiniLM's K = 384 5.3x, lose to 128 x 128.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bertqa.backends.aie_device import NPUDevice, TileEmulator, probe_npu
from bertqa.backends.base import LinearBackend
from bertqa.errors import TargetUnavailable
from bertqa.native import apply_gelu, check_gelu_mode
from bertqa.quant import reference as ref
from bertqa.quant.node_record import LinearWeights, RunStats

DEVICE_CHOICES = ("auto", "emulator", "npu")
# The tile kernels the device offers: (K_t, N_t) -> the M_t variants built for it. The first two
# are the seed's, sized for BERT-large (H = 1024, I = 4096); the small ones are for models like
# the bundled MiniLM (H = 384, I = 1536), all of whose K and N are multiples of 128.
TILE_KERNELS: dict[tuple[int, int], tuple[int, ...]] = {
    (2048, 2048): (1, 4, 8),
    (4096, 4096): (8,),
    (128, 128): (1, 8, 32, 64),
    (256, 256): (1, 8, 32, 64),
    (512, 512): (1, 8, 32),
}
SETUP_CYCLES = 1000          # assumed fixed cost of one tile invocation (descriptors, start)
MACS_PER_CYCLE = 256         # assumed int8 MAC rate; only the ratio to SETUP_CYCLES matters
M_REF = 384                  # rows assumed when a layer's K x N tile is chosen (one window)


def pad_to(x: int, t: int) -> int:
    return -(-x // t) * t


@dataclass(frozen=True)
class Tile:
    m: int
    k: int
    n: int

    def __str__(self) -> str:
        return f"{self.m}x{self.k}x{self.n}"


@dataclass(frozen=True)
class TilePlan:
    """One [M, K] x [K, N] GEMM cut into `tile`s: what the device does and moves for it."""
    m: int
    k: int
    n: int
    tile: Tile

    @property
    def padded(self) -> tuple[int, int, int]:
        return pad_to(self.m, self.tile.m), pad_to(self.k, self.tile.k), pad_to(self.n, self.tile.n)

    @property
    def tiles(self) -> int:
        mp, kp, np_ = self.padded
        return (mp // self.tile.m) * (kp // self.tile.k) * (np_ // self.tile.n)

    @property
    def useful_macs(self) -> int:
        return self.m * self.k * self.n

    @property
    def padded_macs(self) -> int:
        mp, kp, np_ = self.padded
        return mp * kp * np_

    def bytes_in(self) -> int:
        """int8 activations, padded, host -> device."""
        mp, kp, _ = self.padded
        return mp * kp

    def bytes_out(self, requant: str) -> int:
        """int16 results (int32 accumulators in requant mode 'int32'), device -> host."""
        mp, _, np_ = self.padded
        return mp * np_ * (2 if requant == "int16" else 4)

    def cost(self) -> float:
        return self.tiles * SETUP_CYCLES + self.padded_macs / MACS_PER_CYCLE


def choose_m_tile(m: int, k: int, n: int, kt: int, nt: int, m_variants=None) -> TilePlan:
    """The cheapest plan for this call's M among the M variants of the K x N tile."""
    m_variants = m_variants or TILE_KERNELS[(kt, nt)]
    plans = [TilePlan(m, k, n, Tile(mt, kt, nt)) for mt in m_variants]
    return min(plans, key=lambda p: (p.cost(), -p.tile.m))


def choose_tile(k: int, n: int, kernels=None, m_ref: int = M_REF) -> tuple[int, int]:
    """The K x N tile for a layer: the cheapest plan at m_ref rows; ties go to bigger tiles."""
    kernels = kernels or TILE_KERNELS
    plans = [choose_m_tile(m_ref, k, n, kt, nt, mts) for (kt, nt), mts in kernels.items()]
    best = min(plans, key=lambda p: (p.cost(), -p.tile.k * p.tile.n))
    return best.tile.k, best.tile.n


def pad2d(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    if t.shape == (rows, cols):
        return t.contiguous()
    out = t.new_zeros(rows, cols)
    out[:t.shape[0], :t.shape[1]] = t
    return out


def open_device(choice: str):
    """(device, label) for aie_device 'auto' (the NPU where one is found), 'emulator' or 'npu'."""
    if choice not in DEVICE_CHOICES:
        raise TargetUnavailable(f"--aie-device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    if choice == "emulator":
        return TileEmulator(), "emulator (requested)"
    found, why = probe_npu()
    if found:
        return NPUDevice(), f"NPU ({why})"
    if choice == "npu":
        raise TargetUnavailable(
            f"--aie-device npu: no NPU found here ({why}). Run the tile-exact emulator with "
            "--aie-device emulator (or auto); docs/aie.md says what a real NPU needs")
    return TileEmulator(), f"emulator, no NPU found ({why})"


@dataclass
class AIELayer:
    """A prepared layer: weights padded to K_t x N_t multiples and on the device."""
    lw: LinearWeights
    kt: int
    nt: int
    kp: int
    np_: int
    wbuf: object

    @property
    def weight_bytes(self) -> int:
        return self.kp * self.np_


class AIEBackend(LinearBackend):
    name = "aie"
    precisions = ("int",)

    def __init__(self, device_choice: str = "auto", kernels: dict | None = None, gelu: str = "torch"):
        self.device_choice = device_choice
        self.kernels = kernels or TILE_KERNELS
        self.gelu = gelu                # the host's GELU after dequantization: 'torch' | 'native'
        self._device = self._label = None

    def configure(self, aie_device: str = "auto", gelu: str = "torch", **others) -> "AIEBackend":
        """A backend bound to one device; opens it now, so that 'npu' fails at load time."""
        super().configure(**others)
        check_gelu_mode(self.name, gelu)
        backend = AIEBackend(aie_device, self.kernels, gelu)
        backend.tile_device                                      # noqa: B018 (opens it)
        return backend

    def available(self) -> tuple[bool, str]:
        found, why = probe_npu()
        return True, f"NPU: {why}" if found else f"tile emulator (no NPU: {why})"

    @property
    def tile_device(self):
        if self._device is None:
            self._device, self._label = open_device(self.device_choice)
        return self._device

    @property
    def emulated(self) -> bool:
        """True where the tiles run on the TileEmulator, not on an NPU."""
        return isinstance(self.tile_device, TileEmulator)

    def describe(self) -> str:
        self.tile_device                                         # noqa: B018
        gelu = "; host GELU: native" if self.gelu == "native" else ""
        return f"aie int8 tile GEMMs; AIE device: {self._label}{gelu}"

    def kernel_name(self, layer: AIELayer) -> str:
        """What runs one prepared layer, in words (for `bertqa structure`)."""
        where = "tile emulator" if self.emulated else "NPU"
        return f"int8 GEMM in {layer.kt}x{layer.nt} tiles ({where}), host quantize/dequant"

    def prepare(self, lw: LinearWeights) -> AIELayer:
        assert lw.precision == "int", f"{lw.name}: the AIE tiles compute int8 only (--precision int)"
        kt, nt = choose_tile(lw.in_features, lw.out_features, self.kernels)
        kp, np_ = pad_to(lw.in_features, kt), pad_to(lw.out_features, nt)
        wbuf = self.tile_device.copy_weights(pad2d(lw.wq, np_, kp))            # [Np, Kp] int8, once
        return AIELayer(lw, kt, nt, kp, np_, wbuf)

    def plan(self, layer: AIELayer, m: int) -> TilePlan:
        lw = layer.lw
        return choose_m_tile(m, lw.in_features, lw.out_features, layer.kt, layer.nt,
                             self.kernels[(layer.kt, layer.nt)])

    def run(self, layer: AIELayer, x: torch.Tensor, stats: RunStats) -> torch.Tensor:
        lw = layer.lw
        m, n = x.shape[0], lw.out_features
        t0 = time.perf_counter()
        ref.check_finite(x, lw.name)
        xq, sx = ref.quantize_activation_symmetric(x, lw.spec.acts)        # host: [M, K] int8
        plan = self.plan(layer, m)
        xq_p = pad2d(xq, plan.padded[0], layer.kp)                          # [Mp, Kp]
        t1 = time.perf_counter()
        q_p, saturated = self.tile_device.gemm_requant(layer.wbuf, xq_p, plan.tile, lw.shift,
                                                  lw.spec.requant)          # [Mp, Np] int16
        t2 = time.perf_counter()
        y = ref.dequantize_bias(q_p[:m, :n], sx, lw.sw, lw.shift, lw.bias)  # host: [M, N] fp32
        if lw.gelu:
            y = apply_gelu(y, self.gelu)
        t3 = time.perf_counter()
        stats.saturated += saturated
        for key, value in (("quantize", t1 - t0), ("device", t2 - t1), ("dequant", t3 - t2)):
            stats.parts[key] = stats.parts.get(key, 0.0) + value
        c = stats.counters
        for key, value in (("tiles", plan.tiles), ("useful_macs", plan.useful_macs),
                           ("padded_macs", plan.padded_macs), ("bytes_in", plan.bytes_in()),
                           ("bytes_out", plan.bytes_out(lw.spec.requant)),
                           (f"m_tile {plan.tile.m}", 1)):
            c[key] = c.get(key, 0) + value
        return y

    def run_debug(self, layer: AIELayer, x: torch.Tensor) -> dict:
        """The device's integers of one call: acc from a pass in requant mode int32 (the
        accumulators themselves), q from the layer's own mode; y is `run`'s."""
        lw = layer.lw
        m, n = x.shape[0], lw.out_features
        ref.check_finite(x, lw.name)
        xq, sx = ref.quantize_activation_symmetric(x, lw.spec.acts)
        plan = self.plan(layer, m)
        xq_p = pad2d(xq, plan.padded[0], layer.kp)
        acc_p, _ = self.tile_device.gemm_requant(layer.wbuf, xq_p, plan.tile, 0, "int32")
        q_p, saturated = self.tile_device.gemm_requant(layer.wbuf, xq_p, plan.tile, lw.shift,
                                                       lw.spec.requant)
        return dict(xq=xq, sx=sx, acc=acc_p[:m, :n].to(torch.int32), q=q_p[:m, :n].to(torch.int32),
                    y=self.run(layer, x, RunStats()), saturated=saturated)

    def layer_report(self, layer: AIELayer, stats: RunStats) -> dict:
        """What the device did for this layer since the stats were last reset."""
        c = stats.counters
        m_tiles = sorted(int(key.split()[1]) for key in c if key.startswith("m_tile "))
        useful, padded = c.get("useful_macs", 0), c.get("padded_macs", 0)
        return dict(tile=f"{','.join(map(str, m_tiles)) or '-'}x{layer.kt}x{layer.nt}",
                    tiles=c.get("tiles", 0), useful_macs=useful, wasted_macs=padded - useful,
                    waste=(padded - useful) / padded if padded else 0.0,
                    bytes_in=c.get("bytes_in", 0), bytes_out=c.get("bytes_out", 0),
                    weight_bytes=layer.weight_bytes)
