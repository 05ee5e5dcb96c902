"""The gpu backend beyond the shared parity suite: its kernels in Triton's interpreter, fp16, flushing.

Where CUDA is present the Triton kernels run compiled on the GPU; elsewhere they run on CPU
tensors in Triton's interpreter (TRITON_INTERPRET=1, set before Triton is imported), which
checks the same kernel logic except the GPU's rint (the interpreter rounds with the exact
floor-based path). Tests that need a GPU (CUDA graphs, the whole model on CUDA) skip without one.
"""
import os

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")       # must precede the first Triton import

from bertqa.backends import get_backend                                   # noqa: E402
from bertqa.backends.gpu import GpuBackend                                # noqa: E402
from bertqa.errors import NonFiniteActivationError, TargetUnavailable     # noqa: E402
from bertqa.quant import QuantSpec, reference as ref                      # noqa: E402
from bertqa.quant.linear import CustomLinear, QLinear, flush_stats, linear_weights  # noqa: E402
from bertqa.quant.node_record import RunStats                             # noqa: E402

DEV = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def _kernels_or_reason():
    try:
        from bertqa.backends import gpu_kernels
    except ImportError as e:
        return None, f"triton is not installed ({e})"
    if CUDA:
        return gpu_kernels, ""
    try:                        # old Triton interpreters fail on loops with numpy >= 2.3
        gpu_kernels.amax_source(torch.ones(3, 5), "tensor", torch.zeros(1, dtype=torch.int32))
    except Exception as e:      # noqa: BLE001 - any failure means: cannot test here
        return None, f"Triton's interpreter cannot run the kernels here: {e}"
    return gpu_kernels, ""


gk, WHY = _kernels_or_reason()
needs_kernels = pytest.mark.skipif(gk is None, reason=WHY)
# What the shared suite (tests/test_backend_parity.py, through GpuBackend.run_debug) checks of an
# available gpu backend: on CUDA it covers these; without CUDA they check the kernels in Triton's
# interpreter, which that suite cannot reach (the backend is unavailable there).
interpreter_only = pytest.mark.skipif(CUDA, reason="on CUDA tests/test_backend_parity.py checks this")


def random_case(m, k, n, seed, scale=3.0, weights="channel"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen) * scale
    wq, sw = ref.quantize_weight_symmetric(torch.randn(n, k, generator=gen), weights)
    return x, wq, sw, torch.randn(n, generator=gen)


def run_kernel(x, wq, sw, b, shift, acts, requant, out_mode, fuse, gelu=False):
    counters = torch.zeros(2, dtype=torch.int32, device=DEV)
    out = gk.int8_linear(x.to(DEV), wq.to(DEV), sw.to(DEV), None if b is None else b.to(DEV),
                         shift, acts, requant, gelu, counters, out_mode, fuse)
    return out.cpu(), counters.cpu()


# -- kernels vs reference ------------------------------------------------------------------------

@interpreter_only
@needs_kernels
@pytest.mark.parametrize("acts", ["tensor", "row"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_quantize_activation_bit_exact(acts, dtype):
    x, *_ = random_case(37, 96, 1, seed=1)
    x[1] = 0                                               # a zero row: sx = 1, xq = 0
    x[0, :7] = torch.tensor([3.0, 0.5, 1.5, 2.5, -0.5, -2.5, 1e-30])
    x = x.to(dtype)
    xq, sx = gk.quantize_activation(x.to(DEV), acts, torch.zeros(1, dtype=torch.int32, device=DEV))
    xq_ref, sx_ref = ref.quantize_activation_symmetric(x.float(), acts)
    assert torch.equal(xq.cpu(), xq_ref)
    assert torch.equal(sx.cpu(), sx_ref.reshape(-1))


@interpreter_only
@needs_kernels
def test_round_half_even_on_exact_ties():
    # amax = 127 makes inv = 1, so x * inv lands exactly on every half-integer
    x = torch.arange(-127.0, 127.5, 0.5).reshape(1, -1)
    xq, _ = gk.quantize_activation(x.to(DEV), "tensor", torch.zeros(1, dtype=torch.int32, device=DEV))
    assert torch.equal(xq.cpu(), torch.round(x).to(torch.int8))   # torch.round is half-even


CASES = [  # m, k, n, shift, requant, acts, fuse
    (37, 96, 50, 7, "int16", "tensor", True),
    (37, 96, 50, 7, "int16", "row", False),
    (64, 128, 64, 0, "int32", "tensor", False),
    (5, 256, 33, 16, "int16", "row", True),
    (1, 128, 2, 3, "int16", "tensor", True),
    (70, 40, 17, 0, "int16", "tensor", True),
]


@interpreter_only
@needs_kernels
@pytest.mark.parametrize("m,k,n,shift,requant,acts,fuse", CASES)
def test_int8_linear_parity(m, k, n, shift, requant, acts, fuse):
    x, wq, sw, b = random_case(m, k, n, seed=m + k + n)
    y_ref, parts = ref.int8_linear(x, wq, sw, b, shift, acts, requant)
    acc, _ = run_kernel(x, wq, sw, b, shift, acts, requant, "acc", fuse)
    assert torch.equal(acc, parts["acc"])
    q, counters = run_kernel(x, wq, sw, b, shift, acts, requant, "q", fuse)
    assert torch.equal(q, parts["q"])
    assert counters.tolist() == [parts["saturated"], 0]
    y, _ = run_kernel(x, wq, sw, b, shift, acts, requant, "y", fuse)
    assert y.dtype == torch.float32
    assert ref.within_y_tolerance(y, y_ref, parts["q"], parts["sx"], sw, shift, b)


@interpreter_only
@needs_kernels
def test_saturations_counted_on_device():
    x, wq, sw, b = random_case(33, 128, 40, seed=5, scale=10.0)
    _, parts = ref.int8_linear(x, wq, sw, b, 1, "tensor", "int16")
    assert parts["saturated"] > 0, "the case must saturate"
    q, counters = run_kernel(x, wq, sw, b, 1, "tensor", "int16", "q", True)
    assert torch.equal(q, parts["q"]) and counters[0] == parts["saturated"]


@interpreter_only
@needs_kernels
def test_gelu_epilogue_and_no_bias():
    x, wq, sw, _ = random_case(20, 64, 24, seed=7)
    y_ref, _ = ref.int8_linear(x, wq, sw, None, 6, "tensor", "int16")
    y, _ = run_kernel(x, wq, sw, None, 6, "tensor", "int16", "y", True, gelu=True)
    torch.testing.assert_close(y, F.gelu(y_ref), rtol=1e-5, atol=1e-6)


@needs_kernels
def test_fp16_activations_round_once():
    x, wq, sw, b = random_case(24, 64, 48, seed=9)
    x16 = x.half()
    y_ref, _ = ref.int8_linear(x16.float(), wq, sw, b, 5, "row", "int16")
    y, _ = run_kernel(x16, wq, sw, b, 5, "row", "int16", "y", True)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), y_ref.half().float(), rtol=1e-3, atol=1e-4)


# -- the backend through the custom node ---------------------------------------------------------

def gpu_node(lw, backend=None):
    backend = backend or GpuBackend()
    backend.device = DEV                       # on CPU: the interpreter path, same code
    return (QLinear if lw.precision == "int" else CustomLinear)(lw, backend)


@needs_kernels
def test_node_int_matches_reference_and_flushes_lazily():
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(40, 256, generator=gen), torch.randn(40, generator=gen)
    lw = linear_weights(w, b, QuantSpec(weights="channel", acts="row", shift=0), "int", name="enc.0.up")
    node = gpu_node(lw)
    x = torch.randn(3, 11, 256, generator=gen)
    y = node(x.to(DEV))
    y_ref, parts = ref.int8_linear(x.reshape(-1, 256), lw.wq, lw.sw, b, 0, "row", "int16")
    assert y.shape == (3, 11, 40) and parts["saturated"] > 0
    assert node.stats.saturated == 0                       # still on the device
    flush_stats(node)
    assert node.stats.saturated == parts["saturated"]
    assert ref.within_y_tolerance(y.reshape(-1, 40).cpu(), y_ref, parts["q"], parts["sx"], lw.sw, 0, b)


@needs_kernels
@pytest.mark.parametrize("acts,requant,shift,gelu", [("row", "int16", 3, False), ("tensor", "int32", 0, True)])
def test_run_debug_shows_the_kernels_integers(acts, requant, shift, gelu):
    """What the shared parity suite reads of the gpu backend where CUDA is present, checked here
    in the interpreter: the integers are the reference's, y is what `run` returns."""
    gen = torch.Generator().manual_seed(11)
    w, b = torch.randn(33, 96, generator=gen), torch.randn(33, generator=gen)
    lw = linear_weights(w, b, QuantSpec(acts=acts, requant=requant, shift=shift if requant == "int16" else None),
                        "int", name="enc.1.up", gelu=gelu)
    backend = GpuBackend()
    backend.device = DEV
    handle = backend.prepare(lw)
    x = torch.randn(7, 96, generator=gen) * 4
    d = backend.run_debug(handle, x)
    _, parts = ref.int8_linear(x, lw.wq, lw.sw, b, lw.shift, acts, requant)
    for key in ("xq", "sx", "acc", "q"):
        assert torch.equal(d[key], parts[key]), key
    assert d["saturated"] == parts["saturated"]
    assert torch.equal(d["y"], backend.run(handle, x.to(DEV), RunStats()).cpu())
    assert handle.counters.tolist() == [0, 0]               # the layer's own counters untouched
    x[2, 3] = float("nan")
    with pytest.raises(NonFiniteActivationError, match="enc.1.up"):
        backend.run_debug(handle, x)


@needs_kernels
def test_node_nonfinite_raises_at_flush_with_layer_name():
    lw = linear_weights(torch.randn(8, 32), None, QuantSpec(), "int", name="enc.3.qkv", shift=4)
    node = gpu_node(lw)
    x = torch.randn(4, 32)
    x[2, 5] = float("nan")
    node(x.to(DEV))                                        # no host sync, no raise yet
    with pytest.raises(NonFiniteActivationError, match="enc.3.qkv"):
        flush_stats(node)
    flush_stats(node)                                      # the flag was consumed


def test_node_fp_runs_in_half_and_returns_input_dtype():
    if not CUDA:
        pytest.skip("no CUDA device (fp16 matmul on CPU is not what the gpu path runs)")
    gen = torch.Generator().manual_seed(4)
    w, b = torch.randn(24, 16, generator=gen), torch.randn(24, generator=gen)
    node = gpu_node(linear_weights(w, b, None, "fp", name="fc"))
    x = torch.randn(5, 16, generator=gen)
    y = node(x.to(DEV))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.cpu(), F.linear(x, w, b), rtol=2e-2, atol=2e-2)


def test_reference_node_keeps_the_input_dtype():
    lw = linear_weights(torch.randn(6, 8), None, None, "fp")
    node = CustomLinear(lw, get_backend("cpu-reference"))
    assert node(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64


# -- availability --------------------------------------------------------------------------------

def test_target_gpu_without_cuda_says_so(monkeypatch):
    from bertqa.model.bert import BertConfig, random_model
    from bertqa.targets import prepare_target
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert GpuBackend().available() == (False, "no CUDA device: torch.cuda.is_available() is False")
    model = random_model(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, vocab_size=50))
    with pytest.raises(TargetUnavailable, match="no CUDA device"):
        prepare_target(model, "gpu", "int")


# -- whole model on the GPU ----------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("precision", ["fp", "int"])
def test_graphed_model_matches_eager(precision):
    from bertqa.model.bert import BertConfig, random_model
    from bertqa.targets import prepare_target
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, vocab_size=100)
    prepared = prepare_target(random_model(config), "gpu", precision, QuantSpec(shift=8))
    ids = torch.randint(1, 100, (3, 40), device="cuda")
    types, mask = torch.zeros_like(ids), torch.ones_like(ids)
    graphed = prepared.model
    start, end = graphed(ids, types, mask)                 # captures
    start2, _ = graphed(ids, types, mask)                  # replays
    with torch.inference_mode():
        eager_start, eager_end = graphed.model(ids, types, mask)
    assert torch.equal(start, start2)
    torch.testing.assert_close(start, eager_start, rtol=0, atol=0)
    torch.testing.assert_close(end, eager_end, rtol=0, atol=0)
