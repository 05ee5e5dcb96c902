"""Follow-up questions with the conversation so far: the history modes (bertqa.qa.history)."""
import pytest

from bertqa.qa.decode import Answer
from bertqa.qa.history import answer_with_history, history_text, leaves_open

TURNS = [("Who kept the lighthouse?", "Margarethe"), ("Where?", "on the island")]


def fake_run(scores):
    """run(histories) that records what it was asked and answers with the given score per history."""
    asked = []

    def run(histories):
        asked.append(list(histories))
        return [[Answer("with" if h else "alone", scores[bool(h)], 0, 1)] for h in histories]
    return run, asked


def test_history_text_is_the_last_turns():
    assert history_text(TURNS, 1) == "Where? on the island"
    assert history_text(TURNS, 5) == "Who kept the lighthouse? Margarethe Where? on the island"
    assert history_text(TURNS, 0) == history_text(None, 2) == ""


@pytest.mark.parametrize("question, open_", [
    ("For how long?", True), ("Why?", True), ("What did she do next?", True),
    ("Who built that tower?", True), ("When was the lighthouse on the island built?", False),
    ("What was the name of the keeper's dog?", False),
])
def test_leaves_open(question, open_):
    assert leaves_open(question) is open_


def test_always_prepends_and_open_only_to_open_questions():
    run, asked = fake_run({False: 0.9, True: 0.1})
    assert answer_with_history(run, "When was the lighthouse built?", TURNS, 1, "always")[0].text == "with"
    assert answer_with_history(run, "When was the lighthouse built?", TURNS, 1, "open")[0].text == "alone"
    assert answer_with_history(run, "Why?", TURNS, 1, "open")[0].text == "with"
    assert asked == [["Where? on the island"], [""], ["Where? on the island"]]


@pytest.mark.parametrize("mode", ["best", "open-best"])
def test_best_keeps_the_higher_scoring_answer_from_one_batch(mode):
    for scores, want in [({False: 0.9, True: 0.1}, "alone"), ({False: 0.2, True: 0.7}, "with")]:
        run, asked = fake_run(scores)
        assert answer_with_history(run, "For how long?", TURNS, 2, mode)[0].text == want
        assert asked == [["", history_text(TURNS, 2)]]          # both in one call (one batch)


def test_open_best_asks_a_self_contained_question_alone():
    run, asked = fake_run({False: 0.1, True: 0.9})
    assert answer_with_history(run, "When was the lighthouse built?", TURNS, 2, "open-best")[0].text == "alone"
    assert asked == [[""]]


def test_no_turns_or_zero_turns_ask_alone():
    for turns, last in [(TURNS, 0), ([], 3), (None, 1)]:
        run, asked = fake_run({False: 0.1, True: 0.9})
        assert answer_with_history(run, "Why?", turns, last, "always")[0].text == "alone"
        assert asked == [[""]]
