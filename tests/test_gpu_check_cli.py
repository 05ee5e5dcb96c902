"""The GPU check runs as a module of the bench package, refuses arguments it does not know, and
refuses a dry run it cannot make (Triton's interpreter switched on too late).

Its parity and timings need a CUDA device (or minutes of Triton's interpreter with --dry), so only
the entry point is exercised here; the kernels' integer logic is tested in test_gpu_backend.py."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_as_a_module_and_rejects_unknown_arguments():
    r = subprocess.run([sys.executable, "-m", "bertqa.bench.gpu_check", "--no-such-flag"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "[--dry]" in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("unrecognized arguments: --no-such-flag")
    assert "device:" not in r.stdout            # nothing ran


def test_dry_run_refuses_when_the_kernels_were_imported_before_it():
    """--dry works only if Triton's interpreter is on before the kernels are decorated."""
    pytest.importorskip("triton", reason="the gpu kernels need triton")
    code = ("import runpy, sys; import bertqa.backends.gpu_kernels; sys.argv = ['gpu_check', '--dry']; "
            "runpy.run_module('bertqa.bench.gpu_check', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "gpu_check: error: --dry cannot switch on Triton's interpreter: the gpu kernels were imported "
        "before this module (run it as python -m bertqa.bench.gpu_check --dry)"]
    assert "parity" not in r.stdout
