"""CoQA files for `bertqa eval`: each turn a question about its story, scored with CoQA's F1.

The official CoQA evaluator (v1.0) scores a turn against its gold answers: the answer of
`answers` and those of each `additional_answers` set. With several gold answers each one is
left out in turn, the prediction takes its best EM/F1 against the others, and the turn scores the
mean of those; with one gold answer, its EM/F1 against it. Answers are normalized as in SQuAD
v1.1 (lower case, no punctuation or articles); an empty answer matches only an empty one.

CoQA's gold answers are free-form: "yes", "no" and "unknown" (the story does not say) are turns
an extractive model can match only by accident, so they are reported apart from the other
(span-like) turns; a turn's kind is its first gold answer's. An empty prediction (the model's
"no answer") counts as "unknown". Turns are asked one by one without the conversation so far
(bertqa eval has no history option), which is what their F1 measures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from bertqa.data.files import load_json, need
from bertqa.data.readers import coqa_turns
from bertqa.data.squad import SquadQuestion, SquadSet, read_predictions, squad_set
from bertqa.errors import DataError
from bertqa.eval.squad_metric import exact_match, f1, normalize_answer

KINDS = ("span", "yes/no", "unknown")


def is_coqa(doc) -> bool:
    """A CoQA file: a 'data' list whose first item has a 'story'."""
    data = doc.get("data") if isinstance(doc, dict) else None
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "story" in data[0]


def turn_kind(gold: str) -> str:
    text = normalize_answer(gold)
    return "yes/no" if text in ("yes", "no") else "unknown" if text == "unknown" else "span"


@dataclass
class CoqaSet(SquadSet):
    """The turns of a CoQA file as questions (id 'story id:turn'); version 'coqa'."""
    kinds: dict[str, str] = field(default_factory=dict)      # question id -> one of KINDS


def _gold_lists(item, where: str, turn_ids: list[int]) -> list[list[str]]:
    """Per turn, the gold answer texts: `answers`, then each `additional_answers` set."""
    sets = [("answers", need(item, "answers", where, list))]
    extra = item.get("additional_answers") or {}
    if not isinstance(extra, dict):
        raise DataError(f"{where}: 'additional_answers' must be an object of answer lists")
    sets += [(f"additional_answers[{k!r}]", v) for k, v in extra.items()]
    golds = [[] for _ in turn_ids]
    for name, answers in sets:
        turns = coqa_turns({name: answers}, where, name)
        ids = [t.get("turn_id", j + 1) for j, t in enumerate(turns)]
        if ids != turn_ids:
            raise DataError(f"{where}: {name} has turns {ids[:5]}{'...' if len(ids) > 5 else ''} "
                            f"but the questions {turn_ids[:5]}{'...' if len(turn_ids) > 5 else ''}")
        for g, turn in zip(golds, turns):
            g.append(turn["input_text"])
    return golds


def coqa_set(doc: dict, path: Path, limit: int | None = None) -> CoqaSet:
    """The turns of a parsed CoQA file in file order (the first `limit` of them, if given)."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    questions, kinds, seen = [], {}, set()
    for i, item in enumerate(doc["data"]):
        where = f"{path}: data[{i}]"
        story = need(item, "story", where, str)
        story_id = str(item.get("id", i))
        turns = coqa_turns(item, where, "questions")
        turn_ids = [t.get("turn_id", j + 1) for j, t in enumerate(turns)]
        for turn, tid, golds in zip(turns, turn_ids, _gold_lists(item, where, turn_ids)):
            qid = f"{story_id}:{tid}"
            if qid in seen:
                raise DataError(f"{where}: turn {tid} of story {story_id!r} repeats")
            seen.add(qid)
            questions.append(SquadQuestion(qid, turn["input_text"], story, tuple(golds)))
            kinds[qid] = turn_kind(golds[0])
            if limit is not None and len(questions) == limit:
                return CoqaSet(path, "coqa", questions, [], kinds)
    if not questions:
        raise DataError(f"{path} holds no CoQA turns")
    return CoqaSet(path, "coqa", questions, [], kinds)


def read_coqa(path: str | Path, limit: int | None = None) -> CoqaSet:
    path = Path(path)
    doc = load_json(path)
    if not is_coqa(doc):
        raise DataError(f"{path}: not a CoQA file (expected a 'data' list of stories with 'story')")
    return coqa_set(doc, path, limit)


def read_eval_file(path: str | Path, limit: int | None = None) -> SquadSet:
    """The questions of a SQuAD v1.1/v2.0 or CoQA file (which one, from its layout)."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    doc = load_json(path)
    return coqa_set(doc, path, limit) if is_coqa(doc) else squad_set(doc, path, limit)


def read_eval_predictions(path: str | Path, data: SquadSet) -> dict[str, str]:
    """A `{question id: answer text}` file; for CoQA also the official predictions list
    [{"id": story id, "turn_id": n, "answer": text}, ...]."""
    path = Path(path)
    if data.version != "coqa":
        return read_predictions(path)
    doc = load_json(path)
    if not isinstance(doc, list):
        return read_predictions(path)
    out = {}
    for i, p in enumerate(doc):
        where = f"{path}: [{i}]"
        story, answer = need(p, "id", where, str), need(p, "answer", where, str)
        turn = need(p, "turn_id", where, int)
        out[f"{story}:{turn}"] = answer
    return out


def turn_score(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one turn, as the official evaluator's _compute_turn_score."""
    assert golds, "a turn needs at least one gold answer"
    if len(golds) == 1:
        return exact_match(prediction, golds[0]), f1(prediction, golds[0], empty_match=True)
    em = f = 0.0
    for i in range(len(golds)):
        others = [g for j, g in enumerate(golds) if j != i]
        em += max(exact_match(prediction, g) for g in others)
        f += max(f1(prediction, g, empty_match=True) for g in others)
    return em / len(golds), f / len(golds)


def score_coqa(predictions: Mapping[str, str], data: CoqaSet) -> dict:
    """{'em', 'f1', 'n', 'missing'} in percent over all turns, and '<kind>_f1' / '<kind>_n' per
    turn kind ('span', 'yes/no', 'unknown'); a turn without a prediction scores 0."""
    per_kind = {k: [] for k in KINDS}
    ems, missing = [], 0
    for q in data.questions:
        if q.id in predictions:
            e, s = turn_score(predictions[q.id] or "unknown", q.answers)
        else:
            e, s, missing = 0.0, 0.0, missing + 1
        ems.append(e)
        per_kind[data.kinds[q.id]].append(s)
    scores = [s for k in KINDS for s in per_kind[k]]
    out = {"em": 100.0 * sum(ems) / len(ems), "f1": 100.0 * sum(scores) / len(scores),
           "n": len(ems), "missing": missing}
    for k in KINDS:
        n = len(per_kind[k])
        out[f"{k}_f1"] = 100.0 * sum(per_kind[k]) / n if n else None
        out[f"{k}_n"] = n
    return out
