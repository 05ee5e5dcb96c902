"""customcpu's fused smoothing multiply (fuses_input_scale): the native per-row pass computes
x * input_scale itself, and everything it produces (xq, sx, acc, q, saturations, y) must be bit
for bit what the reference computes on the torch product x * input_scale -- on every ISA path
this CPU runs, per-row and per-tensor scales, int16 and int32 modes -- and whole models must
give the logits of cpu-reference exactly."""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

import bertqa
from bertqa import native
from bertqa.backends import customcpu, load_backend
from bertqa.errors import NonFiniteActivationError
from bertqa.model.bert import random_model
from bertqa.quant import custom_nodes, quantize_model
from bertqa.quant import reference as ref
from bertqa.quant.linear import linear_weights
from bertqa.quant.node_record import RunStats
from bertqa.quant.spec import QuantSpec

from native_support import ALL_ISAS, SMALL, backend, make_x_scale, needs_native, small_inputs

pytestmark = needs_native


def _shapes():
    """M = 1 and K off the vector widths (16 lanes avx512, 8 avx2) first, then drawn ones."""
    rng = random.Random(2024)
    fixed = [(1, 1, 1), (1, 37, 50), (1, 1030, 97), (3, 8, 7), (5, 16, 48), (9, 33, 19)]
    drawn = [(rng.randint(2, 70), rng.randint(1, 600), rng.randint(1, 130)) for _ in range(6)]
    return fixed + drawn


SHAPES = _shapes()
MODES = [("int16", 0), ("int16", 6), ("int16", 16), ("int32", 0)]


@pytest.fixture
def forced():
    yield lambda isa: backend.set_isa(isa)
    backend.set_isa(None)


def make_layer(k, n, acts, requant="int16", shift=6, weights="channel", seed=0):
    g = torch.Generator().manual_seed(seed)
    spec = QuantSpec(weights=weights, acts=acts, requant=requant,
                     shift=shift if requant == "int16" else None)
    return linear_weights(torch.randn(n, k, generator=g) * 0.05, torch.randn(n, generator=g), spec,
                          "int", name="encoder.layer.1.ffn.down")


def check_fused(handle, lw, x, scale):
    """The fused call against the reference on x * scale and against the unfused native call."""
    xs = x * scale                                                   # torch: one fp32 rounding
    y_ref, p = ref.int8_linear(xs, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts, lw.spec.requant)
    d = backend.run_debug(handle, x, scale)
    unfused = backend.run_debug(handle, xs)
    stats = RunStats()
    y = backend.run(handle, x, stats, input_scale=scale)
    for key in ("xq", "sx", "acc", "q", "y"):
        want = y_ref if key == "y" else p[key]
        assert torch.equal(d[key], want), f"{key} differs from the reference on x * scale"
        assert torch.equal(d[key], unfused[key]), f"{key} differs from the unfused call"
    assert torch.equal(y, y_ref), "run differs from the reference"
    assert d["saturated"] == p["saturated"] == stats.saturated
    return p


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("acts", ["row", "tensor"])
@pytest.mark.parametrize("requant,shift", MODES, ids=[f"{r}-s{s}" for r, s in MODES])
@pytest.mark.parametrize("m,k,n", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
def test_fused_scale_is_bit_exact(forced, isa, acts, requant, shift, m, k, n):
    forced(isa)
    lw = make_layer(k, n, acts, requant, shift, seed=k * 7 + n)
    handle = backend.prepare(lw)
    assert handle.packed.isa == isa
    x, scale = make_x_scale(m, k, seed=m * 13 + k)
    check_fused(handle, lw, x, scale)


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("acts", ["row", "tensor"])
def test_fused_scale_with_threads(forced, isa, acts):
    """Large enough for a parallel region: rows split over threads, the per-tensor second pass."""
    forced(isa)
    lw = make_layer(1030, 97, acts, seed=3)
    handle = backend.prepare(lw)
    x, scale = make_x_scale(130, 1030, seed=4)
    nat = native.extension()
    try:
        for threads in (1, 2):
            nat.set_threads(threads)
            check_fused(handle, lw, x, scale)
    finally:
        nat.set_threads(0)


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("acts", ["row", "tensor"])
def test_fused_scale_tiny_products_and_ties(forced, isa, acts):
    """Products that are subnormal (127 / amax overflows to inf) and ones that land on .5 ties."""
    forced(isa)
    x = torch.tensor([[1.0, -0.5, 0.25, 2.0, 0.0], [127.0, 1.0, 3.0, -5.0, 252.0]])
    lw = make_layer(5, 18, acts)
    handle = backend.prepare(lw)
    check_fused(handle, lw, x, torch.tensor([1e-39, 1e-39, 4e-39, 2e-39, 1e-39]))
    scale = torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5])   # x[1] * s: max 127, then .5 ties
    p = check_fused(handle, lw, x, scale)
    assert p["xq"][1].tolist() == [127, 0, 2, -2, 126]


@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("acts", ["row", "tensor"])
@pytest.mark.parametrize("bad,scale_at_bad,found", [
    (float("nan"), 1.0, "NaN"), (float("inf"), 2.0, "Inf"), (float("-inf"), 0.5, "Inf"),
    (3e38, 10.0, "Inf"),                 # finite x, the product overflows: as torch's would
    (float("inf"), 0.0, "NaN"),          # inf * 0
])
def test_nonfinite_found_in_the_scaled_values(forced, isa, acts, bad, scale_at_bad, found):
    forced(isa)
    lw = make_layer(37, 9, acts)
    handle = backend.prepare(lw)
    x, scale = make_x_scale(5, 37)
    x[4, 36] = bad
    scale[36] = scale_at_bad
    with pytest.raises(NonFiniteActivationError, match=f"encoder.layer.1.ffn.down.*{found}"):
        backend.run(handle, x, RunStats(), input_scale=scale)
    with pytest.raises(NonFiniteActivationError, match=found):
        backend.run_debug(handle, x, scale)


def test_a_finite_input_made_finite_by_the_scale_is_not_an_error():
    lw = make_layer(8, 4, "row")
    x, scale = torch.ones(2, 8), torch.ones(8)
    x[1, 5], scale[5] = 3e38, 1e-3
    check_fused(backend.prepare(lw), lw, x, scale)


def test_scale_is_checked_not_converted():
    handle = backend.prepare(make_layer(16, 8, "row"))
    x, y = np.ones((3, 16), np.float32), np.empty((3, 8), np.float32)
    with pytest.raises(TypeError):
        handle.packed.run(x, y, np.ones(16, np.float64))             # would need a conversion
    with pytest.raises(TypeError):
        handle.packed.run(x, y, np.ones(32, np.float32)[::2])         # not contiguous
    with pytest.raises(ValueError, match="input_scale must be"):
        handle.packed.run(x, y, np.ones(15, np.float32))
    handle.packed.run(x, y, np.full(16, 0.5, np.float32))
    assert np.isfinite(y).all()


# -- the node ----------------------------------------------------------------------------------

def smoothed_node(k=40, n=24, acts="row"):
    from bertqa.quant.linear import QLinear
    node = QLinear(make_layer(k, n, acts), backend)
    node.input_scale = make_x_scale(1, k, seed=9)[1]
    return node


def test_node_hands_the_scale_to_the_backend_and_never_keeps_a_copy(monkeypatch):
    node = smoothed_node()
    seen = []
    run = type(backend).run

    def spy(self, handle, x, stats, input_scale=None):
        seen.append(input_scale)
        return run(self, handle, x, stats, input_scale=input_scale)
    monkeypatch.setattr(type(backend), "run", spy)
    x = make_x_scale(6, 40, seed=2)[0]
    for _ in range(2):                      # the scale replaced, then changed in place
        with torch.inference_mode():
            y = node(x.reshape(2, 3, 40))
        assert seen[-1] is node.input_scale
        want, _ = ref.int8_linear(x * node.input_scale, node.lw.wq, node.lw.sw, node.lw.bias,
                                  node.lw.shift, "row", "int16")
        assert torch.equal(y.reshape(6, -1), want)
        node.input_scale = node.input_scale * 2
        node.input_scale[0] = 7.0


def test_other_backends_still_get_the_product(monkeypatch):
    node = smoothed_node()
    node.set_backend(load_backend("cpu-reference"))
    assert not node.backend.fuses_input_scale
    seen = []
    run = type(node.backend).run

    def spy(self, handle, x, stats):
        seen.append(x)
        return run(self, handle, x, stats)
    monkeypatch.setattr(type(node.backend), "run", spy)
    x = make_x_scale(6, 40, seed=2)[0]
    node(x)
    assert torch.equal(seen[0], x * node.input_scale)


def test_calibration_sees_the_scaled_input():
    node = smoothed_node()
    node.max_abs_acc = 0                    # calibrating (natively here), recording max|acc|
    x = make_x_scale(6, 40, seed=2)[0]
    y = node(x)
    want, p = ref.int8_linear(x * node.input_scale, node.lw.wq, node.lw.sw, node.lw.bias,
                              node.lw.shift, "row", "int16")
    assert torch.equal(y, want) and node.max_abs_acc == int(p["acc"].abs().max())


def test_fp_node_multiplies_with_torch():
    from bertqa.quant.linear import CustomLinear
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(12, 40, generator=g), torch.randn(12, generator=g)
    node = CustomLinear(linear_weights(w, b, None, "fp"), backend)
    x, scale = make_x_scale(5, 40)
    node.input_scale = scale
    assert torch.equal(node(x), torch.nn.functional.linear(x * scale, w, b))


# -- whole models ------------------------------------------------------------------------------



@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("spec", ["default", "weights=tensor,acts=tensor,smooth=0.5",
                                  "acts=row,requant=int32,smooth=0.3"])
def test_small_model_logits_equal_cpu_reference(forced, isa, spec):
    """K = 40 and 72 (not multiples of the vector widths), smoothed, per-row and per-tensor."""
    forced(isa)
    spec = QuantSpec.parse(spec)
    model = random_model(SMALL, seed=1)
    calib = small_inputs(5)
    models = {}
    for name in ("customcpu", "cpu-reference"):
        models[name] = copy.deepcopy(model)
        quantize_model(models[name], "int", load_backend(name), spec, lambda m: m(*calib), fuse_gelu=True)
    nodes = custom_nodes(models["customcpu"])
    assert all(n.backend.name == "customcpu" and n.handle.packed.isa == isa for n in nodes)
    assert all(n.input_scale is not None for n in nodes)
    with torch.inference_mode():
        for seed in (6, 7):
            want = models["cpu-reference"](*small_inputs(seed))
            for a, b in zip(models["customcpu"](*small_inputs(seed)), want):
                assert torch.equal(a, b)


@pytest.fixture(scope="module")
def bundled_int():
    threads = torch.get_num_threads()
    kw = dict(model="bundled", target="customcpu", precision="int", threads=1)
    yield bertqa.load(**kw), bertqa.load(backend="cpu-reference", **kw)
    torch.set_num_threads(threads)


def bundled_logits(qa):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 30000, (2, 77), generator=g)
    types = torch.zeros_like(ids)
    types[:, 30:] = 1
    mask = torch.ones_like(ids)
    mask[1, 60:] = 0
    with torch.inference_mode():
        return qa.prepared.model(ids, types, mask)


def test_bundled_default_model_logits_equal_cpu_reference(bundled_int):
    """The default spec (smoothed) on the bundled model, prepared as `bertqa.load` does: the
    scales are set after the nodes were prepared and re-prepared, and the logits still match."""
    native, reference = bundled_int
    assert native.prepared.spec == QuantSpec.default() and native.prepared.spec.smooth is not None
    nodes = custom_nodes(native.prepared.model)
    assert all(n.backend.name == "customcpu" and n.input_scale is not None for n in nodes)
    assert all(n.backend.name == "cpu-reference" for n in custom_nodes(reference.prepared.model))
    for a, b in zip(bundled_logits(native), bundled_logits(reference)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("isa", ALL_ISAS)
def test_bundled_default_model_on_every_path(bundled_int, isa, monkeypatch):
    native_qa, reference = bundled_int
    nodes = custom_nodes(native_qa.prepared.model)
    assert nodes[0].backend.gelu == "native"              # the int8 target's host kernels
    monkeypatch.setenv(native.ISA_ENV, isa)            # the reference's native GELU follows
    fresh = customcpu.CustomCPUBackend("native")
    fresh.set_isa(isa)
    before = [n.backend for n in nodes]
    try:
        for node in nodes:
            node.set_backend(fresh)
        for a, b in zip(bundled_logits(native_qa), bundled_logits(reference)):
            assert torch.equal(a, b)
    finally:
        for node, was in zip(nodes, before):
            node.set_backend(was)
