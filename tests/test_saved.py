"""Saving a prepared int8 model and starting from it: same logits, clear errors for bad dirs."""
import json
import shutil

import pytest
import torch

import bertqa
from bertqa.errors import BertQAError, ModelError, TargetUnavailable
from bertqa.quant import custom_nodes
from bertqa.saved import MANIFEST, WEIGHTS


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    qa = bertqa.load(model="bundled", target="customcpu", precision="int")
    out = qa.save(tmp_path_factory.mktemp("prepared") / "minilm-int8")
    return qa, out


def logits(qa):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 30000, (2, 48), generator=g)
    types = torch.zeros_like(ids)
    types[:, 20:] = 1
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    with torch.inference_mode():
        return qa.prepared.model(ids, types, mask)


def test_reload_gives_identical_logits_and_shifts(saved):
    qa, out = saved
    again = bertqa.load(model=str(out))
    assert (again.target, again.precision, again.prepared.spec) == (qa.target, "int", qa.prepared.spec)
    assert again.model_name == qa.model_name and again.n_parameters == qa.n_parameters
    assert again.layer_summary() == qa.layer_summary()
    for a, b in zip(custom_nodes(qa.prepared.model), custom_nodes(again.prepared.model)):
        assert (a.lw.name, a.lw.shift, a.lw.gelu) == (b.lw.name, b.lw.shift, b.lw.gelu)
        assert torch.equal(a.lw.wq, b.lw.wq) and torch.equal(a.input_scale, b.input_scale)
    for x, y in zip(logits(qa), logits(again)):
        assert torch.equal(x, y)


def test_reload_keeps_a_spec_other_than_the_default(tmp_path):
    """The saved spec is the loaded model's, also when it is not QuantSpec.default()."""
    from bertqa.quant import QuantSpec
    qa = bertqa.load(model="bundled", target="customcpu", precision="int", spec="seed-shift4", threads=1)
    again = bertqa.load(model=str(qa.save(tmp_path / "shift4")), threads=1)
    assert again.prepared.spec == qa.prepared.spec == QuantSpec.parse("seed-shift4")
    assert again.header()["quantization"] == qa.header()["quantization"]
    for x, y in zip(logits(qa), logits(again)):
        assert torch.equal(x, y)


def test_saved_directory_stands_alone(saved, tmp_path):
    _, out = saved
    moved = shutil.copytree(out, tmp_path / "elsewhere")
    manifest = json.loads((moved / MANIFEST).read_text())
    assert manifest["format"] == "bertqa-prepared" and manifest["version"] == 1
    assert manifest["layers"]["layers.0.ffn.up"]["gelu"] is True
    assert {"config.json", "vocab.txt", WEIGHTS} <= {p.name for p in moved.iterdir()}
    assert bertqa.load(model=str(moved)).answer("Who?", "Ada wrote it.").text


def test_what_a_saved_model_refuses(saved):
    qa, out = saved
    with pytest.raises(TargetUnavailable, match="not on --target cpu"):
        bertqa.load(model=str(out), target="cpu")
    with pytest.raises(TargetUnavailable, match="--precision int only"):
        bertqa.load(model=str(out), precision="fp")
    with pytest.raises(BertQAError, match="cannot be re-quantized"):
        bertqa.load(model=str(out), spec="tensor")
    fp = bertqa.load(model="bundled", target="customcpu", precision="fp")
    with pytest.raises(BertQAError, match="only int8 models"):
        fp.save(out.parent / "fp")
    a_file = out.parent / "a-file"
    a_file.write_text("x")
    with pytest.raises(BertQAError, match="exists and is not a directory"):
        qa.save(a_file)


def test_prepare_to_a_file_is_a_one_line_error_before_any_work(tmp_path):
    """`bertqa prepare --out FILE` says so at once (it used to prepare, then raise FileExistsError)."""
    import subprocess
    import sys
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    r = subprocess.run([sys.executable, "-m", "bertqa", "prepare", "--model", "bundled", "--out", str(a_file)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "exists and is not a directory" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "prepared" not in r.stdout


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.update(version=99), "key 'version' is 99"),
    (lambda m: m.update(format="other"), "key 'format'"),
    (lambda m: m["spec"].update(weights="row"), "key 'spec' is not a valid quantization spec"),
    (lambda m: m["spec"].update(colour="red"), "key 'spec'"),
    (lambda m: m["layers"]["layers.1.attention.qkv"].update(shift=40), r"key 'layers\.layers\.1\.attention\.qkv'"),
    (lambda m: m["layers"].pop("qa_outputs"), r"no record for layer 'qa_outputs'"),
])
def test_malformed_manifest_is_a_model_error_naming_the_key(saved, tmp_path, edit, match):
    _, out = saved
    bad = shutil.copytree(out, tmp_path / "bad", symlinks=False)
    manifest = json.loads((bad / MANIFEST).read_text())
    edit(manifest)
    (bad / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=match):
        bertqa.load(model=str(bad))


def test_broken_files_are_named(saved, tmp_path):
    _, out = saved
    bad = shutil.copytree(out, tmp_path / "bad")
    (bad / MANIFEST).write_text("{not json")
    with pytest.raises(ModelError, match=f"cannot read .*{MANIFEST}"):
        bertqa.load(model=str(bad))
    shutil.copy(out / MANIFEST, bad / MANIFEST)
    (bad / WEIGHTS).unlink()
    with pytest.raises(ModelError, match=f"missing {WEIGHTS}"):
        bertqa.load(model=str(bad))
    from bertqa.model.safetensors_io import SafetensorsFile, write_safetensors
    src = SafetensorsFile(out / WEIGHTS)
    tensors = {n: src.get(n) for n in src.names if n != "layers.2.ffn.down.sw"}
    write_safetensors(bad / WEIGHTS, tensors)
    with pytest.raises(ModelError, match=r"layers\.2\.ffn\.down\.sw"):
        bertqa.load(model=str(bad))
