"""bertqa export: every scheme from the bundled model is a valid ONNX graph that ONNX Runtime runs
and that answers the demo stories; bad input is refused without leaving anything behind."""
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="export needs the onnx extra")
pytest.importorskip("onnxruntime", reason="--target onnx needs the onnx extra")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import bertqa  # noqa: E402
from bertqa.errors import BertQAError, ModelError, TargetUnavailable  # noqa: E402
from bertqa.export.layout import MANIFEST, SCHEMES  # noqa: E402


@pytest.fixture(scope="module")
def exports(tmp_path_factory, qa_fp):
    """scheme -> exported directory (spec from customcpu int with fp32 attention, as the CLI does)."""
    root = tmp_path_factory.mktemp("exports")
    qa_int = bertqa.load(model="bundled", target="customcpu", precision="int", attention="fp32")
    return {s: (qa_int if s == "spec" else qa_fp).export(root / s, s) for s in SCHEMES}


@pytest.fixture(scope="module")
def demo_pairs(stories):
    return [(q, s.context) for s in stories for q in s.questions]


def answers(qa, pairs):
    return [a[0].text for a in qa.answer_batch([q for q, _ in pairs], [c for _, c in pairs])]


def graph(path: Path):
    return onnx.load(str(path / "model.onnx"), load_external_data=False).graph


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_checks_loads_and_answers(exports, scheme, demo_pairs):
    out = exports[scheme]
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    assert {"model.onnx", "model.onnx.data", MANIFEST, "config.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    qa = bertqa.load(model=str(out))
    assert qa.target == "onnx" and "CPUExecutionProvider" in qa.prepared.backend
    assert qa.header()["linear backend"].endswith(f"scheme {scheme}")
    got = answers(qa, demo_pairs)
    assert len(got) == len(demo_pairs) and sum(bool(a.strip()) for a in got) >= len(got) - 2
    assert qa.layer_summary()["total"] > 100


def _cpu_has_vnni() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_vnni" in flags or "avx_vnni" in flags


def test_spec_answers_match_customcpu_int(exports, demo_pairs):
    """Identical answers where ONNX Runtime's MatMulInteger is exact (VNNI). On AVX2-only CPUs its
    u8 x s8 kernel sums pairs of products in saturating int16 (docs/export.md), so there an answer
    may only swap with the reference's runner-up, both ranking the same two spans."""
    ref = bertqa.load(model="bundled", target="customcpu", precision="int", attention="fp32")
    spec = bertqa.load(model=str(exports["spec"]))
    if _cpu_has_vnni():
        assert answers(spec, demo_pairs) == answers(ref, demo_pairs)
        return
    swapped = 0
    for q, c in demo_pairs:
        a, b = ref.answer(q, c, top_k=2), spec.answer(q, c, top_k=2)
        if a[0].text != b[0].text:
            swapped += 1
            assert {x.text for x in a} == {x.text for x in b}, (q, a, b)
    assert swapped <= len(demo_pairs) // 10


def test_bf16_answers_match_cpu_fp(exports, qa_fp, demo_pairs):
    assert answers(bertqa.load(model=str(exports["bf16"])), demo_pairs) == answers(qa_fp, demo_pairs)


def test_bf16_weights_are_bf16_and_matmuls_read_bf16_rounded_inputs(exports):
    g = graph(exports["bf16"])
    big = [t for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL and "weight_t" in t.name]
    assert big and all(t.data_type == onnx.TensorProto.BFLOAT16 for t in big)
    produced_by = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "MatMul":
            assert all(produced_by[i].op_type == "Cast" for i in n.input), n.name


QDQ_ALLOWED = {"QuantizeLinear", "DequantizeLinear", "MatMul", "Add", "Mul", "Div", "Sub", "Erf",
               "LayerNormalization", "Softmax", "Reshape", "Transpose", "Gather", "Shape", "Range",
               "Cast", "Unsqueeze", "Squeeze", "Split"}


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s.startswith("qdq-")])
def test_qdq_graphs_quantize_every_matmul_input(exports, scheme):
    g = graph(exports[scheme])
    assert {n.op_type for n in g.node} <= QDQ_ALLOWED
    produced_by = {o: n for n in g.node for o in n.output}
    matmuls = [n for n in g.node if n.op_type == "MatMul"]
    assert len(matmuls) == 6 * 6 + 1                    # 4 Linear + 2 attention per layer, head
    for n in matmuls:
        assert all(produced_by[i].op_type == "DequantizeLinear" for i in n.input), n.name
    for n in g.node:                                     # a QuantizeLinear feeds its DequantizeLinear only
        if n.op_type == "QuantizeLinear":
            assert [m.op_type for m in g.node if n.output[0] in m.input] == ["DequantizeLinear"]
    act_type = onnx.TensorProto.INT16 if scheme == "qdq-a16w8" else onnx.TensorProto.INT8
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            assert inits[n.input[2]].data_type == act_type
    opset = {o.domain: o.version for o in onnx.load(str(exports[scheme] / "model.onnx"),
                                                      load_external_data=False).opset_import}
    assert opset[""] == (21 if scheme == "qdq-a16w8" else 17)


def test_xint8_scales_are_powers_of_two(exports):
    g = graph(exports["qdq-xint8"])
    inits = {t.name: t for t in g.initializer}
    scales = [numpy_helper.to_array(inits[n.input[1]]) for n in g.node
              if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(scales) > 100
    for s in scales:
        assert s.ndim == 0, "XINT8 is per tensor"
        e = math.log2(float(s))
        assert e == round(e), f"scale {float(s)} is not a power of two"


def test_a8w8_weights_per_channel_float_scales(exports):
    g = graph(exports["qdq-a8w8"])
    inits = {t.name: t for t in g.initializer}
    weight_dq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dq and all(len(inits[n.input[1]].dims) == 1 for n in weight_dq)      # [N] scales


def test_manifest_says_scheme_opset_calibration(exports):
    import json
    m = json.loads((exports["qdq-a8w8"] / MANIFEST).read_text())
    assert (m["scheme"], m["opset"], m["precision"]) == ("qdq-a8w8", 17, "int")
    assert m["calibration"]["source"] == "built-in stories" and m["calibration"]["windows"] > 0
    s = json.loads((exports["spec"] / MANIFEST).read_text())
    assert s["quantization"]["spec"]["smooth"] == 0.5 and len(s["layers"]) == 6 * 4 + 1


# -- bad input ---------------------------------------------------------------------------------

def test_unknown_scheme_and_file_destination(qa_fp, tmp_path):
    with pytest.raises(BertQAError, match="unknown export scheme 'int4'"):
        qa_fp.export(tmp_path / "x", "int4")
    file = tmp_path / "file"
    file.write_text("keep")
    with pytest.raises(BertQAError, match="is not a directory"):
        qa_fp.export(file, "fp32")
    assert file.read_text() == "keep"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(BertQAError, match="not a bertqa export"):
        qa_fp.export(tmp_path / "full", "fp32")
    with pytest.raises(BertQAError, match="scheme spec exports an int8 model"):
        qa_fp.export(tmp_path / "y", "spec")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]


def test_failure_mid_export_leaves_nothing(qa_fp, tmp_path, monkeypatch):
    import bertqa.export.bert_graph as bg

    def broken(g, model, scheme):
        g.weight("x", np.zeros(4096, np.float32))          # some data written already
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(bg, "build_bert", broken)
    with pytest.raises(BertQAError, match="No space left"):
        qa_fp.export(tmp_path / "out", "fp32")
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_an_earlier_export(exports, qa_fp, tmp_path):
    out = qa_fp.export(tmp_path / "e", "fp32")
    again = qa_fp.export(out, "bf16")
    assert again == out and '"bf16"' in (out / MANIFEST).read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["e"]


def test_not_a_bert_model(tmp_path, bundled_dir):
    for f in bundled_dir.iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}')
    with pytest.raises(ModelError, match="model_type 'gpt2' is not supported"):
        bertqa.load(model=str(tmp_path))


def test_broken_export_dirs(exports, tmp_path):
    import shutil
    missing = Path(shutil.copytree(exports["fp32"], tmp_path / "missing"))
    (missing / "model.onnx").unlink()
    with pytest.raises(ModelError, match="missing model.onnx"):
        bertqa.load(model=str(missing))
    corrupt = Path(shutil.copytree(exports["fp32"], tmp_path / "corrupt"))
    (corrupt / "model.onnx").write_bytes(b"\x08\x07not a protobuf at all")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load") as e:
        bertqa.load(model=str(corrupt))
    assert "\n" not in str(e.value)


def test_provider_not_installed_names_the_installed_ones(exports):
    with pytest.raises(TargetUnavailable, match=r"VitisAIExecutionProvider' is not installed here "
                                                r"\(installed: .*CPUExecutionProvider"):
        bertqa.load(model=str(exports["fp32"]), onnx_provider="VitisAIExecutionProvider")
    qa = bertqa.load(model=str(exports["fp32"]), onnx_provider="cpu")
    assert qa.prepared.model.provider == "CPUExecutionProvider"


def test_onnx_target_needs_an_export_and_refuses_torch_options(exports):
    with pytest.raises(TargetUnavailable, match="written by `bertqa export`"):
        bertqa.load(model="bundled", target="onnx")
    with pytest.raises(TargetUnavailable, match="not --target customcpu"):
        bertqa.load(model=str(exports["fp32"]), target="customcpu")
    with pytest.raises(TargetUnavailable, match="--backend do not apply"):
        bertqa.load(model=str(exports["fp32"]), backend="customcpu")
    with pytest.raises(TargetUnavailable, match="not --precision int"):
        bertqa.load(model=str(exports["fp32"]), precision="int")


def test_profile_reads_onnx_runtime_kernel_times(exports, demo_pairs):
    from bertqa.bench.profile import format_profile, profile_questions
    qa = bertqa.load(model=str(exports["spec"]))
    summary = profile_questions(qa, demo_pairs[:2])
    assert summary["kind"] == "onnx" and summary["forwards"] == 2
    assert summary["ops"]["MatMulInteger"][1] == 2 * 25 and summary["forward"] <= summary["total"]
    assert "MatMulInteger" in format_profile(summary)
