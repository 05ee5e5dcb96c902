"""bertqa.structure / structure_plot / `bertqa structure`: the picture comes from the model object."""
import pytest
import torch

from bertqa.model.bert import BertConfig, random_model
from bertqa.structure import format_structure, model_structure, trace_steps

TINY = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64)


@pytest.fixture(scope="module")
def tiny_int():
    from bertqa.api import from_module
    from bertqa.model.loading import BUNDLED_DIR
    from bertqa.qa.pipeline import QAOptions
    from bertqa.qa.windows import WindowOptions
    options = QAOptions(windows=WindowOptions(max_seq_len=64, doc_stride=16, max_question_len=16))
    return from_module(random_model(TINY), BUNDLED_DIR, "tiny", "customcpu", "int", options=options)


def test_one_layer_expanded_with_its_nodes_backends_and_host_kernels(tiny_int):
    st = model_structure(tiny_int)
    assert st.layer_name == "layers" and st.repeats == 3
    assert [s.name for s in st.before] == ["embeddings.word", "embeddings.token_type",
                                           "embeddings.position", "embeddings.norm"]
    assert [s.name for s in st.layer] == [
        "layers.0.attention.qkv", "layers.0.attention.core", "layers.0.attention.out",
        "layers.0.attention.add_norm", "layers.0.ffn.up", "layers.0.ffn.down", "layers.0.ffn.add_norm"]
    assert [s.name for s in st.after] == ["qa_outputs"]
    qkv, core, up = st.layer[0], st.layer[1], st.layer[4]
    backend = tiny_int.prepared.model.layers[0].attention.qkv.backend.name
    assert qkv.kind == "node" and qkv.op == "QLinear" and "K 32 -> N 96" in qkv.lines
    assert any(line.startswith(f"{backend}: ") for line in qkv.lines)
    assert qkv.shape_out[-1] == 96 and up.shape_out[-1] == 64
    assert "GELU fused" in up.lines[-1]                       # its Identity is not a step
    assert core.kind == "host" and tiny_int.header()["attention"].split(", ")[0] in core.lines
    text = format_structure(st)
    assert "layers.0 .. layers.2: 3 x the same layer" in text and "layers.1." not in text


def test_trace_restores_the_model_and_resets_stats(tiny_int):
    from bertqa.quant import custom_nodes
    model = tiny_int.prepared.model
    core_before = model.layers[0].attention.core
    model_structure(tiny_int)
    assert model.layers[0].attention.core is core_before
    assert all(not m._forward_hooks for m in model.modules())
    assert all(n.stats.calls == 0 for n in custom_nodes(model))


def test_pytorch_modules_and_nested_calls_on_the_plain_model():
    model = random_model(TINY)
    ids = torch.randint(1, 100, (1, 6))
    steps = trace_steps(model, (ids, torch.zeros_like(ids), torch.ones_like(ids)), {})
    add_norm = next(s for s in steps if s.name == "layers.0.attention.add_norm")
    assert [i.name for i in add_norm.inner] == ["layers.0.attention.norm"]   # LayerNorm inside it
    act = next(s for s in steps if s.name == "layers.0.ffn.act")
    assert act.op == "GELU" and act.kind == "torch"
    assert next(s for s in steps if s.name == "qa_outputs").lines[-1] == "PyTorch fp32"


def test_png_and_svg_are_drawn(tiny_int, tmp_path):
    pytest.importorskip("matplotlib")
    from bertqa.structure_plot import save_structure, shape_text
    png, svg = save_structure(model_structure(tiny_int), tmp_path / "tiny.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 400_000
    text = svg.read_text()
    assert "layers.0.attention.qkv" in text and "x 3" in text and "qa_outputs" in text
    assert shape_text((1, 15, 1024), 1, 15) == "[B, S, 1024]" and shape_text((15,), 1, 15) == "[S]"


def test_structure_and_demo_structure_commands(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from bertqa.cli import main
    assert main(["structure", "--model", "bundled", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "as prepared for customcpu int" in out and "layers.0 .. layers.5: 6 x" in out
    assert (tmp_path / "s.png").is_file() and (tmp_path / "s.svg").is_file()
    assert main(["demo", "--model", "bundled", "--questions", "1", "--structure", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d.svg").is_file() and "Answer:" in capsys.readouterr().out


def test_structure_errors(tmp_path, capsys):
    from bertqa.cli import main
    assert main(["structure", "--model", "bundled", "--out", str(tmp_path / "no" / "s")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
    assert main(["structure", "--model", "bundled", "--random-weights", "bert-base",
                 "--out", str(tmp_path / "s")]) == 2
    assert "--random-weights replaces --model" in capsys.readouterr().err
