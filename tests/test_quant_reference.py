"""Unit tests of the int8 reference itself (docs/quantization.md) (bertqa/quant/reference.py): the oracle must be
right before the backends are compared with it."""
from __future__ import annotations

import pytest
import torch

from bertqa.errors import NonFiniteActivationError
from bertqa.quant import reference as ref


def test_activation_rounding_is_half_even():
    # amax = 127 makes 127 / amax exactly 1: x * inv is x, so .5 values are exact ties
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5, 126.5]])
    xq, sx = ref.quantize_activation_symmetric(x, "tensor")
    assert xq.tolist() == [[127, 0, 2, 2, 4, 0, -2, -2, -4, 126]]
    assert sx.item() == 1.0


def test_activation_scale_is_one_fp32_division_and_multiply():
    x = torch.tensor([[0.3, -1.7, 2.9, 0.1]])
    xq, sx = ref.quantize_activation_symmetric(x, "tensor")
    inv = torch.tensor(127.0) / torch.tensor(2.9)                   # fp32 division
    assert torch.equal(xq, torch.round(x * inv).to(torch.int8))
    assert sx.item() == (torch.tensor(2.9) / torch.tensor(127.0)).item()


def test_requantize_rounds_half_up_on_negatives():
    acc = torch.tensor([[-5, -3, -2, -1, 0, 1, 2, 3, 5]], dtype=torch.int32)
    q, saturated = ref.requantize_i16(acc, 1)      # acc / 2 = -2.5 -1.5 -1 -0.5 0 .5 1 1.5 2.5
    assert q.tolist() == [[-2, -1, -1, 0, 0, 1, 1, 2, 3]] and saturated == 0
    q, _ = ref.requantize_i16(torch.tensor([[-6, -10, -11, 6, 10, 11]], dtype=torch.int32), 2)
    assert q.tolist() == [[-1, -2, -3, 2, 3, 3]]   # -1.5 -2.5 -2.75 1.5 2.5 2.75


def test_requantize_shift_zero_and_saturation():
    acc = torch.tensor([[32767, 32768, -32768, -32769, 7]], dtype=torch.int32)
    q, saturated = ref.requantize_i16(acc, 0)
    assert q.tolist() == [[32767, 32767, -32768, -32768, 7]] and saturated == 2
    big = 32767 * 65536
    q, saturated = ref.requantize_i16(torch.tensor([[big + 32767, big + 32768]], dtype=torch.int32), 16)
    assert q.tolist() == [[32767, 32767]] and saturated == 1      # the second rounds up to 32768


def test_minus_128_is_never_produced():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        w = torch.randn(17, 33, generator=g) * float(torch.rand(1, generator=g) * 10 + 1e-3)
        for granularity in ("tensor", "channel"):
            wq, _ = ref.quantize_weight_symmetric(w, granularity)
            assert int(wq.min()) >= -127
        x = -torch.rand(5, 33, generator=g) * float(torch.rand(1, generator=g) * 1e3 + 1e-6)
        for granularity in ("tensor", "row"):
            xq, _ = ref.quantize_activation_symmetric(x, granularity)
            assert int(xq.min()) >= -127
    wq, _ = ref.quantize_weight_symmetric(torch.tensor([[-1.0, 1.0, -1.0000001]]), "tensor")
    assert wq.tolist() == [[-127, 127, -127]]


def test_zero_tensors_get_scale_one():
    xq, sx = ref.quantize_activation_symmetric(torch.zeros(3, 8), "tensor")
    assert (xq == 0).all() and (sx == 1).all()
    x = torch.ones(3, 8)
    x[1] = 0
    xq, sx = ref.quantize_activation_symmetric(x, "row")
    assert sx[1, 0] == 1.0 and sx[0, 0] == sx[2, 0] == torch.tensor(1.0) / torch.tensor(127.0)
    assert (xq[1] == 0).all() and (xq[0] == 127).all()
    wq, sw = ref.quantize_weight_symmetric(torch.zeros(4, 8), "tensor")
    assert (wq == 0).all() and (sw == 1).all()
    w = torch.ones(4, 8)
    w[2] = 0
    wq, sw = ref.quantize_weight_symmetric(w, "channel")
    assert sw[2] == 1 and (wq[2] == 0).all()


def test_fused_projection_keeps_one_scale_per_group():
    w = torch.cat([torch.full((2, 4), 1.0), torch.full((2, 4), 4.0), torch.full((2, 4), 0.5)])
    _, sw = ref.quantize_weight_symmetric(w, "tensor", groups=3)
    assert torch.allclose(sw, torch.tensor([1, 1, 4, 4, 0.5, 0.5]) / 127)


def test_gemm_is_exact_at_the_extremes():
    k = 4096
    xq = torch.full((2, k), 127, dtype=torch.int8)
    wq = torch.full((3, k), -127, dtype=torch.int8)
    acc = ref.int8_gemm_i32(xq, wq)
    assert (acc == -127 * 127 * k).all() and acc.dtype == torch.int32


def test_shift_for_max_acc():
    assert ref.shift_for_max_acc(32767, margin_bits=0) == 0
    assert ref.shift_for_max_acc(32768, margin_bits=0) == 1
    assert ref.shift_for_max_acc(65534, margin_bits=0) == 1    # (65534 + 1) >> 1 = 32767
    assert ref.shift_for_max_acc(65535, margin_bits=0) == 2    # (65535 + 1) >> 1 = 32768
    assert ref.shift_for_max_acc(10**9, margin_bits=1) == 16


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_activations_raise_with_the_layer_name(bad):
    x = torch.ones(2, 3)
    x[1, 2] = bad
    with pytest.raises(NonFiniteActivationError, match="layer qa_outputs"):
        ref.int8_linear(x, torch.ones(1, 3, dtype=torch.int8), torch.ones(1), None, 0, "tensor",
                        "int16", layer="qa_outputs")
