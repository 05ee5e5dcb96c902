"""A backend added at run time with one registry call: the reference recomputed in float64, each
fp32 operation rounded back to fp32 (which for one +, *, / is exactly the fp32 result), so its
integers are the reference's. The shared parity suite's checks cover it, `--backend` runs it on a
target, `bertqa bench` times it, and a backend that rounds differently fails the same checks."""
from __future__ import annotations

import pytest
import torch

import test_backend_parity as parity
from bertqa.backends import backend_names, get_backend, register, unregister
from bertqa.backends.base import LinearBackend
from bertqa.errors import NonFiniteActivationError
from bertqa.native import apply_gelu, check_gelu_mode
from bertqa.quant.node_record import LinearWeights, RunStats

F32, F64 = torch.float32, torch.float64


def f32(t: torch.Tensor) -> torch.Tensor:
    """t rounded to fp32 and held in float64 again."""
    return t.to(F32).to(F64)


class Float64Reference(LinearBackend):
    name = "float64"
    precisions = ("int",)

    def __init__(self, gelu: str = "torch"):
        self.gelu = gelu

    def configure(self, gelu: str = "torch", **others) -> "Float64Reference":
        super().configure(**others)
        check_gelu_mode(self.name, gelu)
        return type(self)(gelu)

    def prepare(self, lw: LinearWeights) -> LinearWeights:
        return lw

    def quantize(self, x: torch.Tensor, acts: str):
        x = x.to(F64)                                                   # exact
        amax = x.abs().amax().expand(x.shape[0], 1) if acts == "tensor" else x.abs().amax(1, keepdim=True)
        zero = amax == 0
        inv = torch.where(zero, 0.0, f32(127.0 / torch.where(zero, 1.0, amax)))
        xq = self.round(f32(x * inv)).clamp(-127, 127)
        xq = torch.where(x == 0, 0.0, xq)                               # 0 * inf (a tiny amax) is 0
        sx = torch.where(zero, 1.0, f32(amax / 127.0))
        return xq, sx

    def round(self, v: torch.Tensor) -> torch.Tensor:
        return torch.round(v)                                           # half to even

    def integers(self, lw: LinearWeights, x: torch.Tensor) -> dict:
        if not torch.isfinite(x).all():
            raise NonFiniteActivationError(f"layer {lw.name}: input activations contain NaN or Inf")
        xq, sx = self.quantize(x, lw.spec.acts)
        acc = xq @ lw.wq.to(F64).T                                      # exact below 2^53
        if lw.spec.requant == "int16":
            s = lw.shift
            shifted = torch.floor((acc + (2.0 ** (s - 1) if s else 0.0)) / 2.0 ** s)
            q = shifted.clamp(-32768, 32767)
            saturated = int((q != shifted).sum())
        else:
            q, saturated = acc, 0
        mult = f32(f32(sx * lw.sw.to(F64)[None, :]) * 2.0 ** lw.shift)
        y = f32(f32(q) * mult)
        if lw.bias is not None:
            y = f32(y + lw.bias.to(F64))
        y = y.to(F32)
        return dict(xq=xq.to(torch.int8), sx=sx.to(F32), acc=acc.to(torch.int32),
                    q=q.to(torch.int32), y=apply_gelu(y, self.gelu) if lw.gelu else y,
                    saturated=saturated)

    def run(self, lw: LinearWeights, x: torch.Tensor, stats: RunStats) -> torch.Tensor:
        d = self.integers(lw, x)
        stats.saturated += d["saturated"]
        return d["y"]

    def run_debug(self, lw: LinearWeights, x: torch.Tensor) -> dict:
        return self.integers(lw, x)


class RoundsHalfUp(Float64Reference):
    """A plausible bug: activations rounded half up instead of half to even."""
    name = "float64-half-up"

    def round(self, v: torch.Tensor) -> torch.Tensor:
        return torch.floor(v + 0.5)


@pytest.fixture
def toy():
    register("float64", Float64Reference)                               # the one registry call
    yield get_backend("float64")
    unregister("float64")


def run_parity_suite(backend) -> None:
    """Every check of tests/test_backend_parity.py, on `backend`."""
    for m, k, n in parity.SHAPES:
        for weights in ("tensor", "channel"):
            for acts in ("tensor", "row"):
                for requant, shift in parity.MODES:
                    parity.test_matches_reference(backend, m, k, n, weights, acts, requant, shift)
    for acts in ("tensor", "row"):
        parity.test_saturation_counts(backend, acts)
        parity.test_tiny_scale(backend, acts)
        parity.test_zero_input(backend, acts)
        for requant, shift in (("int16", 6), ("int32", 0)):
            parity.test_gelu_fusion(backend, acts, requant, shift)
    parity.test_half_even_ties(backend)
    parity.test_no_bias(backend)
    for bad in (float("nan"), float("inf")):
        parity.test_nonfinite_raises(backend, bad, (0, 0))


def test_registered_backend_is_one_of_the_parity_suites_parameters(toy):
    assert "float64" in backend_names()
    ids = [p.id for p in parity.variant_params()]
    assert "float64" in ids
    run_parity_suite(toy)


def test_a_backend_that_rounds_differently_fails_the_suite():
    register("float64-half-up", RoundsHalfUp)
    try:
        with pytest.raises(AssertionError, match="xq differs"):
            run_parity_suite(get_backend("float64-half-up"))
    finally:
        unregister("float64-half-up")


def test_registered_backend_runs_a_whole_model_like_the_reference(toy):
    from bertqa.model.bert import BertConfig, random_model
    from bertqa.quant import QuantSpec, custom_nodes
    from bertqa.targets import prepare_target
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    ids = torch.randint(1, 60, (2, 9), generator=torch.Generator().manual_seed(0))
    inputs = ids, torch.zeros_like(ids), torch.ones_like(ids)
    spec = QuantSpec.parse("channel-row")
    got = prepare_target(random_model(config, seed=2), "customcpu", "int", spec, lambda m: m(*inputs),
                         backend="float64")
    want = prepare_target(random_model(config, seed=2), "customcpu", "int", spec, lambda m: m(*inputs),
                          backend="cpu-reference")
    assert {n.backend.name for n in custom_nodes(got.model)} == {"float64"}
    with torch.inference_mode():
        for a, b in zip(got.model(*inputs), want.model(*inputs)):
            assert torch.equal(a, b)


def test_bench_times_a_registered_backend(toy, capsys, tmp_path):
    from bertqa.cli import main
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "--config", "tiny", "--layers", "1", "--seq", "16", "--batch", "0",
                   "--repeats", "1", "--no-gemm", "--settle", "0", "--calib", "4",
                   "--engines", "torch-fp32,float64-int", "--cache-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0
    # timed in its own worker process, which registered the backend this test defines
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("float64-int "))
    median, rel, argmax = float(row[1]), float(row[-2]), row[-1]
    assert median > 0 and rel < 0.3 and argmax.endswith("%")  # its logits checked against fp32's
    assert "float64" in out.split("float64-int", 2)[-1]       # the engine names its backend
