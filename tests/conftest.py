"""Shared fixtures: the bundled model (loaded once), paths to ../shared data."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BERTQA_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test saying where it was looked for."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (tests read SQuAD/CoQA data from ../shared/data; "
                    "set BERTQA_SHARED to its parent)")
    return path


@pytest.fixture(scope="session")
def bundled_dir():
    from bertqa.model.loading import BUNDLED_DIR
    return BUNDLED_DIR


@pytest.fixture(scope="session")
def tokenizer(bundled_dir):
    from bertqa.qa.windows import Tokenizer
    return Tokenizer(bundled_dir)


@pytest.fixture(scope="session")
def qa_fp():
    import bertqa
    return bertqa.load(model="bundled", target="cpu", precision="fp")
