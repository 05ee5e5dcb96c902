"""The GPU check runs as a module of the bench package and refuses arguments it does not know.

Its parity and timings need a CUDA device (or minutes of Triton's interpreter with --dry), so only
the entry point is exercised here; the kernels' integer logic is tested in test_gpu_backend.py."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_as_a_module_and_rejects_unknown_arguments():
    r = subprocess.run([sys.executable, "-m", "bertqa.bench.gpu_check", "--no-such-flag"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "[--dry]" in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("unrecognized arguments: --no-such-flag")
    assert "device:" not in r.stdout            # nothing ran
