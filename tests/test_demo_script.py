"""scripts/demo.sh sets up .venv once and then just runs (a stand-in setup.sh and python)."""
import os
import shutil
import subprocess
import time

import pytest

from conftest import REPO


@pytest.fixture
def tree(tmp_path):
    """A copy of demo.sh with a setup.sh that logs each call and makes a .venv/bin/python that
    echoes its arguments."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "csrc").mkdir()
    shutil.copy(REPO / "scripts" / "demo.sh", tmp_path / "scripts" / "demo.sh")
    (tmp_path / "scripts" / "setup.sh").write_text(
        "set -e\ncd \"$(dirname \"$0\")/..\"\necho setup >> setup.log\nmkdir -p .venv/bin\n"
        "printf '#!/bin/sh\\necho ran \"$@\"\\n' > .venv/bin/python\nchmod +x .venv/bin/python\n")
    for name in ("pyproject.toml", "setup.py", "csrc/kernel.cpp"):
        (tmp_path / name).write_text("x")
    return tmp_path


def demo(tree, *args, **env):
    return subprocess.run(["bash", str(tree / "scripts" / "demo.sh"), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def setups(tree) -> int:
    return (tree / "setup.log").read_text().count("setup")


def test_sets_up_once_then_just_runs(tree):
    r = demo(tree)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ran run.py --target customcpu --precision int" and setups(tree) == 1
    r = demo(tree, "--questions", "1")
    assert r.stdout.strip() == "ran run.py --questions 1" and setups(tree) == 1


def test_sets_up_again_when_its_sources_change_or_when_forced(tree):
    demo(tree)
    time.sleep(1.1)                                   # -newer compares mtimes
    (tree / "csrc" / "kernel.cpp").write_text("y")
    demo(tree)
    assert setups(tree) == 2
    demo(tree)
    assert setups(tree) == 2
    demo(tree, FORCE_SETUP="1")
    assert setups(tree) == 3
