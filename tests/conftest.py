"""Shared fixtures (the bundled model, loaded once; paths to ../shared data) and the test tiers.

Every test file has one tier in TIERS below (a test may be moved to another tier by name):

    unit    no backend beyond the pure-PyTorch reference on tiny models, no model preparation of
            more than a second (the bundled model on cpu fp), no subprocess or server: seconds
    parity  numerics against a reference: every backend against the int8 reference (docs/quantization.md), the
            host kernels, model families and exported graphs against their references
    e2e     bertqa through a prepared target: the CLI (subprocess or in-process), HTTP servers, a
            browser, whole QA runs on the bundled model
    ray     the ray extra (most start a local Ray cluster): minutes

    python -m pytest -m unit                     # the fast tier
    python -m pytest -m "not ray"                # all but Ray
    python -m pytest -q                          # everything (CI)

A test file missing from TIERS is a usage error, so that a new file chooses its tier. Under `-m`
with tier names only, files none of whose tests can be selected are not even imported.
"""
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BERTQA_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
TESTS = Path(__file__).resolve().parent

# tier -> test files (or "file::test" to move one test of a file listed elsewhere)
TIERS = {
    "unit": [
        "test_answer_options.py", "test_bad_inputs.py", "test_decode.py", "test_decode_sweep.py",
        "test_doc_links.py", "test_eval_data.py", "test_eval_metric.py", "test_eval_profile.py",
        "test_history.py", "test_loading.py", "test_pairs.py", "test_quant_reference.py",
        "test_quant_swap.py", "test_seams.py", "test_serve_unit.py", "test_streaming.py",
        "test_targets.py", "test_tiers.py", "test_tokenizer_kinds.py", "test_windows.py",
    ],
    "parity": [
        "test_aie.py", "test_attention.py", "test_attention_fp32.py", "test_backend_parity.py", "test_calibration.py",
        "test_customcpu.py", "test_customcpu_smooth.py", "test_export_spec.py", "test_families.py",
        "test_gpu_backend.py", "test_model_parity.py", "test_native_threads.py", "test_packed_batches.py",
        "test_toy_backend.py",
    ],
    "e2e": [
        "test_batch_invariance.py", "test_batch_padding.py", "test_bench.py", "test_bench_callers.py", "test_bench_peers.py",
        "test_cli.py", "test_cli_answers.py", "test_cli_ask.py", "test_demo_script.py",
        "test_eval_cli.py", "test_eval_interleave.py", "test_export.py", "test_export_cli.py",
        "test_gpu_check_cli.py", "test_pipeline.py", "test_saved.py", "test_serve_abuse.py",
        "test_serve_fuzz.py", "test_serve_http.py", "test_serve_limits.py", "test_serve_page.py",
        "test_structure.py",
        # whole runs on a prepared model inside unit files
        "test_eval_profile.py::test_profile_warms_up_and_names_the_kernels_that_run",
        "test_serve_unit.py::test_batcher_answers_each_request_with_its_own_options",
        "test_serve_unit.py::test_two_workers_give_the_answers_of_one",
        "test_serve_unit.py::test_a_batch_leaves_at_once_while_another_worker_is_idle",
        "test_streaming.py::test_bundled_model_streams_to_the_same_answers",
    ],
    "ray": ["test_ray_batch.py", "test_ray_bench.py", "test_ray_serve.py", "test_ray_unit.py"],
}


def _tier_tables():
    """(file -> tier, (file, test) -> tier), checked: each file once, every entry still there."""
    files, tests = {}, {}
    for tier, entries in TIERS.items():
        for entry in entries:
            name, _, test = entry.partition("::")
            path = TESTS / name
            if not path.is_file():
                raise pytest.UsageError(f"TIERS in tests/conftest.py lists {entry}, but there is no {path}")
            if test:
                if not re.search(rf"^\s*(async )?def {re.escape(test)}\(", path.read_text(), re.M):
                    raise pytest.UsageError(f"TIERS in tests/conftest.py lists {entry}, but {name} "
                                            f"defines no {test}")
                tests[name, test] = tier
            elif name in files:
                raise pytest.UsageError(f"TIERS in tests/conftest.py lists {name} under both "
                                        f"{files[name]!r} and {tier!r}")
            else:
                files[name] = tier
    return files, tests


FILE_TIER: dict[str, str] = {}
TEST_TIER: dict[tuple[str, str], str] = {}


def pytest_configure(config):
    files, tests = _tier_tables()
    FILE_TIER.update(files)
    TEST_TIER.update(tests)


def _selected_by(markexpr: str, tiers: set[str]) -> bool | None:
    """Whether `-m markexpr` can select a test of one of `tiers`; None when markexpr names more
    than tier names (then only pytest can tell)."""
    words = set(re.findall(r"[A-Za-z_]\w*", markexpr)) - {"and", "or", "not"}
    if not words or not words <= set(TIERS) or not re.fullmatch(r"[\w\s()]*", markexpr):
        return None
    try:                                       # and/or/not over tier names: Python's own syntax
        return any(bool(eval(markexpr, {"__builtins__": {}}, {t: t == tier for t in TIERS}))
                   for tier in tiers)
    except SyntaxError:
        return None                            # pytest reports the bad expression itself


def pytest_ignore_collect(collection_path, config):
    """Skip importing a tier-listed file that the `-m` expression leaves without a test."""
    markexpr = config.getoption("markexpr", "")
    name = collection_path.name
    if not markexpr or collection_path.parent != TESTS or name not in FILE_TIER:
        return None
    tiers = {FILE_TIER[name]} | {t for (f, _), t in TEST_TIER.items() if f == name}
    return True if _selected_by(markexpr, tiers) is False else None


def tier_of(name: str, test: str) -> str:
    """The tier of test function `test` of tests/`name`: its own entry, else its file's."""
    if name not in FILE_TIER:
        raise pytest.UsageError(f"tests/{name} has no tier: add it to TIERS in tests/conftest.py")
    return TEST_TIER.get((name, test), FILE_TIER[name])


@pytest.hookimpl(tryfirst=True)                # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if path.parent != TESTS:
            continue
        tier = tier_of(path.name, getattr(item, "originalname", item.name))
        own = {m.name for m in item.iter_markers() if m.name in TIERS} - {tier}
        if own:
            raise pytest.UsageError(f"{item.nodeid} is marked {', '.join(sorted(own))} but TIERS in "
                                    f"tests/conftest.py puts it in {tier!r}: keep the tier there only")
        item.add_marker(tier)


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
