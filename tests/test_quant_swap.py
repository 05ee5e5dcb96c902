"""QuantSpec, the module swap, calibration and smoothing (backend-independent)."""
from dataclasses import replace

import pytest
import torch
from torch import nn

from bertqa.model.bert import BertConfig, random_model
from bertqa.backends import get_backend
from bertqa.quant import QuantSpec, layer_summary, quantize_model
from bertqa.quant import reference as ref
from bertqa.quant.smooth import channel_amax, smoothing_scale

TINY = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=32)


def tiny_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (2, 12), generator=g)
    return ids, torch.zeros_like(ids), torch.ones_like(ids)


def test_spec_parse_presets_and_pairs():
    assert QuantSpec.parse("channel-row") == QuantSpec(weights="channel", acts="row")
    assert QuantSpec.parse("seed-shift4").shift == 4
    assert QuantSpec.parse("weights=channel,acts=row,smooth=0.5").smooth == 0.5
    assert QuantSpec.parse(None) == QuantSpec.default() == QuantSpec.parse("channel-row-smooth")
    assert QuantSpec.parse("tensor") == QuantSpec()
    for bad, msg in [("weights=row", "weights must be"), ("shift=x", "shift must be an integer"),
                     ("requant=int32,shift=3", "applies to requant='int16'"), ("nonsense", "preset"),
                     ("smooth=2", "smooth must be")]:
        with pytest.raises(ValueError, match=msg):
            QuantSpec.parse(bad)


@pytest.mark.parametrize("precision,cls", [("fp", "CustomLinear"), ("int", "QLinear")])
def test_every_linear_is_replaced_and_counted(precision, cls):
    model = random_model(TINY)
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    nodes = quantize_model(model, precision, get_backend("cpu-reference"), QuantSpec(), fuse_gelu=True)
    assert len(nodes) == n_linear == 2 * 4 + 1
    assert not any(type(m) is nn.Linear for m in model.modules())
    summary = layer_summary(model)
    assert summary[cls] == n_linear and summary["total"] == sum(v for k, v in summary.items() if k != "total")


def test_custom_fp_nodes_compute_the_same_as_the_model():
    model = random_model(TINY)
    with torch.no_grad():
        s0, e0 = model(*tiny_inputs())
        quantize_model(model, "fp", get_backend("cpu-reference"), fuse_gelu=True)
        s1, e1 = model(*tiny_inputs())
    assert torch.allclose(s0, s1, atol=1e-5) and torch.allclose(e0, e1, atol=1e-5)


def test_worst_case_shift_bounds_every_accumulator():
    """The shift a node calibrates with: the smallest that fits 127 * max_n sum_k |wq[n, k]|."""
    from bertqa.quant.linear import worst_case_shift
    g = torch.Generator().manual_seed(0)
    for n, k in [(1, 1), (3, 5), (64, 4096), (0, 5)]:
        wq = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
        bound = 127 * int(wq.to(torch.int64).abs().sum(dim=1).max()) if wq.numel() else 0
        assert worst_case_shift(wq) == ref.shift_for_max_acc(bound, margin_bits=0)
    wq = torch.full((2, 2000), -127, dtype=torch.int8)          # 127 * 127 * 2000 needs s = 10
    assert worst_case_shift(wq) == ref.shift_for_max_acc(127 * 127 * 2000, 0) == 10
    assert worst_case_shift(torch.full((1, 133000), -127, dtype=torch.int8)) == 16


def test_calibration_sets_the_smallest_fitting_shift_plus_margin():
    model = random_model(TINY)
    seen = {}

    def calibrate(m):
        m(*tiny_inputs(1))

    nodes = quantize_model(model, "int", get_backend("cpu-reference"), QuantSpec(), calibrate=calibrate)
    for node in nodes:
        assert 0 <= node.lw.shift <= 16
        seen[node.lw.name] = node.lw.shift
    # shift_for_max_acc: the smallest s that fits int16, plus one bit
    assert ref.shift_for_max_acc(32767, margin_bits=0) == 0
    assert ref.shift_for_max_acc(32768, margin_bits=0) == 1
    assert ref.shift_for_max_acc(65534, margin_bits=1) == 2
    with torch.no_grad():
        model(*tiny_inputs(1))
    assert sum(n.stats.saturated for n in nodes) == 0          # calibrated inputs never saturate


def test_fused_qkv_keeps_one_weight_scale_per_original_tensor():
    w = torch.cat([torch.full((4, 8), 1.0), torch.full((4, 8), 2.0), torch.full((4, 8), 4.0)])
    wq, sw = ref.quantize_weight_symmetric(w, "tensor", groups=3)
    assert torch.equal(sw, torch.tensor([1 / 127] * 4 + [2 / 127] * 4 + [4 / 127] * 4))
    assert (wq == 127).all()


def test_smoothing_is_exact_in_fp_and_flattens_outlier_channels():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    x[:, 3] *= 40.0                                              # one outlier channel
    w = torch.randn(8, 16)
    s = smoothing_scale(x.abs().amax(0), w, 0.5)
    assert torch.allclose((x / s) @ (w * s).T, x @ w.T, rtol=1e-4, atol=1e-3)
    spread = lambda a: (a.abs().amax(0).max() / a.abs().amax(0).median()).item()
    assert spread(x / s) < spread(x) / 4


def test_smoothing_improves_int8_error_on_an_outlier_channel():
    torch.manual_seed(1)
    layer = nn.Sequential(nn.Linear(64, 32))
    x = torch.randn(128, 64)
    x[:, 5] *= 60.0

    def error(spec):
        model = nn.Sequential(nn.Linear(64, 32))
        model.load_state_dict(layer.state_dict())
        quantize_model(model, "int", get_backend("cpu-reference"), spec, calibrate=lambda m: m(x))
        with torch.no_grad():
            return (model(x) - layer(x)).pow(2).mean().item()

    assert error(QuantSpec(acts="row", smooth=0.5)) < 0.5 * error(QuantSpec(acts="row"))


def test_channel_amax_records_each_linear_input():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.tensor([[1.0, -5.0, 2.0, 0.5]])
    amax = channel_amax(model, lambda m: m(x))
    assert torch.equal(amax["0"], x.abs()[0])
    assert amax["2"].shape == (3,)


def test_nan_activation_is_an_error_naming_the_layer():
    from bertqa.errors import NonFiniteActivationError
    model = random_model(TINY)
    quantize_model(model, "int", get_backend("cpu-reference"), QuantSpec(shift=4))
    with torch.no_grad(), pytest.raises(NonFiniteActivationError, match="layers.0.attention.qkv"):
        model.layers[0].attention(torch.full((1, 3, 32), float("nan")), None)


def test_no_spec_means_the_targets_default_everywhere():
    """quantize_model, prepare_linear and the int targets all take QuantSpec.default() for None."""
    from bertqa.quant.linear import linear_weights, prepare_linear
    from bertqa.targets import prepare_target
    model = random_model(TINY)
    nodes = quantize_model(model, "int", get_backend("cpu-reference"), calibrate=lambda m: m(*tiny_inputs(1)))
    assert {node.lw.spec for node in nodes} == {QuantSpec.default()}
    prepared = prepare_target(random_model(TINY), "customcpu", "int", calibrate=lambda m: m(*tiny_inputs(1)))
    assert prepared.spec == QuantSpec.default()
    node = prepare_linear(torch.randn(4, 8), None, backend=get_backend("cpu-reference"))
    assert node.lw.spec == replace(QuantSpec.default(), smooth=None)   # one layer: nothing to smooth by
    with pytest.raises(ValueError, match="smooth needs calibration inputs"):
        prepare_linear(torch.randn(4, 8), None, QuantSpec.default(), backend=get_backend("cpu-reference"))
    with pytest.raises(ValueError, match="layer: precision 'int' needs a QuantSpec"):
        linear_weights(torch.randn(4, 8), None, None, "int", name="layer")


def test_replace_module_by_dotted_name():
    from bertqa.quant.linear import replace_module
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 3)))
    replace_module(model, "1.0", nn.GELU())
    replace_module(model, "0", nn.Identity())
    assert isinstance(model[1][0], nn.GELU) and isinstance(model[0], nn.Identity)
    with pytest.raises(AttributeError):
        replace_module(model, "2.0", nn.ReLU())
