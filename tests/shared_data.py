"""Where the tests find ../shared/data (the offline SQuAD files, never copied into the repo).

The repository is cloned with shared/ beside it, so the data lies at <repo>/../shared/data;
BERTQA_SHARED=/path/to/shared overrides that. Tests that need a file skip, naming the path,
when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    root = os.environ.get("BERTQA_SHARED")
    shared = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared"
    return shared / "data"


def shared_file(name: str) -> Path:
    path = shared_data_dir() / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (set BERTQA_SHARED to the shared/ folder that holds data/)")
    return path
