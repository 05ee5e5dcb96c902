"""The `aie` target: tile planning, the device seam, parity with the reference, the CLI.

The integers against the reference are the shared parity suite's (tests/test_backend_parity.py);
here y is compared with torch.equal, since the host side runs the reference's own dequantization.
No NPU exists here: the NPU branch is forced by patching the probe.
"""
from __future__ import annotations

import pytest
import torch

import bertqa
from bertqa import cli
from bertqa.backends import aie, aie_device
from bertqa.backends.aie import AIEBackend, Tile, TilePlan, choose_tile, open_device
from bertqa.backends.aie_device import TileEmulator, int8_gemm_i32_fp32
from bertqa.data.readers import builtin_stories
from bertqa.errors import TargetUnavailable
from bertqa.quant import QuantSpec, reference as ref
from bertqa.quant.linear import QLinear, linear_weights

SPECS = ["tensor", "channel-row", "int32", "seed-shift4"]


def random_layer(k, n, spec="tensor", seed=0, bias=True, gelu=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    b = torch.randn(n, generator=g) * 0.1 if bias else None
    spec = QuantSpec.parse(spec)
    shift = None if not spec.calibrated else 6        # a fixed, plausible calibrated shift
    return linear_weights(w, b, spec, "int", name=f"l{k}x{n}", gelu=gelu, shift=shift)


def random_x(m, k, seed=1):
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed)) * 2.0


# -- tile planning (no device) ------------------------------------------------------------------

def test_plan_numbers_hand_computed():
    # [100, 200] x [200, 300] on 32x128x128 tiles -> padded to [128, 256] x [256, 384]
    p = TilePlan(100, 200, 300, Tile(32, 128, 128))
    assert p.padded == (128, 256, 384)
    assert p.tiles == 4 * 2 * 3
    assert p.useful_macs == 100 * 200 * 300 == 6_000_000
    assert p.padded_macs == 128 * 256 * 384 == 12_582_912
    assert p.bytes_in() == 128 * 256
    assert p.bytes_out("int16") == 128 * 384 * 2
    assert p.bytes_out("int32") == 128 * 384 * 4


def test_tile_choice_per_layer():
    # MiniLM (H 384, I 1536): every K and N a multiple of 128 -> the 128 x 128 tile, no waste;
    # the seed's 2048 x 2048 tile would pad K = 384 5.3x.
    for k, n in [(384, 1152), (384, 384), (384, 1536), (1536, 384), (384, 2)]:
        assert choose_tile(k, n) == (128, 128)
    # BERT-large (H 1024, I 4096): bigger tiles that still divide the shapes
    assert choose_tile(1024, 4096) == (512, 512)
    assert choose_tile(1024, 3072) == (512, 512)
    # a catalogue of the seed's kernels only: the only choice left is the 2048-wide tile
    seed = {(2048, 2048): (1, 4, 8), (4096, 4096): (8,)}
    assert choose_tile(384, 1536, seed) == (2048, 2048)


def test_m_tile_per_call():
    assert aie.choose_m_tile(1, 384, 1152, 128, 128).tile.m == 1        # one token: 1-row tile
    assert aie.choose_m_tile(384, 384, 1152, 128, 128).tile.m == 64      # a window: big tiles
    assert aie.choose_m_tile(300, 384, 1152, 128, 128).padded[0] == 320


# -- the tile GEMM and the emulator -------------------------------------------------------------

def test_fp32_tile_gemm_exact_at_its_bound():
    k = aie_device.FP32_EXACT_K
    ones = torch.full((3, k), 127, dtype=torch.int8)
    assert torch.equal(int8_gemm_i32_fp32(ones, ones), ref.int8_gemm_i32(ones, ones))
    g = torch.Generator().manual_seed(0)
    xq = torch.randint(-127, 128, (17, k), generator=g, dtype=torch.int8)
    wq = torch.randint(-127, 128, (9, k), generator=g, dtype=torch.int8)
    assert torch.equal(int8_gemm_i32_fp32(xq, wq), ref.int8_gemm_i32(xq, wq))
    wide = torch.randint(-127, 128, (4, 2 * k), generator=g, dtype=torch.int8)   # float64 path
    assert torch.equal(int8_gemm_i32_fp32(wide, wide), ref.int8_gemm_i32(wide, wide))


@pytest.mark.parametrize("requant,shift", [("int32", 0), ("int16", 4), ("int16", 0)])
def test_emulator_per_tile_equals_reference(requant, shift):
    g = torch.Generator().manual_seed(2)
    tile = Tile(8, 128, 128)
    xq = torch.zeros(24, 256, dtype=torch.int8)
    xq[:21, :200] = torch.randint(-127, 128, (21, 200), generator=g, dtype=torch.int8)
    wq = torch.zeros(256, 256, dtype=torch.int8)
    wq[:130, :200] = torch.randint(-127, 128, (130, 200), generator=g, dtype=torch.int8)
    acc = ref.int8_gemm_i32(xq, wq)
    want = (acc, 0) if requant == "int32" else ref.requantize_i16(acc, shift)
    for emu in (TileEmulator(), TileEmulator(ref.int8_gemm_i32, per_tile=True)):
        q, sat = emu.gemm_requant(emu.copy_weights(wq), xq, tile, shift, requant)
        assert q.dtype == (torch.int32 if requant == "int32" else torch.int16)
        assert torch.equal(q.to(torch.int32), want[0]) and sat == want[1]
    if shift == 0 and requant == "int16":
        assert sat > 0                                     # the saturation path is exercised


# -- the backend vs the reference ---------------------------------------------------------------
# Integers and y within the tolerance: the shared suite, tests/test_backend_parity.py. Here what
# it does not reach: y bit-exact (the host runs the reference's own dequantization), a catalogue
# of the seed's tiles whose K slice (2048 > 1040) takes the float64 path, and zero padding.

@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("m,k,n", [(37, 200, 77), (5, 1100, 3)])
def test_y_exact_and_padding_zero(spec, m, k, n):
    lw = random_layer(k, n, spec, gelu=(n == 77))
    x = random_x(m, k)
    kernels = {(2048, 2048): (1, 4, 8)} if k == 1100 else None
    backend = AIEBackend(kernels=kernels).configure(aie_device="emulator")
    layer = backend.prepare(lw)
    assert layer.kp % layer.kt == 0 and layer.np_ % layer.nt == 0
    d = backend.run_debug(layer, x)
    y_ref, parts = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts, lw.spec.requant)
    assert torch.equal(d["y"], torch.nn.functional.gelu(y_ref) if lw.gelu else y_ref)
    assert torch.equal(d["acc"], parts["acc"]) and torch.equal(d["q"], parts["q"])
    plan = backend.plan(layer, m)
    q_p, _ = backend.tile_device.gemm_requant(layer.wbuf, aie.pad2d(d["xq"], plan.padded[0], layer.kp),
                                              plan.tile, lw.shift, lw.spec.requant)
    assert not q_p[m:].any() and not q_p[:, n:].any()


def test_layer_report_hand_computed():
    lw = random_layer(200, 300)
    backend = AIEBackend(kernels={(128, 128): (32,)}).configure(aie_device="emulator")
    node = QLinear(lw, backend)
    node(random_x(100, 200))
    node(random_x(100, 200, seed=3))
    r = backend.layer_report(node.handle, node.stats)
    assert r["tile"] == "32x128x128"
    assert r["tiles"] == 2 * 24
    assert r["useful_macs"] == 2 * 6_000_000
    assert r["wasted_macs"] == 2 * (12_582_912 - 6_000_000)
    assert r["waste"] == pytest.approx(6_582_912 / 12_582_912)
    assert r["bytes_in"] == 2 * 128 * 256 and r["bytes_out"] == 2 * 128 * 384 * 2
    assert r["weight_bytes"] == 256 * 384
    node.stats.reset()
    assert backend.layer_report(node.handle, node.stats)["tiles"] == 0


# -- device choice ------------------------------------------------------------------------------

def test_auto_without_npu_is_the_emulator(monkeypatch):
    monkeypatch.setattr(aie, "probe_npu", lambda: (False, "no device node /dev/accel/accel*"))
    device, label = open_device("auto")
    assert isinstance(device, TileEmulator)
    assert label.startswith("emulator, no NPU found (no device node")
    assert "AIE device: emulator, no NPU found" in AIEBackend().configure().describe()


def test_npu_demanded_without_one_fails_clearly(monkeypatch):
    monkeypatch.setattr(aie, "probe_npu", lambda: (False, "vendor runtime 'RyzenAI' not importable"))
    with pytest.raises(TargetUnavailable, match=r"--aie-device npu: no NPU found here \(vendor runtime"):
        AIEBackend().configure(aie_device="npu")


def test_npu_found_is_taken_by_auto(monkeypatch):
    class FakeNPU(TileEmulator):
        name = "npu"
    monkeypatch.setattr(aie, "probe_npu", lambda: (True, "RyzenAI runtime, /dev/accel/accel0"))
    monkeypatch.setattr(aie, "NPUDevice", FakeNPU)
    for choice in ("auto", "npu"):
        backend = AIEBackend().configure(aie_device=choice)
        assert isinstance(backend.tile_device, FakeNPU)
        assert "AIE device: NPU (RyzenAI runtime, /dev/accel/accel0)" in backend.describe()
    assert type(AIEBackend().configure(aie_device="emulator").tile_device) is TileEmulator


def test_cli_npu_error_here(capsys):
    if aie_device.probe_npu()[0]:
        pytest.skip("this machine has an NPU")
    rc = cli.main(["demo", "--model", "bundled", "--target", "aie", "--precision", "int",
                   "--aie-device", "npu", "--questions", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--aie-device npu: no NPU found here" in err and "Traceback" not in err


# -- end to end ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    # one thread: on a shared 2-core machine, two spinning threads cost far more than they give
    threads = torch.get_num_threads()
    kw = dict(model="bundled", precision="int", threads=1)
    yield bertqa.load(target="aie", **kw), bertqa.load(target="customcpu", **kw)
    torch.set_num_threads(threads)


def test_demo_answers_equal_customcpu_int(models):
    """The demo's 27 answers, one question at a time as `bertqa demo` asks them (history 0)."""
    aie_qa, cpu_qa = models
    assert "AIE device: emulator" in aie_qa.header()["linear backend"]
    pairs = [(q, s.context) for s in builtin_stories() for q in s.questions]
    assert len(pairs) == 27
    got = [aie_qa.answer(q, c) for q, c in pairs]
    assert got == [cpu_qa.answer(q, c) for q, c in pairs]
    assert sum(bool(a.text) for a in got) == 27


def test_cli_header_says_emulator(models, monkeypatch, capsys):
    seen = {}

    def load(**kwargs):                     # reuse the fixture's model: no second calibration
        seen.update(kwargs)
        return models[0]
    monkeypatch.setattr(bertqa, "load", load)
    rc = cli.main(["--model", "bundled", "--target", "aie", "--precision", "int", "--questions", "1",
                   "--stats"])
    out = capsys.readouterr().out
    assert rc == 0 and seen["target"] == "aie" and seen["aie_device"] is None
    assert "linear backend:  aie int8 tile GEMMs; AIE device: emulator" in out
    assert "32x128x128" in out or "64x128x128" in out                # the --stats device report
