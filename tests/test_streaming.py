"""Streaming prepare (weights read one layer at a time) against the whole-model path; the
plain-read safetensors reader and writer against the safetensors package."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bertqa.model.bert import BertConfig, random_model
from bertqa.model.loading import (BUNDLED_DIR, hf_state_dict, lazy_model, load_model, map_name,
                                  model_from_tensors)
from bertqa.model.safetensors_io import SafetensorsFile, write_safetensors
from bertqa.backends import get_backend
from bertqa.quant import QuantSpec, quantize_model
from bertqa.quant.streaming import quantize_streaming

TINY = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random TINY model as an fp16 Hugging Face checkpoint with the bundled tokenizer files."""
    d = tmp_path_factory.mktemp("tiny")
    model = random_model(TINY, seed=3)
    save_file({k: v.half().contiguous() for k, v in hf_state_dict(model).items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({**TINY.__dict__, "model_type": "bert"}))
    shutil.copy(BUNDLED_DIR / "vocab.txt", d / "vocab.txt")
    return d


def test_hf_names_map_back_to_the_same_model():
    model = random_model(TINY, seed=3)
    hf = hf_state_dict(model)
    assert "bert.encoder.layer.1.attention.self.value.bias" in hf
    assert len(hf) == len(model.state_dict()) + 4 * TINY.num_hidden_layers     # QKV weight, bias: 1 -> 3
    assert all(map_name(n) is not None for n in hf)
    again = model_from_tensors(TINY, list(hf), hf.__getitem__)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def calib_inputs():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, TINY.vocab_size, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    return ids, torch.zeros_like(ids), mask


@pytest.mark.parametrize("spec", ["default", "channel-row", "int32", "seed-shift4", "tensor"])
def test_streaming_equals_the_whole_model_path(tiny_dir, spec):
    spec = QuantSpec.parse(spec)
    inputs = calib_inputs()
    calls = []

    def calibrate(model):
        calls.append(1)
        model(*inputs)
    full = load_model(tiny_dir)
    full_nodes = quantize_model(full, "int", get_backend("cpu-reference"), spec, calibrate, fuse_gelu=True)
    lazy, fetchers = lazy_model(tiny_dir)
    assert lazy.layers[0].ffn.up.weight.is_meta and not lazy.embeddings.word.weight.is_meta
    lazy_nodes = quantize_streaming(lazy, fetchers, "int", get_backend("cpu-reference"), spec, calibrate, fuse_gelu=True)
    assert [n.lw.name for n in full_nodes] == [n.lw.name for n in lazy_nodes]
    for a, b in zip(full_nodes, lazy_nodes):
        assert a.lw.shift == b.lw.shift, a.lw.name
        assert torch.equal(a.lw.wq, b.lw.wq) and torch.equal(a.lw.sw, b.lw.sw), a.lw.name
        assert (a.input_scale is None) == (b.input_scale is None)
        assert a.input_scale is None or torch.equal(a.input_scale, b.input_scale), a.lw.name
        assert a.lw.gelu == b.lw.gelu and b.backend.name == "cpu-reference"
    assert any(n.input_scale is not None for n in lazy_nodes) == (spec.smooth is not None)
    with torch.inference_mode():
        for x, y in zip(full(*inputs), lazy(*inputs)):
            assert torch.equal(x, y)
    assert not any(t.is_meta for t in lazy.state_dict().values())


def test_streaming_reads_each_layer_once_without_calibration(tiny_dir):
    lazy, fetchers = lazy_model(tiny_dir)
    reads = []
    counted = {name: (lambda f=f, name=name: reads.append(name) or f()) for name, f in fetchers.items()}
    quantize_streaming(lazy, counted, "int", get_backend("cpu-reference"), QuantSpec(requant="int32"))
    assert sorted(reads) == sorted(fetchers)


def test_bundled_model_streams_to_the_same_answers(bundled_dir, tokenizer, stories):
    """The bundled fp16 checkpoint, default spec, calibrated on one story in one forward."""
    from bertqa.qa.pipeline import QAPipeline
    story = stories[0]

    def calibrate(model):
        QAPipeline(model, tokenizer).answer(story.questions[0], story.context)
    spec = QuantSpec.default()
    whole = load_model(bundled_dir)
    whole_nodes = quantize_model(whole, "int", get_backend("cpu-reference"), spec, calibrate, fuse_gelu=True)
    lazy, fetchers = lazy_model(bundled_dir)
    lazy_nodes = quantize_streaming(lazy, fetchers, "int", get_backend("cpu-reference"), spec, calibrate, fuse_gelu=True)
    for a, b in zip(whole_nodes, lazy_nodes):
        assert a.lw.shift == b.lw.shift and torch.equal(a.input_scale, b.input_scale), a.lw.name
    questions = story.questions[1:4]
    answers = [QAPipeline(m, tokenizer).answer_batch(questions, [story.context] * len(questions))
               for m in (whole, lazy)]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16, torch.int8])
def test_plain_reader_matches_the_safetensors_package(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    tensors = {"a": (torch.randn(5, 7, generator=g) * 50).to(dtype), "empty": torch.zeros(0, 3, dtype=dtype),
               "scalar": torch.tensor(3.5).to(dtype)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    ours = SafetensorsFile(tmp_path / "x.safetensors")
    for name, t in load_file(str(tmp_path / "x.safetensors")).items():
        got = ours.get(name)
        assert got.dtype == t.dtype and torch.equal(got, t), name


def test_writer_is_read_back_by_the_safetensors_package(tmp_path):
    tensors = {"w": torch.arange(-6, 6, dtype=torch.int8).reshape(3, 4), "s": torch.rand(3),
               "t": torch.rand(4, 2).T, "h": torch.rand(2).half()}      # "t" is not contiguous
    write_safetensors(tmp_path / "y.safetensors", tensors, {"format": "test"})
    back = load_file(str(tmp_path / "y.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    assert SafetensorsFile(tmp_path / "y.safetensors").metadata == {"format": "test"}


def test_reader_names_a_truncated_file(tmp_path):
    from bertqa.errors import ModelError
    save_file({"a": torch.rand(100)}, str(tmp_path / "z.safetensors"))
    data = (tmp_path / "z.safetensors").read_bytes()
    (tmp_path / "z.safetensors").write_bytes(data[:-40])
    with pytest.raises(ModelError, match="truncated: tensor 'a'"):
        SafetensorsFile(tmp_path / "z.safetensors").get("a")
    (tmp_path / "z.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ModelError, match="not a safetensors file"):
        SafetensorsFile(tmp_path / "z.safetensors")


def test_mapped_tensors_equal_read_ones_and_survive_a_rewrite(tmp_path):
    path = tmp_path / "m.safetensors"
    tensors = {"w": torch.arange(-60, 60, dtype=torch.int8).reshape(4, 30), "s": torch.rand(4), "e": torch.zeros(0)}
    write_safetensors(path, tensors)
    f = SafetensorsFile(path)
    mapped = {n: f.map(n) for n in f.names}
    assert all(torch.equal(mapped[n], f.get(n)) and torch.equal(mapped[n], t) for n, t in tensors.items())
    write_safetensors(path, {"w": torch.zeros(4, 30, dtype=torch.int8)})     # renamed into place
    assert torch.equal(mapped["w"], tensors["w"]) and not (tmp_path / "m.safetensors.partial").exists()
