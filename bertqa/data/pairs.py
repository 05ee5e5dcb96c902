"""(id, question, context) pairs for bulk QA, from a SQuAD or CoQA JSON file or a JSONL file.

    SQuAD JSON   every question of every paragraph (bertqa.data.squad: the reader `bertqa
                 eval` scores with; the SquadSet comes back too, for EM/F1)
    CoQA JSON    every turn of every story, each asked alone (no conversation history);
                 id '<story id>:<turn_id>'
    JSONL        one object a line: {"question": ..., "context": ..., "id"?: ...}; the id
                 defaults to the line number

Errors are DataErrors naming the file and the place, as the other readers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bertqa.data.files import load_json, need, read_text
from bertqa.data.squad import squad_set
from bertqa.errors import DataError


@dataclass(frozen=True)
class QAPair:
    id: str
    question: str
    context: str


def _coqa_pairs(data: list, path: Path) -> list[QAPair]:
    pairs = []
    for i, item in enumerate(data):
        where = f"{path}: data[{i}]"
        story = need(item, "story", where, str)
        story_id = str(item.get("id", i)) if isinstance(item, dict) else str(i)
        for j, turn in enumerate(need(item, "questions", where, list)):
            text = need(turn, "input_text", f"{where}.questions[{j}]", str)
            pairs.append(QAPair(f"{story_id}:{turn.get('turn_id', j + 1)}", text, story))
    return pairs


def _jsonl_pairs(path: Path) -> list[QAPair]:
    pairs, seen = [], set()
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not valid JSON: {e.msg} at column {e.colno}") from None
        where = f"{path}: line {n}"
        question, context = need(obj, "question", where, str), need(obj, "context", where, str)
        qid = str(obj.get("id", n))
        if qid in seen:
            raise DataError(f"{where}: id {qid!r} repeats an earlier line's")
        seen.add(qid)
        pairs.append(QAPair(qid, question, context))
    return pairs


def read_pairs(path: str | Path, limit: int | None = None):
    """(pairs in file order, the SquadSet for a SQuAD file else None); the first `limit` pairs."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    squad = None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        pairs = _jsonl_pairs(path)
    else:
        doc = load_json(path)
        data = doc.get("data") if isinstance(doc, dict) else None
        first = data[0] if isinstance(data, list) and data else None
        if isinstance(first, dict) and "paragraphs" in first:
            squad = squad_set(doc, path, limit)
            pairs = [QAPair(q.id, q.question, q.context) for q in squad.questions]
        elif isinstance(first, dict) and "story" in first:
            pairs = _coqa_pairs(data, path)
        else:
            raise DataError(f"{path}: neither a SQuAD file ('data' of articles with 'paragraphs'), "
                            "a CoQA file ('data' of stories with 'story'), nor JSONL (.jsonl)")
    pairs = pairs[:limit]
    if not pairs:
        raise DataError(f"{path} holds no questions")
    return pairs, squad
