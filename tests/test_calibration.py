"""Calibrating the int16 shifts on customcpu's native kernel (CustomCPUBackend.calibrator and
calibrate, PackedLinear.calibrate): each call must give the reference's y and max |acc| exactly
-- on every ISA path this CPU runs, per-row and per-tensor scales, int16 and int32, with and
without a fused input scale -- and whole models calibrated natively must get exactly the shifts,
smoothing scales and logits of a calibration on the reference (forced here by patching
`calibrator`)."""
from __future__ import annotations

import copy
import random

import pytest
import torch

import bertqa
from bertqa import native
from bertqa.backends import customcpu, load_backend
from bertqa.errors import NonFiniteActivationError
from bertqa.model.bert import BertConfig, random_model
from bertqa.model.loading import lazy_model
from bertqa.quant import custom_nodes, quantize_model
from bertqa.quant import reference as ref
from bertqa.quant.linear import linear_weights
from bertqa.quant.node_record import RunStats
from bertqa.quant.spec import QuantSpec
from bertqa.quant.streaming import quantize_streaming

import native_support
from native_support import ALL_ISAS, FEATURES, SMALL, backend, needs_native, small_inputs

reference = load_backend("cpu-reference")
pytestmark = needs_native


def _shapes():
    """M = 1, K and N off the vector widths (16 and 48 for avx512vnni, 8 and 16 for avx2), then
    drawn ones, and one large enough for a parallel region (threads combine their peaks)."""
    rng = random.Random(7)
    fixed = [(1, 1, 1), (1, 37, 50), (1, 1030, 97), (3, 8, 7), (9, 33, 19), (8, 64, 48)]
    drawn = [(rng.randint(2, 70), rng.randint(1, 600), rng.randint(1, 130)) for _ in range(6)]
    return fixed + drawn + [(130, 1030, 97)]


SHAPES = _shapes()
# requant, shift: None is the worst-case shift a node calibrates with (QuantSpec's default)
MODES = [("int16", None), ("int16", 0), ("int16", 9), ("int32", None)]


@pytest.fixture
def forced():
    yield lambda isa: backend.set_isa(isa)
    backend.set_isa(None)


def make_layer(k, n, acts, requant, shift, gelu=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    spec = QuantSpec(weights="channel", acts=acts, requant=requant, shift=shift)
    return linear_weights(torch.randn(n, k, generator=g) * 0.05, torch.randn(n, generator=g),
                          spec, "int", name="encoder.layer.0.ffn.up", gelu=gelu)


def make_x_scale(m, k, seed=1):
    """native_support's inputs, with the scale spread these tests were written with."""
    return native_support.make_x_scale(m, k, seed, log_sd=2.0)


def reference_calibration(lw, x):
    """What calibration computed before it ran natively: the reference y, torch's GELU, and
    max |acc| of the reference's accumulators."""
    y, parts = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts, lw.spec.requant)
    acc = parts["acc"]
    return (torch.nn.functional.gelu(y) if lw.gelu else y), (int(acc.abs().max()) if acc.numel() else 0)


def check_layer(lw, x, scale):
    calibrating = backend.calibrator()
    assert calibrating.name == "customcpu" and calibrating.gelu == "torch"
    handle = calibrating.prepare(lw)
    want_y, want_peak = reference_calibration(lw, x if scale is None else x * scale)
    y, peak = calibrating.calibrate(handle, x, **({} if scale is None else {"input_scale": scale}))
    assert type(peak) is int and peak == want_peak, "max |acc| differs from the reference's"
    assert y.dtype == torch.float32 and torch.equal(y, want_y), "y differs from the reference's"
    ref_y, ref_peak = reference.calibrate(lw, x if scale is None else x * scale)
    assert ref_peak == want_peak and torch.equal(ref_y, want_y)
    return handle


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("acts", ["row", "tensor"])
@pytest.mark.parametrize("requant,shift", MODES, ids=[f"{r}-s{s}" for r, s in MODES])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "input_scale"])
def test_native_calibration_equals_the_reference(forced, isa, acts, requant, shift, scaled):
    forced(isa)
    for m, k, n in SHAPES:
        lw = make_layer(k, n, acts, requant, shift, gelu=(m + k) % 2 == 0, seed=k * 7 + n)
        x, scale = make_x_scale(m, k, seed=m * 13 + k)
        handle = check_layer(lw, x, scale if scaled else None)
        assert handle.packed.isa == isa, (m, k, n)


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("acts", ["row", "tensor"])
def test_native_calibration_with_threads(forced, isa, acts):
    """Each thread's epilogues keep their own peak; the call's is the same for 1 and 2 threads."""
    forced(isa)
    lw = make_layer(1030, 200, acts, "int16", None, seed=5)
    x, scale = make_x_scale(131, 1030, seed=6)
    x[97, 500] = 400.0                                  # one large product in a late tile
    nat = native.extension()
    try:
        for threads in (1, 2):
            nat.set_threads(threads)
            check_layer(lw, x, scale)
    finally:
        nat.set_threads(0)


@pytest.mark.parametrize("isa", ALL_ISAS)
def test_native_calibration_edge_cases(forced, isa):
    forced(isa)
    calibrating = backend.calibrator()
    lw = make_layer(40, 30, "row", "int16", None)
    handle = calibrating.prepare(lw)
    y, peak = calibrating.calibrate(handle, torch.zeros(0, 40))           # M = 0
    assert y.shape == (0, 30) and peak == 0
    y, peak = calibrating.calibrate(handle, torch.zeros(3, 40))           # x = 0: acc = 0
    assert peak == 0 and torch.equal(y, reference_calibration(lw, torch.zeros(3, 40))[0])
    x = torch.full((2, 40), 5.0)                                          # the largest |acc|
    lw = linear_weights(torch.ones(30, 40), None, QuantSpec(acts="row"), "int")
    y, peak = calibrating.calibrate(calibrating.prepare(lw), x)
    assert peak == 40 * 127 * 127 == reference_calibration(lw, x)[1]
    y, peak = calibrating.calibrate(calibrating.prepare(lw), -x)
    assert peak == 40 * 127 * 127
    x = torch.randn(4, 40)
    x[2, 7] = float("nan")
    with pytest.raises(NonFiniteActivationError, match="NaN"):
        calibrating.calibrate(handle, x)


def test_calibration_keeps_torch_gelu_with_a_native_gelu_target():
    """The int8 targets fuse the native GELU; calibration still applies torch's (as ever)."""
    native_gelu = backend.configure(gelu="native")
    calibrating = native_gelu.calibrator()
    assert calibrating.gelu == "torch" and calibrating.isa == native_gelu.isa
    lw = make_layer(72, 40, "tensor", "int16", None, gelu=True)
    x, _ = make_x_scale(5, 72)
    y, _ = calibrating.calibrate(calibrating.prepare(lw), x)
    assert torch.equal(y, reference_calibration(lw, x)[0])
    with pytest.raises(AssertionError, match="fused native GELU"):
        native_gelu.calibrate(native_gelu.prepare(lw), x)


def test_calibrate_returns_what_run_returns():
    lw = make_layer(100, 60, "row", "int16", 7, gelu=True)
    handle = backend.prepare(lw)
    x, scale = make_x_scale(9, 100)
    y, _ = backend.calibrate(handle, x, input_scale=scale)
    assert torch.equal(y, backend.run(handle, x, RunStats(), input_scale=scale))


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("gelu", ["torch", "native"])
@pytest.mark.parametrize("requant,shift", [("int16", 0), ("int16", 11), ("int32", 0)])
def test_target_takes_over_the_calibration_packing(forced, isa, gelu, requant, shift):
    """prepare_calibrated sets the calibrated shift and the target's GELU on the packed weights:
    the result runs exactly as a fresh prepare, and the calibration handle cannot run again."""
    forced(isa)
    target = backend.configure(gelu=gelu)
    x, scale = make_x_scale(11, 70, seed=3)
    for layer_gelu in (False, True):
        lw = make_layer(70, 53, "row", requant, None, gelu=layer_gelu, seed=4)
        calibrating = target.calibrator()
        handle = calibrating.prepare(lw)
        calibrating.calibrate(handle, x, input_scale=scale)
        lw.shift = shift
        taken = target.prepare_calibrated(lw, handle)
        assert handle.packed is None and taken.packed.shift == shift
        fresh = target.prepare(lw)
        assert taken.gelu_after == fresh.gelu_after
        want = target.run(fresh, x, RunStats(), input_scale=scale)
        assert torch.equal(target.run(taken, x, RunStats(), input_scale=scale), want)
    other = "avx2" if isa != "avx2" else "scalar"                  # packed for another path
    if FEATURES.get(other):
        lw = make_layer(70, 53, "row", "int16", None, seed=4)
        elsewhere = customcpu.CustomCPUBackend()
        elsewhere.set_isa(other)
        handle = elsewhere.prepare(lw)
        assert target.prepare_calibrated(lw, handle).packed.isa == isa and handle.packed is not None


def test_set_epilogue_is_checked():
    packed = backend.prepare(make_layer(16, 8, "row", "int16", 3)).packed
    with pytest.raises(ValueError, match="0..16"):
        packed.set_epilogue(17, False)
    packed = backend.prepare(make_layer(16, 8, "row", "int32", None)).packed
    with pytest.raises(ValueError, match="int32"):
        packed.set_epilogue(4, False)


def test_other_targets_calibrate_on_the_reference():
    assert reference.calibrator() is reference
    assert reference.configure(gelu="native").calibrator() is reference
    for name in ("aie", "gpu"):
        assert load_backend(name).calibrator() is reference


def test_unbuilt_extension_calibrates_on_the_reference(monkeypatch):
    def missing():
        raise ImportError("No module named 'bertqa._native'")
    monkeypatch.setattr(native, "extension", missing)
    assert customcpu.CustomCPUBackend().calibrator() is reference


# -- whole models ------------------------------------------------------------------------------



@pytest.fixture
def on_the_reference(monkeypatch):
    """Calls f() with customcpu calibrating on the reference (the old way), and returns its result."""
    def run(f):
        with monkeypatch.context() as patch:
            patch.setattr(customcpu.CustomCPUBackend, "calibrator", lambda self: reference)
            return f()
    return run


@pytest.fixture
def packs(monkeypatch):
    """Counts the native packs of customcpu (each layer's int8 weights laid out for a path)."""
    real, seen = native.extension(), []

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def pack(self, *args):
            seen.append(1)
            return real.pack(*args)
    counting = Counting()
    monkeypatch.setattr(native, "extension", lambda: counting)
    return seen


@pytest.fixture
def calibrations(monkeypatch):
    """Counts calibrate calls per backend name."""
    seen = []
    for cls in (customcpu.CustomCPUBackend, type(reference)):
        original = cls.calibrate

        def spy(self, *args, _original=original, **kwargs):
            seen.append(self.name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(cls, "calibrate", spy)
    return seen


def assert_same_nodes(native_nodes, reference_nodes):
    assert [n.lw.name for n in native_nodes] == [n.lw.name for n in reference_nodes]
    for a, b in zip(native_nodes, reference_nodes):
        assert a.lw.shift == b.lw.shift, a.lw.name
        assert (a.input_scale is None) == (b.input_scale is None), a.lw.name
        assert a.input_scale is None or torch.equal(a.input_scale, b.input_scale), a.lw.name
        assert torch.equal(a.lw.wq, b.lw.wq) and torch.equal(a.lw.sw, b.lw.sw), a.lw.name
        assert a.backend.name == b.backend.name == "customcpu" and a.max_abs_acc is None


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("spec", ["default", "weights=tensor,acts=tensor,smooth=0.5",
                                  "acts=row,requant=int32,smooth=0.3", "channel-row"])
def test_small_model_calibrates_as_on_the_reference(forced, on_the_reference, calibrations, packs,
                                                    isa, spec):
    forced(isa)
    spec = QuantSpec.parse(spec)
    model = random_model(SMALL, seed=1)
    calib = small_inputs(5)
    target = backend.configure(gelu="native")              # as the int8 target chooses it

    def prepare():
        m = copy.deepcopy(model)
        return m, quantize_model(m, "int", target, spec, lambda m: m(*calib), fuse_gelu=True)
    native_model, native_nodes = prepare()
    native_calls = len(calibrations)
    assert len(packs) == len(native_nodes)                  # calibrated or not: each layer once
    reference_model, reference_nodes = on_the_reference(prepare)
    if spec.calibrated:
        assert set(calibrations[:native_calls]) == {"customcpu"}
        assert set(calibrations[native_calls:]) == {"cpu-reference"}
        assert native_calls == len(calibrations) - native_calls == len(native_nodes)
    assert_same_nodes(native_nodes, reference_nodes)
    assert all(n.handle.packed.isa == isa for n in native_nodes)
    with torch.inference_mode():
        for seed in (5, 6):
            for a, b in zip(native_model(*small_inputs(seed)), reference_model(*small_inputs(seed))):
                assert torch.equal(a, b)


TINY_DIR_CONFIG = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random model as an fp32 checkpoint that lazy_model reads one layer at a time."""
    import json
    import shutil

    from safetensors.torch import save_file

    from bertqa.model.loading import BUNDLED_DIR, hf_state_dict
    d = tmp_path_factory.mktemp("tiny-calib")
    model = random_model(TINY_DIR_CONFIG, seed=4)
    save_file({k: v.contiguous() for k, v in hf_state_dict(model).items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({**TINY_DIR_CONFIG.__dict__, "model_type": "bert"}))
    shutil.copy(BUNDLED_DIR / "vocab.txt", d / "vocab.txt")
    return d


@pytest.mark.parametrize("spec", ["default", "channel-row"])
def test_streaming_calibrates_as_on_the_reference(tiny_dir, on_the_reference, calibrations, spec):
    spec = QuantSpec.parse(spec)
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(1, TINY_DIR_CONFIG.vocab_size, (2, 19), generator=g)
    inputs = ids, torch.zeros_like(ids), torch.ones_like(ids)
    target = backend.configure(gelu="native")

    def prepare():
        lazy, fetchers = lazy_model(tiny_dir)
        return lazy, quantize_streaming(lazy, fetchers, "int", target, spec, lambda m: m(*inputs),
                                        fuse_gelu=True)
    native_model, native_nodes = prepare()
    assert set(calibrations) == {"customcpu"}
    reference_model, reference_nodes = on_the_reference(prepare)
    assert_same_nodes(native_nodes, reference_nodes)
    with torch.inference_mode():
        for a, b in zip(native_model(*inputs), reference_model(*inputs)):
            assert torch.equal(a, b)


def test_bundled_load_calibrates_as_on_the_reference(on_the_reference, calibrations):
    """bertqa.load streams the bundled checkpoint, default spec, calibrated on the stories."""
    threads = torch.get_num_threads()
    kw = dict(model="bundled", target="customcpu", precision="int", threads=1)
    try:
        native = bertqa.load(**kw)
        assert set(calibrations) == {"customcpu"}
        by_reference = on_the_reference(lambda: bertqa.load(**kw))
    finally:
        torch.set_num_threads(threads)
    assert "cpu-reference" in calibrations
    native_nodes = custom_nodes(native.prepared.model)
    assert native.prepared.spec == QuantSpec.default() and len(native_nodes) > 0
    assert_same_nodes(native_nodes, custom_nodes(by_reference.prepared.model))
