"""Targets as data (bertqa.targets.TARGET_TABLE): what a row decides, and that a new target is
one row. Tiny random models on the CPU backends; no checkpoint is read."""
from __future__ import annotations

import pytest
import torch

from bertqa import attention
from bertqa.errors import TargetUnavailable
from bertqa.model.bert import BertConfig, random_model
from bertqa.quant import QuantSpec, custom_nodes
from bertqa.targets import (TARGET_TABLE, TARGETS, Target, is_custom, prepare_target, streamed,
                            target_of_backend)

TINY = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=32)


def inputs(seed=0):
    ids = torch.randint(1, TINY.vocab_size, (2, 11), generator=torch.Generator().manual_seed(seed))
    return ids, torch.zeros_like(ids), torch.ones_like(ids)


def test_the_table_names_every_target_and_its_backends():
    assert TARGETS == ("cpu", "customcpu", "aie", "gpu", "onnx")
    assert TARGET_TABLE["customcpu"].backends == ("customcpu", "cpu-reference")
    assert TARGET_TABLE["gpu"].device == "cuda" and TARGET_TABLE["gpu"].gelu == "torch"
    assert [t for t in TARGETS if is_custom(t)] == ["customcpu", "aie", "gpu"]
    assert (target_of_backend("cpu-reference"), target_of_backend("aie"), target_of_backend("toy")) == \
        ("customcpu", "aie", "customcpu")


def test_a_new_target_is_one_row(monkeypatch):
    """A row naming the reference backend, native host kernels and the host kernels' GELU."""
    monkeypatch.setitem(TARGET_TABLE, "refcpu", Target(backends=("cpu-reference",),
                                                       host_kernels="native", gelu="host"))
    p = prepare_target(random_model(TINY), "refcpu", "int", QuantSpec(shift=6))
    nodes = custom_nodes(p.model)
    assert nodes and {n.backend.name for n in nodes} == {"cpu-reference"}
    want_gelu = "native" if attention.native_unavailable() is None else "torch"
    assert {n.backend.gelu for n in nodes} == {want_gelu}
    assert p.device == "cpu" and p.spec == QuantSpec(shift=6)


def test_row_options_go_to_the_backend_and_callers_override_them(monkeypatch):
    monkeypatch.setitem(TARGET_TABLE, "aie-emu", Target(backends=("aie",), options={"aie_device": "emulator"}))
    p = prepare_target(random_model(TINY), "aie-emu", "int", QuantSpec(shift=6))
    assert "AIE device: emulator (requested)" in p.backend
    with pytest.raises(TargetUnavailable, match="aie-device must be one of"):
        prepare_target(random_model(TINY), "aie-emu", "int", QuantSpec(shift=6), options={"aie_device": "tpu"})
    with pytest.raises(TargetUnavailable, match="option aie_device does not apply to backend 'cpu-reference'"):
        prepare_target(random_model(TINY), "customcpu", "int", QuantSpec(shift=6), backend="cpu-reference",
                       options={"aie_device": "emulator"})


def test_bad_choices_say_what_is_wrong():
    with pytest.raises(TargetUnavailable, match="unknown target 'tpu'"):
        prepare_target(random_model(TINY), "tpu", "int")
    with pytest.raises(TargetUnavailable, match="--backend apply to the custom targets, not --target cpu"):
        prepare_target(random_model(TINY), "cpu", "int", backend="customcpu")
    with pytest.raises(TargetUnavailable, match="--target cpu needs the fp32 model"):
        prepare_target(random_model(TINY), "cpu", "fp", nodes=streamed({}))
    with pytest.raises(TargetUnavailable, match="--target onnx runs a directory"):
        prepare_target(random_model(TINY), "onnx", "int")


def test_a_backend_on_another_device_is_refused(monkeypatch):
    from bertqa.backends import load_backend
    monkeypatch.setitem(TARGET_TABLE, "far", Target(backends=("cpu-reference",), device="cuda"))
    with pytest.raises(TargetUnavailable, match="backend cpu-reference runs on cpu, --target far on cuda; "
                                                "use --target customcpu"):
        prepare_target(random_model(TINY), "far", "int")
    assert load_backend("cpu-reference").device == "cpu"


def test_streamed_and_in_memory_weights_give_the_same_model(tmp_path):
    """One prepare path, two weight sources: the fp32 module and a checkpoint read per layer."""
    model = random_model(TINY, seed=3)
    weights = {name: (m.weight.detach().clone(), m.bias.detach().clone())
               for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    spec = QuantSpec.parse("channel-row")
    calibrate = lambda m: m(*inputs(1))                      # noqa: E731
    whole = prepare_target(random_model(TINY, seed=3), "customcpu", "int", spec, calibrate,
                           backend="cpu-reference")
    lazy = prepare_target(random_model(TINY, seed=3), "customcpu", "int", spec, calibrate,
                          backend="cpu-reference",
                          nodes=streamed({n: (lambda w=w: (w[0].clone(), w[1].clone())) for n, w in weights.items()}))
    with torch.inference_mode():
        for a, b in zip(whole.model(*inputs(2)), lazy.model(*inputs(2))):
            assert torch.equal(a, b)


def test_backend_options_reach_the_backend_from_the_python_api():
    """bertqa.load / from_module: backend_options={...}, and aie_device= as a short form of it."""
    from bertqa.api import from_module
    from bertqa.model.loading import BUNDLED_DIR
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    for kw in ({"backend_options": {"aie_device": "emulator"}}, {"aie_device": "emulator"}):
        qa = from_module(random_model(config), BUNDLED_DIR, "tiny", "aie", "int", "seed-shift4", threads=1, **kw)
        assert "AIE device: emulator (requested)" in qa.header()["linear backend"]
    with pytest.raises(TargetUnavailable, match="option colour does not apply to backend"):
        from_module(random_model(config), BUNDLED_DIR, "tiny", "customcpu", "int", "seed-shift4",
                    threads=1, backend_options={"colour": "red"})
