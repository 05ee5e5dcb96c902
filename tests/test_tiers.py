"""The test tiers of tests/conftest.py: every file has one, `-m` with tier names skips importing
files it cannot select, and the unit tier starts no subprocess, server or browser."""
import re

import pytest

from conftest import FILE_TIER, TESTS, TIERS, _selected_by, tier_of

FAST = "not e2e and not parity and not ray"


def test_every_test_file_has_exactly_one_tier():
    files = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert sorted(FILE_TIER) == files
    assert set(FILE_TIER.values()) <= set(TIERS)


def test_a_test_moved_by_name_leaves_its_files_tier():
    assert tier_of("test_streaming.py", "test_bundled_model_streams_to_the_same_answers") == "e2e"
    assert tier_of("test_streaming.py", "test_hf_names_map_back_to_the_same_model") == "unit"
    with pytest.raises(pytest.UsageError, match=r"tests/test_new\.py has no tier: add it to TIERS"):
        tier_of("test_new.py", "test_anything")


def test_this_test_carries_its_tier_marker(request):
    assert request.node.get_closest_marker("unit") is not None
    assert not any(request.node.get_closest_marker(t) for t in TIERS if t != "unit")


@pytest.mark.parametrize("expr, tiers, selected", [
    ("unit", {"unit"}, True),
    ("unit", {"e2e"}, False),
    ("unit", {"unit", "e2e"}, True),            # a unit file with one test moved to e2e
    (FAST, {"unit"}, True),
    (FAST, {"parity"}, False),
    ("not ray", {"ray"}, False),
    ("(e2e or parity) and not unit", {"parity"}, True),
    ("unit and not slow", {"e2e"}, None),       # another marker: only pytest can tell
    ("unit or __import__", {"e2e"}, None),
    ("unit unit", {"unit"}, None),              # not an expression: pytest says so
])
def test_mark_expressions_over_tier_names(expr, tiers, selected):
    assert _selected_by(expr, tiers) is selected


def test_unit_files_start_no_subprocess_server_or_browser():
    """A textual check of the unit files (this one aside, which spells the patterns out)."""
    starts = re.compile(r"\bsubprocess\b|\bPopen\b|serve_support|playwright|\bray_local\b"
                        r"|def test_\w+\([^)]*\bserver\b")
    offenders = [name for name, tier in FILE_TIER.items() if tier == "unit" and name != "test_tiers.py"
                 and starts.search((TESTS / name).read_text())]
    assert offenders == []
