"""Host kernels: the native AVX512-BF16 attention against an exact model of its arithmetic and
against PyTorch's fp32 SDPA, the native add+LayerNorm against PyTorch's, their edge cases, and
how targets choose them."""

import pytest
import torch
import torch.nn.functional as F

import bertqa
from bertqa import attention
from bertqa.errors import TargetUnavailable
from bertqa.model.bert import BertConfig, add_norm, random_model, sdpa_attention

needs_bf16 = pytest.mark.skipif(attention.bf16_unavailable() is not None,
                                reason=f"native bf16 attention: {attention.bf16_unavailable()}")
MASKED = torch.finfo(torch.float32).min


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(torch.float64)


def kernel_model(qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """What attention_bf16 computes, in float64: bf16 Q / sqrt(d), K, V; fp32 scores and mask;
    the unnormalized probabilities rounded to bf16; the fp32 sum of the unrounded ones."""
    b, s, h3 = qkv.shape
    d = h3 // 3 // heads
    q, k, v = qkv.view(b, s, 3, heads, d).permute(2, 0, 3, 1, 4)
    scores = (bf16(q * d ** -0.5) @ bf16(k).transpose(-1, -2)).float()
    if mask is not None:
        scores = scores + mask
    scores = scores.double()
    e = torch.exp(scores - scores.amax(-1, keepdim=True))
    ctx = (bf16(e.float()) @ bf16(v)) / e.sum(-1, keepdim=True)
    return ctx.transpose(1, 2).reshape(b, s, h3 // 3).float()


def random_case(b, s, heads, d, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, s, 3 * heads * d, generator=g) * 1.5
    mask = None
    if pad:
        keep = torch.ones(b, s)
        for i in range(1, b):                    # later rows padded at the end, as batches are
            keep[i, max(1, s - 7 * i):] = 0
        mask = ((1.0 - keep) * MASKED)[:, None, None, :]
    return qkv, mask


@needs_bf16
@pytest.mark.parametrize("b, s, heads, d", [
    (1, 384, 16, 64), (2, 128, 12, 32), (3, 65, 4, 64), (1, 1, 2, 64), (2, 63, 3, 20),
    (1, 130, 2, 80), (2, 17, 1, 128), (1, 7, 5, 1), (2, 64, 3, 32)])
def test_matches_its_arithmetic_and_fp32_sdpa(b, s, heads, d):
    qkv, mask = random_case(b, s, heads, d, seed=s + d)
    got = attention.bf16_attention(qkv, mask, heads)
    assert got.shape == (b, s, heads * d) and got.dtype == torch.float32
    model = kernel_model(qkv, mask, heads)
    # fp32 accumulation order and the kernel's exp (~2e-7) against float64
    assert torch.allclose(got, model, rtol=2e-3, atol=2e-3), float((got - model).abs().max())
    exact = sdpa_attention(qkv, mask, heads)
    err = (got - exact).abs().max() / exact.abs().max()
    assert err < 0.015, float(err)                # bf16 rounding: ~0.5 % of the largest output


@needs_bf16
def test_fully_masked_rows_average_the_values_as_sdpa_does():
    qkv, _ = random_case(2, 9, 2, 32)
    mask = torch.zeros(2, 1, 1, 9)
    mask[1] = MASKED
    got = attention.bf16_attention(qkv, mask, 2)
    exact = sdpa_attention(qkv, mask, 2)
    assert torch.allclose(got, exact, atol=0.03)
    v = qkv[1].view(9, 3, 2, 32)[:, 2].mean(0).reshape(-1)
    assert torch.allclose(got[1], v.expand(9, -1), atol=0.03)


def check_nan_propagates(attend):
    """attend(qkv, mask, heads): a NaN query spoils its own row only, a NaN key its whole head."""
    qkv, _ = random_case(1, 20, 2, 32, pad=False)
    qkv[0, 3, 5] = float("nan")                  # a query of head 0, token 3
    qkv[0, 11, 64 + 40] = float("nan")           # a key of head 1, token 11
    got = attend(qkv, None, 2)
    assert torch.isnan(got[0, 3, :32]).all() and not torch.isnan(got[0, :3, :32]).any()
    assert torch.isnan(got[0, :, 32:]).all()     # every query of head 1 sees that key


@needs_bf16
def test_nan_in_queries_or_keys_propagates():
    check_nan_propagates(attention.bf16_attention)


def check_shape_errors_are_named(kernel):
    """A native attention kernel of bertqa._native refuses bad shapes with a named error."""
    out = torch.empty(4, 64)
    with pytest.raises(ValueError, match="qkv must be"):
        kernel(torch.zeros(4, 100).numpy(), None, 1, 2, 1.0, out.numpy())
    with pytest.raises(ValueError, match="key_bias must be"):
        kernel(torch.zeros(4, 192).numpy(), torch.zeros(1, 3).numpy(), 1, 2, 1.0, out.numpy())
    with pytest.raises(ValueError, match="head size 300"):
        kernel(torch.zeros(2, 900).numpy(), None, 1, 1, 1.0, torch.empty(2, 300).numpy())


def small_model_and_batch():
    """A 2-layer random BertForQA and a batch of two, the second padded: (model, ids, mask)."""
    model = random_model(BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=256, vocab_size=500))
    ids = torch.randint(5, 500, (2, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    return model, ids, mask


@needs_bf16
def test_shape_errors_are_named():
    from bertqa import _native
    check_shape_errors_are_named(_native.attention_bf16)


@needs_bf16
def test_model_forward_with_the_kernel_is_close_to_fp32():
    model, ids, mask = small_model_and_batch()
    with torch.inference_mode():
        start, end = model(ids, None, mask)
        model.set_host_kernels(attention.bf16_attention, attention.native_add_norm)
        start_b, end_b = model(ids, None, mask)
        model.set_host_kernels()
        again, _ = model(ids, None, mask)
    assert torch.equal(again, start)
    assert not torch.equal(start_b, start)
    assert torch.allclose(start_b, start, atol=0.02) and torch.allclose(end_b, end, atol=0.02)


# -- choosing it ---------------------------------------------------------------------------------

NATIVE = f"{attention.BF16_LABEL}, {attention.NATIVE_NORM}"


def test_choose_by_target_precision_and_mode(monkeypatch):
    monkeypatch.setattr(attention, "bf16_unavailable", lambda: None)
    monkeypatch.setattr(attention, "native_unavailable", lambda: None)
    native = attention.HostKernels(attention.bf16_attention, attention.native_add_norm, NATIVE)
    pytorch = attention.HostKernels(None, None, attention.FP32_LABEL)
    assert attention.choose(None, "int", native_by_default=True) == native
    assert attention.choose("auto", "int", "cpu", True) == native
    for precision, native_targets in (("fp", False), ("int", False), ("fp", True)):
        assert attention.choose("auto", precision, native_by_default=native_targets) == pytorch
    assert attention.choose("fp32", "int", native_by_default=True) == pytorch
    assert attention.choose("bf16", "fp") == native
    assert attention.choose("auto", "int", device="cuda") == pytorch
    with pytest.raises(TargetUnavailable, match="model runs on cuda"):
        attention.choose("bf16", "int", device="cuda")
    with pytest.raises(TargetUnavailable, match="unknown attention 'int8'"):
        attention.choose("int8", "int", native_by_default=True)


def test_without_the_kernels_auto_falls_back_and_bf16_says_why(monkeypatch):
    monkeypatch.setattr(attention, "bf16_unavailable", lambda: "this CPU lacks AVX512-BF16")
    monkeypatch.setattr(attention, "native_unavailable", lambda: None)
    monkeypatch.setattr(attention, "fp32_native_unavailable", lambda: None)
    fp32_native = attention.choose("auto", "int", native_by_default=True)
    assert fp32_native == attention.HostKernels(
        attention.fp32_native_attention, attention.native_add_norm,
        f"{attention.FP32_NATIVE_LABEL}, {attention.NATIVE_NORM}")
    assert fp32_native.whole_layer
    assert attention.choose("fp32-native", "fp") == fp32_native
    monkeypatch.setattr(attention, "fp32_native_unavailable", lambda: "this CPU lacks AVX2 and FMA")
    sdpa = attention.choose("auto", "int", native_by_default=True)
    assert sdpa == attention.HostKernels(
        None, attention.native_add_norm, f"{attention.FP32_LABEL}, {attention.NATIVE_NORM}")
    assert sdpa.native and not sdpa.whole_layer
    with pytest.raises(TargetUnavailable, match="--attention fp32-native cannot run here: this CPU lacks AVX2"):
        attention.choose("fp32-native", "int", native_by_default=True)
    with pytest.raises(TargetUnavailable, match="--attention bf16 cannot run here: this CPU lacks"):
        attention.choose("bf16", "int", native_by_default=True)
    monkeypatch.setattr(attention, "native_unavailable", lambda: "native extension not built")
    assert attention.choose("auto", "int", native_by_default=True).label == attention.FP32_LABEL


@pytest.mark.parametrize("mode, probe, why", [
    ("bf16", "bf16_unavailable", "this CPU lacks AVX512-BF16"),
    ("fp32-native", "fp32_native_unavailable", "this CPU lacks AVX2 and FMA")])
def test_cli_rejects_native_attention_where_it_cannot_run(monkeypatch, capsys, mode, probe, why):
    from bertqa import cli
    monkeypatch.setattr(attention, probe, lambda: why)
    rc = cli.main(["demo", "--model", "bundled", "--attention", mode, "--questions", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and f"--attention {mode} cannot run here: {why}" in err
    assert "Traceback" not in err


@needs_bf16
def test_int8_targets_use_them_by_default_and_say_so():
    qa = bertqa.load(model="bundled", target="customcpu", precision="int", threads=1)
    assert qa.header()["attention"] == NATIVE
    layers = qa.prepared.model.layers
    assert {layer.attention.core for layer in layers} == {attention.bf16_attention}
    assert {f.add_norm for layer in layers for f in (layer.attention, layer.ffn)} == {attention.native_add_norm}
    fp = bertqa.load(model="bundled", target="customcpu", precision="fp", threads=1)
    assert fp.header()["attention"] == attention.FP32_LABEL


def test_fp32_is_pytorch_bit_for_bit(qa_fp):
    assert qa_fp.header()["attention"] == attention.FP32_LABEL
    layers = qa_fp.prepared.model.layers
    assert {layer.attention.core for layer in layers} == {sdpa_attention}
    assert {f.add_norm for layer in layers for f in (layer.attention, layer.ffn)} == {add_norm}
    qkv, mask = random_case(2, 10, 2, 16)
    q, k, v = qkv.view(2, 10, 3, 2, 16).permute(2, 0, 3, 1, 4)
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(2, 10, 32)
    assert torch.equal(sdpa_attention(qkv, mask, 2), exact)


# -- add + LayerNorm -----------------------------------------------------------------------------

needs_native = pytest.mark.skipif(attention.native_unavailable() is not None,
                                  reason=f"native kernels: {attention.native_unavailable()}")


@needs_native
@pytest.mark.parametrize("shape", [(1, 384, 1024), (3, 7, 384), (5, 33), (1, 1, 1), (2, 4, 19)])
def test_add_norm_matches_pytorch(shape):
    g = torch.Generator().manual_seed(shape[-1])
    norm = torch.nn.LayerNorm(shape[-1], eps=1e-12)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[-1], generator=g))
        norm.bias.copy_(torch.randn(shape[-1], generator=g))
    x, y = torch.randn(shape, generator=g) * 4 + 1, torch.randn(shape, generator=g)
    with torch.inference_mode():
        exact = norm(x + y)
        got = attention.native_add_norm(x, y.clone(), norm)     # writes over its y
    assert got.shape == exact.shape and got.dtype == torch.float32
    assert torch.allclose(got, exact, rtol=1e-5, atol=1e-5), float((got - exact).abs().max())
    from bertqa import _native                    # the path for CPUs without AVX-512
    out = torch.empty(x.numel() // shape[-1], shape[-1])
    _native.add_layer_norm(x.reshape(out.shape).numpy(), y.reshape(out.shape).numpy(), norm.weight.detach().numpy(),
                           norm.bias.detach().numpy(), 1e-12, out.numpy(), portable=True)
    assert torch.allclose(out.view(shape), exact, rtol=1e-5, atol=1e-5)


@needs_native
def test_add_norm_shape_errors_are_named():
    from bertqa import _native
    a = torch.zeros(2, 8).numpy()
    with pytest.raises(ValueError, match="one shape"):
        _native.add_layer_norm(a, torch.zeros(2, 9).numpy(), torch.ones(8).numpy(), torch.zeros(8).numpy(), 1e-5, a)
    with pytest.raises(ValueError, match=r"gamma and beta must be \[8\]"):
        _native.add_layer_norm(a, a, torch.ones(9).numpy(), torch.zeros(8).numpy(), 1e-5, a)
