"""SQuAD scoring as pure functions: the definitions of the official v1.1 and v2.0 evaluators.

An answer is normalized before comparison: lower-cased, ASCII punctuation removed, the articles
a/an/the removed as whole words, whitespace collapsed. Exact match (EM) compares normalized
strings; F1 is the harmonic mean of precision and recall over normalized whitespace tokens
(counted with multiplicity). A question scores the maximum over its gold answers.

The two official scripts differ in three small ways, kept here:
  * v1.1 scores F1 = 0 when both token lists are empty; v2.0 scores 1 (both say "nothing").
  * v2.0 drops gold answers that normalize to nothing; a question left with none is unanswerable
    and its only gold answer is "".
  * v2.0 also reports the HasAns/NoAns splits and the best no-answer threshold (below).
A question without a prediction scores 0 in both (the v2.0 script leaves it out of the total
instead; counting it as wrong cannot flatter a run that skipped questions).
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)        # ASCII only, as the official scripts


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, empty_match: bool = True) -> float:
    """Token F1. When either side normalizes to no tokens: 1.0 if both do and empty_match (v2.0),
    else 0.0 (v1.1 scores two empty answers 0)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(empty_match and pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_gold(prediction: str, golds: Sequence[str], empty_match: bool = True) -> tuple[float, float]:
    """(EM, F1) of one prediction: the maximum over the gold answers (at least one)."""
    assert golds, "a question needs at least one gold answer"
    return (max(exact_match(prediction, g) for g in golds),
            max(f1(prediction, g, empty_match) for g in golds))


def v2_golds(answers: Sequence[str]) -> list[str]:
    """v2.0's gold list: the answers that normalize to something, or [""] (unanswerable)."""
    return [a for a in answers if normalize_answer(a)] or [""]


@dataclass
class Scores:
    """Per question EM and F1 (0/1 and 0..1), in the order of `ids`."""
    ids: list[str]
    em: list[float]
    f1: list[float]
    missing: list[str]          # ids with no prediction (scored 0)

    def summary(self, mask: Sequence[bool] | None = None) -> dict:
        """EM and F1 in percent over the questions where mask is true (default: all), and n."""
        keep = [i for i in range(len(self.ids)) if mask is None or mask[i]]
        n = len(keep)
        return {"em": 100.0 * sum(self.em[i] for i in keep) / n if n else 0.0,
                "f1": 100.0 * sum(self.f1[i] for i in keep) / n if n else 0.0, "n": n}


def score_questions(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]],
                    empty_match: bool) -> Scores:
    ids, em, f, missing = [], [], [], []
    for qid, gold in golds.items():
        ids.append(qid)
        if qid not in predictions:
            missing.append(qid)
            em.append(0.0)
            f.append(0.0)
            continue
        e, s = best_over_gold(predictions[qid], gold, empty_match)
        em.append(e)
        f.append(s)
    return Scores(ids, em, f, missing)


def score_v1(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict:
    """v1.1: {'em', 'f1' (percent), 'n', 'missing'}; golds: question id -> gold answer texts."""
    scores = score_questions(predictions, golds, empty_match=False)
    return {**scores.summary(), "missing": len(scores.missing)}


def best_threshold(correct: Sequence[float], na_scores: Sequence[float],
                   has_answer: Sequence[bool]) -> tuple[float, float]:
    """The no-answer threshold t that maximizes the total score when a question is answered "" if
    its na_score > t, and that total in percent: -> (score, t).

    correct: each question's score (EM or F1) for its answer as predicted. Starting from "nothing
    answered" (t = -inf: every NoAns question right, every HasAns one wrong), questions are let
    through in increasing na_score and the total moves from 1 (NoAns) or 0 (HasAns) to their
    score as predicted. Questions with equal na_score pass together, so every reported threshold
    can be realized (the official script lets them through one at a time). One more deviation
    from the official script: a NoAns question whose prediction normalizes to nothing (".")
    keeps its point when let through, as its score says it should."""
    n = len(correct)
    if n == 0:
        return 0.0, -math.inf
    order = sorted(range(n), key=lambda i: na_scores[i])
    total = best = float(sum(not h for h in has_answer))
    best_t = -math.inf
    for pos, i in enumerate(order):
        total += correct[i] - (0.0 if has_answer[i] else 1.0)
        last_of_tie = pos + 1 == n or na_scores[order[pos + 1]] != na_scores[i]
        if last_of_tie and total > best:
            best, best_t = total, na_scores[i]
    return 100.0 * best / n, best_t


def score_v2(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]],
             na_scores: Mapping[str, float] | None = None) -> dict:
    """v2.0: overall EM/F1, the HasAns and NoAns splits, and the best thresholds on na_scores
    (question id -> "no answer" score, higher = more likely unanswerable; default 0 for all,
    as the official script without a na-prob file). answers: question id -> gold texts (may be
    empty for an unanswerable question)."""
    golds = {qid: v2_golds(a) for qid, a in answers.items()}
    scores = score_questions(predictions, golds, empty_match=True)
    has = [golds[qid] != [""] for qid in scores.ids]
    out = {**scores.summary(), "missing": len(scores.missing)}
    for name, keep in (("has_ans", True), ("no_ans", False)):
        split = scores.summary([h == keep for h in has])
        out.update({f"{name}_{k}": v for k, v in split.items()})
    na = [float((na_scores or {}).get(qid, 0.0)) for qid in scores.ids]
    out["best_em"], out["best_em_threshold"] = best_threshold(scores.em, na, has)
    out["best_f1"], out["best_f1_threshold"] = best_threshold(scores.f1, na, has)
    return out
