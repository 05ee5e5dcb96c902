"""`bertqa eval` and `bertqa profile` end to end: tables, report files, errors as one line."""
import json
import re

import pytest

from bertqa.cli import main
from bertqa.eval.compare import parse_configs, Config
from bertqa.errors import BertQAError
from bertqa.quant import QuantSpec
from conftest import shared_file
from test_eval_data import qa, squad, write


def test_parse_configs():
    assert parse_configs("cpu:fp, customcpu:int:channel-row") == [
        Config("cpu", "fp"), Config("customcpu", "int", "channel-row")]
    assert Config("customcpu", "int", "channel-row").label == "customcpu int channel-row"
    assert parse_configs("customcpu:int:attn=fp32,customcpu:int:tensor:attn=bf16") == [
        Config("customcpu", "int", None, "fp32"), Config("customcpu", "int", "tensor", "bf16")]
    assert Config("customcpu", "int", None, "fp32").label == "customcpu int attn=fp32"


@pytest.mark.parametrize("text, message", [
    ("cpu", "write target:precision"), ("tpu:fp", "unknown target"), ("cpu:int8", "unknown precision"),
    ("customcpu:int:fast", "unknown spec preset"), ("cpu:int:channel-row", "a spec applies"),
    ("customcpu:fp:int32", "a spec applies"), ("cpu:fp,cpu:fp", "twice"), ("cpu:fp,", "write target"),
    ("customcpu:int:attn=int4", "unknown attention"), ("customcpu:int:tensor:int32", "two specs"),
    ("customcpu:int:tensor:attn=fp32:x", "write target"),
])
def test_parse_configs_errors(text, message):
    with pytest.raises(BertQAError, match=message):
        parse_configs(text)


def test_eval_predictions_file_reports_questions_without_gold(tmp_path, capsys):
    data = write(tmp_path, squad([qa("a", ["Paris"]), qa("b", []), qa("c", ["red car"])]))
    preds = write(tmp_path, {"a": "paris", "c": "a car"}, "preds.json")
    out_json = tmp_path / "r.json"
    assert main(["eval", "--data", str(data), "--predictions", str(preds), "--json", str(out_json)]) == 0
    out, err = capsys.readouterr()
    assert "1 questions have no gold answer and are not scored: b" in err
    assert "predictions" in out
    row = json.loads(out_json.read_text())["results"][0]
    assert row["target"] == "predictions" and row["n"] == 2 and row["em"] == 50.0
    assert row["f1"] == pytest.approx(100 * (1 + 2 * 0.5 * 1 / 1.5) / 2)
    assert row["latency_ms_p50"] is None


@pytest.mark.parametrize("extra, message", [
    (["--compare", "cpu:fp,gpu:int8"], "unknown precision"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--limit", "0"], "limit must be >= 1"),
    (["--json", "{tmp}/missing/r.json"], "its folder does not exist"),
    (["--out", "{tmp}/a-file"], "exists and is not a directory"),
    (["--plot", "{tmp}/plot.txt"], "cannot plot to"),
])
def test_eval_errors_are_one_line(tmp_path, capsys, extra, message):
    data = write(tmp_path, squad([qa("a")]))
    (tmp_path / "a-file").write_text("x")
    if "--plot" in extra:
        pytest.importorskip("matplotlib", reason="the plot's formats come from matplotlib (eval extra)")
    extra = [x.format(tmp=tmp_path) for x in extra]
    assert main(["eval", "--data", str(data), "--model", "bundled", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bertqa: error:") and message in err and "\n" not in err


def test_eval_malformed_file_is_one_line(tmp_path, capsys):
    data = write(tmp_path, '{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": 1}]}]}]}')
    assert main(["eval", "--data", str(data), "--predictions", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "data[0].paragraphs[0].qas[0]: 'id' must be a str, got int" in err and "\n" not in err


def test_eval_compare_end_to_end(tmp_path, capsys):
    """Bundled model, 3 questions, cpu fp against customcpu int: table, JSON, Markdown, PNG."""
    data = shared_file("squad-v1.1-dev-eval.json")
    out = tmp_path / "report"
    argv = ["eval", "--data", str(data), "--model", "bundled", "--limit", "3",
            "--compare", "cpu:fp,customcpu:int", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "3 questions of squad-v1.1-dev-eval.json" in text and "customcpu int" in text
    rows = json.loads((out / "eval.json").read_text())["results"]
    assert [(r["target"], r["precision"]) for r in rows] == [("cpu", "fp"), ("customcpu", "int")]
    assert rows[1]["spec"] == QuantSpec.default().label()
    for r in rows:
        assert r["n"] == 3 and 0 <= r["em"] <= r["f1"] <= 100 and 0 <= r["same_answer_pct"] <= 100
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"]
        assert r["questions_per_s"] > 0 and r["latency"] == "per question"
    assert rows[0]["delta_f1"] == 0.0 and rows[0]["same_answer_pct"] == 100.0
    assert rows[1]["delta_f1"] == pytest.approx(rows[1]["f1"] - rows[0]["f1"])
    md = (out / "eval.md").read_text()
    assert md.count("\n| cpu fp |") == 1 and md.count("\n| customcpu int |") == 1
    png = (out / "eval.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_eval_without_target_names_the_configuration_that_loaded(tmp_path, capsys):
    data = shared_file("squad-v1.1-dev-eval.json")
    out_json = tmp_path / "r.json"
    assert main(["eval", "--data", str(data), "--model", "bundled", "--limit", "2", "--no-progress",
                 "--json", str(out_json)]) == 0
    assert "\ncpu fp " in capsys.readouterr().out
    assert json.loads(out_json.read_text())["results"][0]["label"] == "cpu fp"


def test_profile_end_to_end(capsys):
    assert main(["profile", "--model", "bundled", "--target", "customcpu", "--questions", "2"]) == 0
    out = capsys.readouterr().out
    for line in ("2 questions, 2 forward passes", "Linear attention.qkv", "in the backend",
                 "attention softmax(QK^T/sqrt(d)) V: ", "residual add + LayerNorm: ", "embeddings",
                 "rest of the forward", "model forward", "outside the model"):
        assert line in out
    assert "SDPA" not in out or "fp32 (PyTorch SDPA)" in out      # named by what runs


def test_profile_of_random_weights_in_bert_large_shapes(capsys):
    # one encoder layer of BERT-large's widths: the GEMM shapes the speed goals are about
    assert main(["profile", "--random-weights", "bert-large", "--layers", "1", "--target", "customcpu",
                 "--precision", "int", "--questions", "1"]) == 0
    out = capsys.readouterr().out
    assert "bert-large (1 layer, random weights)" in out
    assert "1 questions, 1 forward passes" in out
    assert re.search(r"layers\.0\.ffn\.down +4096 +1024 ", out)


def test_profile_random_weights_options_are_checked(capsys):
    assert main(["profile", "--model", "bundled", "--random-weights", "bert-base"]) == 2
    assert "--random-weights replaces --model" in capsys.readouterr().err
    assert main(["profile", "--model", "bundled", "--layers", "2"]) == 2
    assert "--layers applies to --random-weights" in capsys.readouterr().err
