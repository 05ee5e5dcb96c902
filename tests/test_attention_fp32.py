"""The native fp32 attention (csrc/attention_fp32.cpp, the default host attention of the int8
CPU targets where the CPU lacks AVX512-BF16): against PyTorch's SDPA, its edge cases, and
independence from the thread count."""
import pytest
import torch

from bertqa import attention, native
from bertqa.model.bert import sdpa_attention

from test_attention import (MASKED, check_nan_propagates, check_shape_errors_are_named, random_case,
                            small_model_and_batch)

needs_fp32_native = pytest.mark.skipif(
    attention.fp32_native_unavailable() is not None,
    reason=f"native fp32 attention: {attention.fp32_native_unavailable()}")
pytestmark = needs_fp32_native


@pytest.mark.parametrize("b, s, heads, d", [
    (1, 384, 16, 64), (2, 128, 12, 32), (3, 65, 4, 64), (1, 1, 2, 64), (2, 63, 3, 20),
    (1, 130, 2, 80), (2, 17, 1, 128), (1, 7, 5, 1), (2, 64, 3, 32), (1, 155, 12, 32)])
def test_matches_fp32_sdpa(b, s, heads, d):
    qkv, mask = random_case(b, s, heads, d, seed=s + d)
    got = attention.fp32_native_attention(qkv, mask, heads)
    assert got.shape == (b, s, heads * d) and got.dtype == torch.float32
    exact = sdpa_attention(qkv, mask, heads)
    # fp32 throughout: summation order and the kernel's exp (~1e-7) only (bf16's bound: 0.015)
    err = (got - exact).abs().max() / exact.abs().max()
    assert err < 5e-6, float(err)


def test_fully_masked_rows_average_the_values_as_sdpa_does():
    qkv, _ = random_case(2, 9, 2, 32)
    mask = torch.zeros(2, 1, 1, 9)
    mask[1] = MASKED
    got = attention.fp32_native_attention(qkv, mask, 2)
    assert torch.allclose(got, sdpa_attention(qkv, mask, 2), atol=1e-5)


def test_nan_in_queries_or_keys_propagates():
    check_nan_propagates(attention.fp32_native_attention)


def test_results_do_not_depend_on_the_thread_count():
    qkv, mask = random_case(3, 100, 8, 48, seed=7)
    ext = native.extension()
    try:
        outs = []
        for n in (1, 2, 3):
            ext.set_threads(n)
            outs.append(attention.fp32_native_attention(qkv, mask, 8))
    finally:
        ext.set_threads(0)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_shape_errors_are_named():
    from bertqa import _native
    check_shape_errors_are_named(_native.attention_fp32)


def test_model_forward_with_the_kernel_is_close_to_pytorchs():
    model, ids, mask = small_model_and_batch()
    with torch.inference_mode():
        start, end = model(ids, None, mask)
        model.set_host_kernels(attention.fp32_native_attention, attention.native_add_norm)
        start_n, end_n = model(ids, None, mask)
    real = mask.bool()
    assert torch.allclose(start_n[real], start[real], atol=1e-4)
    assert torch.allclose(end_n[real], end[real], atol=1e-4)
