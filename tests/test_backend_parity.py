"""Every registered, available Linear backend against the reference of docs/quantization.md.

Integers (xq, sx, acc, q, saturation counts) must match bit for bit, every backend showing
them the same way (`run_debug`, declared by LinearBackend); y must be within the tolerance of
docs/quantization.md. A backend with several code paths (`variants()`, e.g. customcpu's ISA
paths) is run once per path, each forced with `set_variant`; a path this CPU lacks is skipped
with the reason. A backend registered in bertqa.backends is covered without editing this file.
"""
from __future__ import annotations

import pytest
import torch

from bertqa.backends import backend_names, load_backend
from bertqa.errors import NonFiniteActivationError, TargetUnavailable
from bertqa.quant import reference as ref
from bertqa.quant.linear import linear_weights
from bertqa.quant.node_record import RunStats
from bertqa.quant.spec import QuantSpec


def variant_params():
    """(name, variant) of every registered backend, as pytest parameters that skip with the
    reason where one cannot run here."""
    params = []
    for name in backend_names():
        try:
            backend = load_backend(name)
        except TargetUnavailable as e:
            params.append(pytest.param((name, None), id=name, marks=pytest.mark.skip(reason=str(e))))
            continue
        ok, reason = backend.available()
        if not ok:
            params.append(pytest.param((name, None), id=name,
                                       marks=pytest.mark.skip(reason=f"{name}: {reason}")))
        elif backend.variants():
            for variant, runnable, why in backend.variants():
                marks = [] if runnable else [pytest.mark.skip(reason=f"{name}:{variant}: {why}")]
                params.append(pytest.param((name, variant), id=f"{name}:{variant}", marks=marks))
        else:
            params.append(pytest.param((name, None), id=name))
    return params


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The reference's small GEMMs gain nothing from threads, and on a busy machine every
    2-thread region waits for a descheduled thread; threading is tested in test_customcpu.py."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=variant_params())
def backend(request):
    name, variant = request.param
    backend = load_backend(name)
    backend.set_variant(variant)
    yield backend
    backend.set_variant(None)


@pytest.fixture(params=["default", "native"])
def gelu_backend(request, backend):
    """The backend, and also with its native GELU (configure(gelu='native'); fused on customcpu)."""
    if request.param == "default":
        return backend
    try:
        fused = backend.configure(gelu="native")
    except TargetUnavailable:
        pytest.skip(f"{backend.name} has no native-GELU option")
    fused.set_variant(request.node.callspec.params["backend"][1])
    return fused


def make_layer(k, n, weights="tensor", acts="tensor", requant="int16", shift=7, gelu=False,
               bias=True, seed=0, name="encoder.layer.0.attention.query"):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    if weights == "channel":                       # rows of very different magnitude
        w = w * torch.logspace(-2, 1, n)[torch.randperm(n, generator=g)][:, None]
    b = torch.randn(n, generator=g) if bias else None
    spec = QuantSpec(weights=weights, acts=acts, requant=requant,
                     shift=shift if requant == "int16" else None)
    return linear_weights(w, b, spec, "int", name=name, gelu=gelu)


def make_x(m, k, seed=1, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * scale
    if m > 2:                                      # per-row scales that differ a lot
        x[1] *= 100.0
        x[2] *= 0.001
    return x


def check_layer(backend, lw, x):
    """Run `lw` on `x` with `backend` and with the reference; compare as the SPEC says."""
    y_ref, p = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, lw.spec.acts, lw.spec.requant,
                               lw.name)
    if lw.gelu:
        y_ref_gelu = torch.nn.functional.gelu(y_ref)
    handle = backend.prepare(lw)
    stats = RunStats()
    x = x.to(backend.device)                       # where the backend keeps activations
    y = backend.run(handle, x.contiguous(), stats).cpu()
    backend.flush([(handle, stats)])               # counters a device keeps until asked
    assert y.shape == y_ref.shape and y.dtype == torch.float32
    assert stats.saturated == p["saturated"], "saturation counts differ"
    d = backend.run_debug(handle, x)
    assert torch.equal(d["xq"], p["xq"]), "xq differs"
    assert torch.equal(d["sx"], p["sx"]), "sx differs"
    assert torch.equal(d["acc"], p["acc"]), "acc differs"
    assert torch.equal(d["q"], p["q"]), "q differs"
    assert d["saturated"] == p["saturated"]
    assert torch.equal(d["y"], y), "run and run_debug disagree"
    tol = ref.y_tolerance(p["q"], p["sx"], lw.sw, lw.shift, lw.bias)     # [M, N]
    if not lw.gelu:
        err = (y - y_ref).abs()
        assert (err <= tol).all(), f"y off by {float((err - tol).max()):.3g} beyond the SPEC tolerance"
    else:   # GELU'(y) is within [-0.17, 1.13]; both GELUs are fp32 approximations of erf
        err = (y - y_ref_gelu).abs()
        bound = 1.2 * tol + 1e-6 * y_ref_gelu.abs() + 1e-7
        assert (err <= bound).all(), f"gelu(y) off by {float((err - bound).max()):.3g}"
    return p


SHAPES = [(1, 1, 1), (1, 37, 50), (3, 5, 7), (9, 67, 97), (17, 256, 48), (67, 515, 200)]
MODES = [("int16", 0), ("int16", 7), ("int16", 16), ("int32", 0)]


@pytest.mark.parametrize("m,k,n", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
@pytest.mark.parametrize("weights", ["tensor", "channel"])
@pytest.mark.parametrize("acts", ["tensor", "row"])
@pytest.mark.parametrize("requant,shift", MODES, ids=[f"{r}-s{s}" for r, s in MODES])
def test_matches_reference(backend, m, k, n, weights, acts, requant, shift):
    lw = make_layer(k, n, weights, acts, requant, shift, seed=k * 31 + n)
    check_layer(backend, lw, make_x(m, k, seed=m + k))


@pytest.mark.parametrize("acts", ["tensor", "row"])
def test_saturation_counts(backend, acts):
    lw = make_layer(700, 75, acts=acts, shift=0)
    x = make_x(40, 700)
    x[5] = x[5].abs()                              # one row with very large accumulators
    p = check_layer(backend, lw, x)
    assert p["saturated"] > 0, "this case is meant to saturate"


def test_half_even_ties(backend):
    # amax = 127 makes 127/amax exactly 1, so x * inv lands on .5 ties
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.5]])
    x = torch.cat([x, -x, x * 0.5], dim=0)
    p = check_layer(backend, make_layer(10, 19, acts="row"), x)
    assert p["xq"][0].tolist() == [127, 0, 2, 2, 0, -2, -2, 126, -126, 4]


@pytest.mark.parametrize("acts", ["tensor", "row"])
def test_tiny_scale(backend, acts):
    # max|x| below 127 / FLT_MAX: 127 / amax overflows to inf (the reference: +-inf -> +-127,
    # 0 * inf -> 0); a subnormal row too
    x = torch.tensor([[1e-40, -1e-40, 0.0, 5e-41, 0.0], [1e-38, 0.0, -2e-38, 3e-39, 1e-37]])
    p = check_layer(backend, make_layer(5, 18, acts=acts), x)
    assert p["xq"][0].tolist() == [127, -127, 0, 127, 0]


@pytest.mark.parametrize("acts", ["tensor", "row"])
def test_zero_input(backend, acts):
    lw = make_layer(70, 21, acts=acts)
    p = check_layer(backend, lw, torch.zeros(5, 70))
    assert (p["sx"] == 1).all()
    x = make_x(6, 70)
    x[3] = 0.0                                     # one zero row among others
    check_layer(backend, lw, x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0), (-1, -1)])
def test_nonfinite_raises(backend, bad, where):
    lw = make_layer(37, 9, name="encoder.layer.3.output.dense")
    x = make_x(5, 37)
    x[where] = bad
    x = x.to(backend.device)
    handle, stats = backend.prepare(lw), RunStats()
    with pytest.raises(NonFiniteActivationError, match="encoder.layer.3.output.dense"):
        backend.run(handle, x, stats)
        backend.flush([(handle, stats)])


@pytest.mark.parametrize("acts", ["tensor", "row"])
@pytest.mark.parametrize("requant,shift", [("int16", 6), ("int32", 0)])
def test_gelu_fusion(gelu_backend, acts, requant, shift):
    lw = make_layer(300, 130, acts=acts, requant=requant, shift=shift, gelu=True)
    check_layer(gelu_backend, lw, make_x(19, 300))


def test_no_bias(backend):
    check_layer(backend, make_layer(64, 40, bias=False), make_x(4, 64))


def test_fp_precision(backend):
    if "fp" not in backend.precisions:
        pytest.skip(f"{backend.name} computes int8 only")
    if backend.fp_compute != "fp32":
        pytest.skip(f"{backend.name} computes precision fp in {backend.fp_compute} (its own tests)")
    g = torch.Generator().manual_seed(5)
    w, b, x = torch.randn(33, 70, generator=g), torch.randn(33, generator=g), torch.randn(6, 70, generator=g)
    for gelu in (False, True):
        lw = linear_weights(w, b, None, "fp", gelu=gelu)
        y = backend.run(backend.prepare(lw), x.to(backend.device), RunStats()).cpu()
        want = torch.nn.functional.linear(x, w, b)
        want = torch.nn.functional.gelu(want) if gelu else want
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
