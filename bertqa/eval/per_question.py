"""`bertqa eval --predictions-out`: every question's answer from every configuration, scored.

One JSON document: the data file, the configurations in report order, and per question its id,
text, gold answers (and CoQA turn kind) and, per configuration, the answer text, its EM and F1
(0/1 and 0..1, the file's own metric: SQuAD v1.1, v2.0 or CoQA), the latency in ms and, for
SQuAD v2.0, the no-answer score. `{id: text}` of one configuration is what `--predictions` reads.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from bertqa.eval.squad_metric import best_over_gold, v2_golds


def question_score(prediction: str, golds: Sequence[str], version: str) -> tuple[float, float]:
    """(EM, F1) of one answer under the metric of the file's version ('1.1', '2.0', 'coqa')."""
    if version == "coqa":
        from bertqa.eval.coqa import turn_score
        return turn_score(prediction or "unknown", golds)
    if version == "2.0":
        return best_over_gold(prediction, v2_golds(golds), empty_match=True)
    return best_over_gold(prediction, golds, empty_match=False) if golds else (math.nan, math.nan)


def per_question_rows(runs, data) -> list[dict]:
    rows = []
    for i, q in enumerate(data.questions):
        row = {"id": q.id, "question": q.question, "gold": list(q.answers)}
        kinds = getattr(data, "kinds", None)
        if kinds:
            row["kind"] = kinds[q.id]
        answers = {}
        for run in runs:
            text = run.predictions.get(q.id)
            if text is None:
                answers[run.label] = None
                continue
            em, f1 = question_score(text, q.answers, data.version)
            entry = {"text": text, "em": None if math.isnan(em) else em,
                     "f1": None if math.isnan(f1) else round(f1, 4)}
            if i < len(run.latencies_ms):
                entry["ms"] = round(run.latencies_ms[i], 2)
            if q.id in run.na_scores and math.isfinite(run.na_scores[q.id]):
                entry["no_answer_score"] = round(run.na_scores[q.id], 4)
            answers[run.label] = entry
        row["answers"] = answers
        rows.append(row)
    return rows


def write_per_question(path: str | Path, runs, data) -> None:
    doc = {"data": Path(data.path).name, "version": data.version,
           "configurations": [run.label for run in runs], "questions": per_question_rows(runs, data)}
    Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
