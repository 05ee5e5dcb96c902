"""The answer options on the command line: --no-align-to-words, --history-mode, the help's costs."""
import json

from cli_support import run_cli
from bertqa.qa.decode import Words

STORY = ("The lighthouse keeper was called Margarethe Olsen. She lived there from 1911 to 1952 "
         "with her dog Rex.")


cli = run_cli


def test_ask_top_k_is_aligned_to_words_unless_turned_off(capsys):
    args = ["ask", "--model", "bundled", "-q", "Who was the lighthouse keeper?", "--context", STORY,
            "--top-k", "5", "--json"]
    words = Words(STORY)
    code, out, _ = cli(capsys, *args)
    assert code == 0 and not any(words.cuts_a_word(a["start"], a["end"]) for a in json.loads(out))
    code, out, _ = cli(capsys, *args, "--no-align-to-words")
    assert code == 0 and "Margaret" in [a["text"] for a in json.loads(out)]


def test_demo_help_says_what_history_costs(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")                  # no line wrapping inside the words
    code, out, _ = cli(capsys, "demo", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "It costs F1" in text and "default: 0, each question alone" in text
    assert "--history-mode {always,open,best,open-best}" in text and "(default: open-best)" in text


def test_demo_refuses_an_unknown_history_mode(capsys):
    code, _, err = cli(capsys, "demo", "--history", "1", "--history-mode", "sometimes")
    assert code == 2 and "invalid choice: 'sometimes'" in err
