"""Backend 'customcpu' beyond the parity suite: ISA selection (probes patched), the named
fallbacks, threads, the fused GELU's accuracy, and the extension's contract (no torch, no copies).
The bit-exactness of every ISA path is in test_backend_parity.py."""
from __future__ import annotations

import math
import os
import time

import numpy as np

import pytest
import torch

from bertqa import native
from bertqa.backends import customcpu, load_backend
from bertqa.errors import TargetUnavailable
from bertqa.quant import reference as ref
from bertqa.quant.linear import linear_weights
from bertqa.quant.node_record import RunStats
from bertqa.quant.spec import QuantSpec

from native_support import ALL_ISAS, FEATURES, backend, built, needs_native


@pytest.fixture
def forced(request):
    yield lambda isa: backend.set_isa(isa)
    backend.set_isa(None)


def int_layer(k, n, seed=0, gelu=False, spec=None):
    g = torch.Generator().manual_seed(seed)
    return linear_weights(torch.randn(n, k, generator=g), torch.randn(n, generator=g),
                          spec or QuantSpec(shift=9), "int", name="layer", gelu=gelu)


# -- choosing the ISA path ---------------------------------------------------------------------

@pytest.mark.parametrize("features,expected", [
    ({"avx512vnni": True, "avx2": True, "scalar": True}, "avx512vnni"),
    ({"avx512vnni": False, "avx2": True, "scalar": True}, "avx2"),
    ({"avx512vnni": False, "avx2": False, "scalar": True}, "scalar"),
])
def test_best_isa_from_the_probe(monkeypatch, features, expected):
    monkeypatch.setattr(native, "cpu_features", lambda: features)
    monkeypatch.delenv(native.ISA_ENV, raising=False)
    assert native.select_isa() == expected


def test_isa_forced_by_env_and_refused_when_missing(monkeypatch):
    monkeypatch.setattr(native, "cpu_features",
                        lambda: {"avx512vnni": False, "avx2": True, "scalar": True})
    monkeypatch.setenv(native.ISA_ENV, "scalar")
    assert native.select_isa() == "scalar"
    monkeypatch.setenv(native.ISA_ENV, "avx512vnni")
    with pytest.raises(TargetUnavailable, match="avx512vnni"):
        native.select_isa()
    if built:                                      # available() says why, naming the path
        ok, reason = customcpu.CustomCPUBackend().available()
        assert not ok and "avx512vnni" in reason
    with pytest.raises(ValueError, match="unknown ISA"):
        native.select_isa("neon")


def test_not_built_is_reported_not_raised(monkeypatch):
    def missing():
        raise ImportError("No module named 'bertqa._native'")
    monkeypatch.setattr(native, "extension", missing)
    fresh = customcpu.CustomCPUBackend()
    ok, reason = fresh.available()
    assert not ok and reason.startswith("native extension not built: ")
    assert "not built" in fresh.describe()


@needs_native
def test_native_refuses_a_path_the_cpu_lacks():
    lacking = [isa for isa in native.ISA_PATHS if not FEATURES.get(isa)]
    if not lacking:
        pytest.skip("this CPU runs every path")
    lw = int_layer(8, 4)
    with pytest.raises(ValueError, match="cannot run"):
        native.extension().pack(lw.wq.numpy(), lw.sw.numpy(), None, 0, "tensor", "int16", False,
                                lacking[0])


@needs_native
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_describe_names_the_path(forced, isa):
    forced(isa)
    assert f"{isa} path" in backend.describe()
    assert backend.prepare(int_layer(8, 4)).packed.isa == isa


# -- named fallbacks ---------------------------------------------------------------------------

@needs_native
@pytest.mark.skipif(not FEATURES.get("avx512vnni"), reason="this CPU lacks avx512vnni")
def test_k_beyond_the_vnni_offset_bound_falls_back_by_name(forced):
    forced("avx512vnni")
    k = native.extension().MAX_K_AVX512VNNI + 3
    lw = int_layer(k, 3, spec=QuantSpec(requant="int32"))
    handle = backend.prepare(lw)
    assert "fallback" in handle.packed.path and handle.packed.isa != "avx512vnni"
    x = torch.randn(2, k)
    d = backend.run_debug(handle, x)
    _, p = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, 0, "tensor", "int32")
    assert torch.equal(d["acc"], p["acc"])


@needs_native
def test_k_beyond_the_spec_is_refused_when_prepared():
    k = native.extension().MAX_K + 1
    with pytest.raises(ValueError, match="overflow"):
        backend.prepare(int_layer(k, 2, spec=QuantSpec(requant="int32")))
    with pytest.raises(ValueError, match="overflow"):
        native.extension().pack(np.zeros((2, k), np.int8), np.ones(2, np.float32), None, 0,
                                "tensor", "int16", False, "scalar")


# -- threads -----------------------------------------------------------------------------------

@needs_native
@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("m,k,n", [(67, 515, 200), (1, 2048, 1100), (130, 1030, 97)])
def test_threads_do_not_change_the_result(forced, isa, m, k, n):
    forced(isa)
    lw = int_layer(k, n, spec=QuantSpec(acts="row", shift=8))
    handle = backend.prepare(lw)
    x = torch.randn(m, k)
    nat = native.extension()
    try:
        outs = []
        for threads in (1, 2):
            nat.set_threads(threads)
            outs.append(backend.run_debug(handle, x))
    finally:
        nat.set_threads(0)
    for key in ("xq", "acc", "q", "y"):
        assert torch.equal(outs[0][key], outs[1][key]), key
    _, p = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, "row", "int16")
    assert torch.equal(outs[1]["q"], p["q"])


@needs_native
def test_kernel_shares_torchs_openmp_runtime():
    torch_gomp = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    if not os.path.exists(torch_gomp):
        pytest.skip("this torch build bundles no libgomp.so.1")
    runtime = native.extension().openmp_runtime()
    assert os.path.realpath(runtime) == os.path.realpath(torch_gomp), runtime


@needs_native
def test_set_threads_sets_torch_and_kernel():
    before = torch.get_num_threads()
    try:
        native.set_threads(1)
        assert torch.get_num_threads() == 1 and native.extension().get_threads() == 1
    finally:
        native.set_threads(before)
        native.extension().set_threads(0)


# -- fused GELU accuracy -----------------------------------------------------------------------

@needs_native
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_fused_gelu_matches_erf_gelu(isa):
    # W = ones [19, 1] with per-row activation scales: every column of row m is y = x[m]
    fused = backend.configure(gelu="native")
    fused.set_isa(isa)
    assert "native GELU fused" in fused.describe()
    spec = QuantSpec(acts="row", requant="int32")
    x = torch.linspace(-14, 14, 5601).reshape(-1, 1)
    y = fused.run(fused.prepare(linear_weights(torch.ones(19, 1), None, spec, "int")), x,
                  RunStats()).double()
    g = fused.run(fused.prepare(linear_weights(torch.ones(19, 1), None, spec, "int", gelu=True)),
                  x, RunStats()).double()
    exact = y * 0.5 * (1 + torch.special.erf(y / math.sqrt(2)))
    err = (g - exact).abs()
    assert (err <= 3e-7 * y.abs() + 1e-9).all(), float((err / y.abs().clamp_min(1e-9)).max())


@needs_native
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_default_gelu_is_bit_identical_to_the_reference(forced, isa):
    """y is the reference's bit for bit, and torch's GELU after it: whole models then answer
    exactly as cpu-reference and aie do."""
    forced(isa)
    lw = int_layer(300, 130, gelu=True, spec=QuantSpec(weights="channel", acts="row", shift=7))
    x = torch.randn(19, 300)
    y_ref, _ = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, "row", "int16")
    handle = backend.prepare(lw)
    assert torch.equal(backend.run(handle, x, RunStats()), torch.nn.functional.gelu(y_ref))
    assert torch.equal(backend.run_debug(handle, x)["y"], torch.nn.functional.gelu(y_ref))


@needs_native
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_native_gelu_fused_equals_native_gelu_after_the_reference(forced, isa, monkeypatch):
    """gelu='native': the epilogue's GELU is native.native_gelu on the reference's y, bit for
    bit, so cpu-reference and aie with gelu='native' (the int8 targets' default) agree with it."""
    forced(isa)
    monkeypatch.setenv(native.ISA_ENV, isa)          # native_gelu follows the ISA path
    fused = backend.configure(gelu="native")
    fused.set_isa(isa)
    differs = False
    for m, k, n in ((19, 300, 130), (1, 37, 5), (64, 1024, 77)):
        lw = int_layer(k, n, seed=m, gelu=True, spec=QuantSpec(weights="channel", acts="row", shift=7))
        x = torch.randn(m, k) * 3
        y_ref, _ = ref.int8_linear(x, lw.wq, lw.sw, lw.bias, lw.shift, "row", "int16")
        want = native.native_gelu(y_ref.clone())
        differs |= not torch.equal(want, torch.nn.functional.gelu(y_ref))
        handle = fused.prepare(lw)
        assert torch.equal(fused.run(handle, x, RunStats()), want)
        assert torch.equal(fused.run_debug(handle, x)["y"], want)
        for other in ("cpu-reference", "aie"):
            b = load_backend(other).configure(gelu="native")
            assert torch.equal(b.run(b.prepare(lw), x, RunStats()), want), other
    assert differs or isa == "scalar"       # the vector GELUs are not torch's (scalar: std::erf)


@needs_native
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_gelu_gives_the_same_bits_however_many_vectors_it_steps_together(isa):
    """The host GELU steps 4 vectors at a time in lockstep, then one, then a masked tail (the
    fused epilogue steps a whole tile): every element gets the arithmetic of one at a time."""
    if not FEATURES.get(isa):
        pytest.skip(f"this CPU lacks {isa}")
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(1000, generator=g) * 6,
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, -20.0, 20.0, -87.0, 3e38, float("nan")])])
    whole = x.clone()
    native.extension().gelu(whole.numpy(), isa)
    for i in range(len(x)):                           # one element at a time: the tail path only
        one = x[i:i + 1].clone()
        native.extension().gelu(one.numpy(), isa)
        assert one.view(torch.int32).equal(whole[i:i + 1].view(torch.int32)), (i, float(x[i]))


def test_gelu_option_is_checked():
    with pytest.raises(TargetUnavailable, match="gelu must be one of torch, native"):
        load_backend("cpu-reference").configure(gelu="fused")


def test_configure_rejects_unknown_options():
    with pytest.raises(TargetUnavailable):
        customcpu.CustomCPUBackend().configure(gelu="tanh")
    with pytest.raises(TargetUnavailable):
        customcpu.CustomCPUBackend().configure(aie_device="npu")


# -- the extension's contract ------------------------------------------------------------------

@needs_native
def test_extension_links_no_torch():
    with open(native.extension().__file__, "rb") as f:
        image = f.read()
    assert b"libtorch" not in image and b"libc10" not in image


@needs_native
def test_no_silent_copies_of_inputs_or_outputs():
    handle = backend.prepare(int_layer(16, 8))
    x, y = np.ones((3, 16), np.float32), np.empty((3, 8), np.float32)
    with pytest.raises(TypeError):
        handle.packed.run(x.astype(np.float64), y)                  # would need a conversion
    with pytest.raises(TypeError):
        handle.packed.run(np.ones((3, 32), np.float32)[:, ::2], y)  # not contiguous
    with pytest.raises(TypeError):
        handle.packed.run(x, np.empty((8, 3), np.float32).T)        # output not contiguous
    handle.packed.run(x, y)
    assert np.isfinite(y).all()


def test_native_extension_is_built_where_ci_requires_it():
    """CI sets BERTQA_REQUIRE_NATIVE=1: there a missing extension must fail, not skip its tests."""
    import os
    from bertqa.backends import load_backend
    ok, why = load_backend("customcpu").available()
    if os.environ.get("BERTQA_REQUIRE_NATIVE") == "1":
        assert ok, why
    elif not ok:
        import pytest
        pytest.skip(f"native extension not built here: {why}")


# -- the contention guard ------------------------------------------------------------------------

@needs_native
def test_contention_guard_judges_regions_by_the_least_busy_thread():
    nat = native.extension()
    assert nat.region_contended(1e-3, 0.5e-3)            # a thread lost half the region
    assert not nat.region_contended(1e-3, 0.9e-3)        # everyone ran
    assert not nat.region_contended(1e-4, 0.0)           # too short to tell from wake-up latency


@needs_native
def test_contention_guard_episodes_grow_while_contention_lasts_and_reset_when_it_ends():
    """A short neighbour (ONNX Runtime's pool spins ~50 ms after a run) costs a short episode; a
    steady one gets episodes of 0.02, 0.04, ... up to 0.2 s; one clean region starts over."""
    nat = native.extension()
    try:
        nat.thread_guard(True, 0)
        assert nat.thread_guard()["next_episode_seconds"] == pytest.approx(0.02)
        episodes = nat.thread_guard()["serial_episodes"]
        lengths = []
        for _ in range(6):
            nat.note_region(1e-3, 0.2e-3)                  # contended
            state = nat.thread_guard()
            assert state["serial_now"] and nat.threads_now() == 1
            lengths.append(state["next_episode_seconds"])
        assert lengths == pytest.approx([0.04, 0.08, 0.16, 0.2, 0.2, 0.2])
        assert nat.thread_guard()["serial_episodes"] == episodes + 6
        nat.note_region(1e-3, 0.95e-3)                     # clean: the next episode is short again
        assert nat.thread_guard()["next_episode_seconds"] == pytest.approx(0.02)
        nat.thread_guard(True, 0)
        nat.note_region(1e-3, 0.2e-3)
        time.sleep(0.03)                                   # a 0.02 s episode is over by now
        assert not nat.thread_guard()["serial_now"]
    finally:
        nat.thread_guard(True, 0)


@needs_native
def test_contention_guard_runs_one_thread_with_the_same_results(monkeypatch):
    """While the guard holds an episode, every native kernel runs on one thread; nothing in the
    results depends on it (Linear, attention, add+LayerNorm, GELU)."""
    from bertqa import attention
    nat = native.extension()
    threads = torch.get_num_threads()
    native.set_threads(2)
    lw = int_layer(512, 1024, gelu=True, spec=QuantSpec(weights="channel", acts="row", shift=7))
    handle = backend.configure(gelu="native").prepare(lw)
    x, scale = torch.randn(192, 512), torch.rand(512) + 0.5
    qkv, norm = torch.randn(2, 64, 3 * 256), torch.nn.LayerNorm(256)

    def outputs():
        y = torch.empty(192, 1024)
        calls = handle.packed.profile(x.numpy(), y.numpy(), scale.numpy())
        host = [attention.bf16_attention(qkv, None, 4) if not attention.bf16_unavailable() else torch.zeros(1),
                attention.native_add_norm(qkv[..., :256], qkv[..., 256:512].clone(), norm),
                native.native_gelu(qkv[..., 512:].contiguous())]
        return calls["threads"], [y, *host]
    try:
        nat.thread_guard(True, 0)
        two, want = outputs()
        state = nat.thread_guard(True, 30.0)
        assert state["serial_now"] and nat.threads_now() == 1
        one, got = outputs()
        assert (two, one) == (2, 1)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        nat.thread_guard(False)                       # off: the setting applies again
        assert nat.threads_now() == 2
    finally:
        nat.thread_guard(True, 0)
        native.set_threads(threads)


def test_contention_guard_can_be_turned_off_by_environment(tmp_path):
    import subprocess
    import sys
    code = ("from bertqa import native; "
            "print(native.extension().thread_guard()['enabled'])")
    env = {**os.environ, "BERTQA_THREAD_GUARD": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if "ImportError" in out.stderr or "ModuleNotFoundError" in out.stderr:
        pytest.skip("native extension not built")
    assert out.stdout.strip() == "False", out.stderr
