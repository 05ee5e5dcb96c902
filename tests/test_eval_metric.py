"""The SQuAD metric: normalization, EM/F1 edge cases, v1.1 oracle figures, v2.0 no-answer scoring."""
import json
import math

import pytest

from bertqa.data.squad import read_predictions, read_squad
from bertqa.eval.squad_metric import (best_threshold, exact_match, f1, normalize_answer, score_v1,
                                      score_v2)
from conftest import shared_file


@pytest.mark.parametrize("text, normalized", [
    ("The Beatles", "beatles"),
    ("An apple, a day!", "apple day"),
    ("theatre Athens", "theatre athens"),            # articles only as whole words
    ("A-ha", "aha"),                                 # punctuation goes first, then articles
    ("  many\t\nspaces\u00a0here ", "many spaces here"),
    ("...!?", ""),
    ("Café ÉCOLE", "café école"),
    ("“quoted” — text", "“quoted” — text"),          # only ASCII punctuation is removed
    ("Straße", "straße"),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_compares_normalized_text():
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("école", "École") == 1.0
    assert exact_match("ecole", "école") == 0.0      # accents are not stripped


def test_f1_counts_tokens_with_multiplicity():
    assert f1("the cat sat", "cat sat on mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert f1("red red red", "red car") == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert f1("blue", "red car") == 0.0
    assert f1("Zürich city", "zürich") == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_empty_and_punctuation_only_answers():
    assert exact_match("", "") == 1.0
    assert exact_match("!!", "?") == 1.0             # both normalize to nothing
    assert f1("", "", empty_match=True) == 1.0       # v2.0: both say "no answer"
    assert f1("", "", empty_match=False) == 0.0      # v1.1 scores it 0
    assert f1("...", "Paris") == 0.0
    assert f1("Paris", "") == 0.0
    assert exact_match("", "Paris") == 0.0


def test_v1_max_over_gold_and_missing_predictions():
    golds = {"q1": ("Denver Broncos", "Broncos"), "q2": ("1956",), "q3": ("red car",)}
    out = score_v1({"q1": "broncos", "q2": "in 1956"}, golds)
    assert out["n"] == 3 and out["missing"] == 1
    assert out["em"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 * 0.5 * 1 / 1.5) / 3)


def test_v1_oracle_bert_large_ensemble():
    """The official leaderboard predictions on the 16 eval articles: EM 85.474, F1 92.002."""
    data = read_squad(shared_file("squad-v1.1-dev-eval.json"))
    preds = read_predictions(shared_file("squad-v1.1-dev-eval.predictions.bert-large-ensemble.json"))
    out = score_v1(preds, data.golds)
    assert data.version == "1.1" and out["n"] == 3442 and out["missing"] == 0
    assert round(out["em"], 3) == 85.474
    assert round(out["f1"], 3) == 92.002


def write_v2(path):
    """Two answerable and two unanswerable questions, v2.0 layout."""
    qas = [{"id": "q1", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}],
            "is_impossible": False},
           {"id": "q2", "question": "What car?", "answers": [{"text": "the red car", "answer_start": 10}],
            "is_impossible": False},
           {"id": "q3", "question": "Who?", "answers": [], "is_impossible": True},
           {"id": "q4", "question": "Colour?", "answers": [], "is_impossible": True}]
    doc = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "Paris has the red car.", "qas": qas}]}]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_v2_splits_and_best_thresholds(tmp_path):
    data = read_squad(write_v2(tmp_path / "v2.json"))
    assert data.version == "2.0" and [q.is_impossible for q in data.questions] == [False, False, True, True]
    preds = {"q1": "Paris", "q2": "red", "q3": "", "q4": "blue"}
    na = {"q1": -5.0, "q2": 1.0, "q3": 3.0, "q4": 2.0}
    out = score_v2(preds, data.golds, na)
    two_thirds = 2 * 1.0 * 0.5 / 1.5
    assert out["em"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (1 + two_thirds + 1 + 0) / 4)
    assert (out["has_ans_n"], out["no_ans_n"]) == (2, 2)
    assert out["has_ans_em"] == pytest.approx(50.0)
    assert out["has_ans_f1"] == pytest.approx(100 * (1 + two_thirds) / 2)
    assert out["no_ans_em"] == pytest.approx(50.0) and out["no_ans_f1"] == pytest.approx(50.0)
    # answering only q1 (t = -5): q1, q3, q4 right; also answering q2 (t = 1) adds its F1 2/3
    assert (out["best_em"], out["best_em_threshold"]) == (pytest.approx(75.0), -5.0)
    assert (out["best_f1"], out["best_f1_threshold"]) == (pytest.approx(100 * (3 + two_thirds) / 4), 1.0)


def test_v2_without_na_scores_and_empty_gold_texts():
    # a gold answer that normalizes to nothing makes the question unanswerable in v2.0
    out = score_v2({"a": "", "b": "x"}, {"a": (".",), "b": ("x",)})
    assert out["em"] == 100.0 and out["no_ans_n"] == 1 and out["has_ans_n"] == 1
    assert out["best_f1"] == 100.0


def test_best_threshold_lets_ties_through_together():
    # one right HasAns and one wrongly answered NoAns share na 0.5: passing both gains nothing
    score, t = best_threshold([1.0, 0.0], [0.5, 0.5], [True, False])
    assert (score, t) == (50.0, -math.inf)
    score, t = best_threshold([1.0, 0.0], [0.4, 0.5], [True, False])
    assert (score, t) == (100.0, 0.4)
    assert best_threshold([], [], []) == (0.0, -math.inf)
