"""`bertqa export` and `--target onnx` from the command line: the round trip, one-line errors."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx", reason="export needs the onnx extra")
pytest.importorskip("onnxruntime", reason="--target onnx needs the onnx extra")

REPO = Path(__file__).resolve().parents[1]


def bertqa(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "bertqa", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                                          "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


def one_line_error(r, *needles):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bertqa: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_export_then_demo_on_onnx_target(tmp_path):
    out = tmp_path / "spec"
    r = bertqa("export", "--model", "bundled", "--out", str(out), "--scheme", "spec")
    assert r.returncode == 0, r.stderr
    r = bertqa("demo", "--model", str(out), "--target", "onnx", "--questions", "2")
    assert r.returncode == 0, r.stderr
    assert "target:          onnx" in r.stdout and "Margarethe Olsen" in r.stdout
    one_line_error(bertqa("demo", "--model", str(out), "--onnx-provider", "VitisAIExecutionProvider",
                          "--questions", "1"), "VitisAIExecutionProvider", "installed: ", "CPUExecutionProvider")


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    one_line_error(bertqa("export", "--model", "bundled", "--out", str(tmp_path / "a"), "--scheme", "int4"),
                   "unknown export scheme 'int4'")
    file = tmp_path / "file"
    file.write_text("x")
    one_line_error(bertqa("export", "--model", "bundled", "--out", str(file), "--scheme", "fp32"),
                   "is not a directory")
    notbert = tmp_path / "notbert"
    notbert.mkdir()
    (notbert / "config.json").write_text('{"model_type": "t5"}')
    (notbert / "vocab.txt").write_text("[PAD]\n")
    one_line_error(bertqa("export", "--model", str(notbert), "--out", str(tmp_path / "b"), "--scheme", "fp32"),
                   str(notbert))
    one_line_error(bertqa("export", "--model", "bundled", "--out", str(tmp_path / "c"), "--scheme", "fp32",
                          "--calibrate", "x.json"), "--calibrate")
    one_line_error(bertqa("demo", "--model", "bundled", "--target", "onnx"), "bertqa export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notbert"]
