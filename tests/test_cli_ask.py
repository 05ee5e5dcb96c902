"""`bertqa ask`, `--version`, and the defaults --help shows (in-process)."""
import json

import pytest

from cli_support import run_cli

CONTEXT = "Margarethe Olsen kept the lighthouse on the island for forty years."


cli = run_cli


def test_ask_one_question_about_a_context(capsys):
    code, out, _ = cli(capsys, "ask", "--model", "bundled", "--question", "Who kept the lighthouse?",
                       "--context", CONTEXT)
    assert code == 0 and out.strip() == "Margarethe Olsen"


def test_ask_reads_a_context_file_and_prints_top_k_as_json(tmp_path, capsys):
    path = tmp_path / "story.txt"
    path.write_text(CONTEXT)
    code, out, _ = cli(capsys, "ask", "--model", "bundled", "-q", "For how long?", "--context-file", path,
                       "--top-k", "3", "--json")
    answers = json.loads(out)
    assert code == 0 and len(answers) == 3 and "forty years" in answers[0]["text"]
    assert CONTEXT[answers[0]["start"]:answers[0]["end"]] == answers[0]["text"]


@pytest.mark.parametrize("args, message", [
    (["-q", "Who?"], "one of the arguments --context/-c --context-file is required"),
    (["-q", "Who?", "--context", "x", "--context-file", "f"], "not allowed with argument"),
    (["-q", "Who?", "--context", "   "], "the context is empty"),
    (["-q", "Who?", "--context-file", "/nonexistent.txt"], "does not exist"),
    (["-q", "Who?", "--context", CONTEXT, "--top-k", "0"], "argument --top-k: must be >= 1"),
])
def test_ask_errors_are_one_line(capsys, args, message):
    code, _, err = cli(capsys, "ask", "--model", "bundled", *args)
    assert code == 2 and err.startswith("bertqa: error: ") and err.count("\n") == 1 and message in err


def test_version(capsys):
    from bertqa import __version__
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"bertqa {__version__}"


@pytest.mark.parametrize("command", ["demo", "ask", "eval", "serve", "structure"])
def test_help_shows_the_window_defaults(capsys, command):
    code, out, _ = cli(capsys, command, "--help")
    text = " ".join(out.split())
    assert code == 0
    for option, default in (("--max-seq-len", 384), ("--doc-stride", 128), ("--max-question-len", 64),
                            ("--n-best", 20), ("--batch-size", 16), ("--null-threshold", 0.0)):
        assert option in text and f"(default: {default})" in text, option
    assert "--max-answer-len" in text and "longest answer, in tokens (default: " in text
