"""The command line end to end on the bundled model: every mode, and clear errors."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

NO_ANSWER = "I am unable to find the answer to this question"


def run(*args, env=None, timeout=300):
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


@pytest.mark.parametrize("target,precision,linear,backend", [
    ("cpu", "fp", "Linear", "PyTorch fp32"),
    ("cpu", "int", "DynamicQuantizedLinear", "PyTorch dynamic int8"),
    ("customcpu", "fp", "CustomLinear", "fp32 compute"),
    ("customcpu", "int", "QLinear", ""),
    ("aie", "int", "QLinear", "AIE"),
])
def test_every_mode_answers_the_builtin_stories(target, precision, linear, backend):
    r = run("--model", "bundled", "--target", target, "--precision", precision, "--questions", "4")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"target:          {target}" in out and f"precision:       {precision}" in out
    assert backend in out
    assert f"'{linear}': 25" in out                        # every Linear replaced (24 + QA head)
    assert out.count("Question:") == 4
    assert "##" not in out
    assert "Margarethe Olsen" in out
    assert "inference time:" in out and " ms" in out


def test_demo_reads_coqa_squad_and_text_files(tmp_path):
    text = tmp_path / "story.txt"
    text.write_text("The mill stood by the river Aa. It was built in 1822 by Jan Smit.\nQ: Who built the mill?\n")
    r = run("--model", "bundled", "--data", str(text))
    assert r.returncode == 0, r.stderr
    assert "Jan Smit" in r.stdout
    squad = tmp_path / "s.json"
    squad.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "Ada lives in Oslo.",
                                  "qas": [{"id": "1", "question": "Where does Ada live?", "answers": []}]}]}]}))
    r = run("--model", "bundled", "--data", str(squad))
    assert r.returncode == 0, r.stderr
    assert "Oslo" in r.stdout


def test_no_answer_prints_the_seed_message(tmp_path):
    text = tmp_path / "story.txt"
    text.write_text("The weather was mild all week.\nQ: Who painted the Mona Lisa?\n")
    r = run("--model", "bundled", "--data", str(text), "--allow-no-answer", "--null-threshold", "-1000")
    assert r.returncode == 0, r.stderr
    assert NO_ANSWER in r.stdout


def test_stats_prints_the_per_layer_int8_report():
    r = run("--model", "bundled", "--target", "customcpu", "--precision", "int", "--questions", "1", "--stats")
    assert r.returncode == 0, r.stderr
    assert "layers.0.ffn.down" in r.stdout and "saturated" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--model", "/nonexistent/model"], "model directory /nonexistent/model does not exist"),
    (["--data", "/nonexistent/stories.json"], "data file /nonexistent/stories.json does not exist"),
    (["--spec", "weights=row"], "QuantSpec.weights must be one of"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--doc-stride", "1000"], "doc_stride"),
    (["--max-seq-len", "1000"], "max_seq_len (1000) exceeds the model's 512 position embeddings"),
    (["--target", "customcpu", "--precision", "int", "--backend", "nope"],
     "nope: no such backend (registered: aie, cpu-reference, customcpu, gpu)"),
])
def test_bad_options_are_one_line_errors(args, message):
    r = run("--model", "bundled", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_malformed_and_empty_inputs_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [1, 2,')
    r = run("--model", "bundled", "--data", str(bad))
    assert r.returncode == 2 and "is not valid JSON" in r.stderr and "line 1" in r.stderr
    empty_q = tmp_path / "q.json"
    empty_q.write_text(json.dumps({"data": [{"story": "Ada lives in Oslo.", "questions": [{"input_text": "  "}]}]}))
    r = run("--model", "bundled", "--data", str(empty_q))
    assert r.returncode == 2 and "question is whitespace only" in r.stderr
    assert "Traceback" not in r.stderr
    no_q = tmp_path / "story.txt"
    no_q.write_text("Ada lives in Oslo.\nShe reads every evening.\n")
    r = run("--model", "bundled", "--data", str(no_q))
    assert r.returncode == 2 and "has no questions: put each on a line that starts with 'Q:'" in r.stderr
    assert "Traceback" not in r.stderr


def test_incomplete_model_directory_names_the_missing_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    r = run("--model", str(tmp_path))
    assert r.returncode == 2
    assert "missing model.safetensors or pytorch_model.bin" in r.stderr


def test_unreachable_default_model_falls_back_to_the_bundled_one(tmp_path):
    r = run("--questions", "1", env={"HF_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "using the bundled model minilm-l6-squad" in r.stdout and "--model" in r.stdout


def test_help_and_module_entry_point():
    r = run("--help")
    assert r.returncode == 0 and "--target" in r.stdout and "--precision" in r.stdout
    m = subprocess.run([sys.executable, "-m", "bertqa", "--help"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert m.returncode == 0 and "demo" in m.stdout


def test_prepare_saves_a_model_that_the_demo_starts_from(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "bertqa", "prepare", "--model", "bundled", "--out",
                        str(tmp_path / "int8")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "for --target customcpu" in r.stdout and "saved to" in r.stdout
    r = run("--model", str(tmp_path / "int8"), "--questions", "1")
    assert r.returncode == 0, r.stderr
    assert "target:          customcpu" in r.stdout and "precision:       int" in r.stdout
    assert "prepared earlier" in r.stdout and "Margarethe Olsen" in r.stdout
