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


@pytest.fixture(scope="session")
def stories():
    from bertqa.data.readers import builtin_stories
    return builtin_stories()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One `bertqa serve` (a subprocess on loopback) for the HTTP tests that need no special limits."""
    pytest.importorskip("fastapi", reason="bertqa serve needs the serve extra (fastapi, uvicorn)")
    pytest.importorskip("uvicorn", reason="bertqa serve needs the serve extra (fastapi, uvicorn)")
    from serve_support import Server
    srv = Server("--max-batch", "16", "--max-wait-ms", "20", "--max-queue", "256",
                 log_dir=tmp_path_factory.mktemp("serve"))
    yield srv
    code = srv.stop()
    assert code == 0, f"bertqa serve exited with {code}:\n{srv.output()}"


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every `ray` test: 2 CPUs, no dashboard, no usage stats, a 200 MB object
    store, the memory monitor killing workers above 90% of the machine's memory."""
    ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'bertqa[ray]'")
    pytest.importorskip("ray.serve", reason="the Ray tests need the ray extra: pip install 'bertqa[ray]'")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_memory_usage_threshold", "0.9")
    from bertqa import ray_cluster
    ray_cluster.connect(None, "the ray tests", num_cpus=2, object_store_bytes=200 << 20)
    yield ray
    ray.shutdown()
