"""SQuAD v1.1 / v2.0 JSON: its paragraphs (what the demo reads as stories), its questions with
their gold answers (what `bertqa eval` scores), and `{question id: answer text}` prediction files.

A file that cannot be used raises DataError naming the file and the place: the JSON line and
column for a syntax error, the key path (`data[3].paragraphs[0].qas[7]`) for a missing or
mistyped key. A v1.1 question without a gold answer is kept and listed in `no_gold`, so the
caller can report it instead of scoring it silently one way or the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from bertqa.data.files import load_json, need
from bertqa.errors import DataError


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]          # gold texts, as in the file (v2.0: empty if unanswerable)
    is_impossible: bool = False


@dataclass
class SquadSet:
    path: Path
    version: str                                   # "1.1" or "2.0"
    questions: list[SquadQuestion]
    no_gold: list[str] = field(default_factory=list)   # v1.1 ids without a gold answer

    @property
    def golds(self) -> dict[str, tuple[str, ...]]:
        """Question id -> gold texts, in file order (what the metric functions take)."""
        return {q.id: q.answers for q in self.questions}


class Paragraph(NamedTuple):
    title: str
    context: str
    qas: list                 # the paragraph's question entries, unchecked
    place: str                # "data[3].paragraphs[0]"


def squad_paragraphs(data: list, path: Path) -> Iterator[Paragraph]:
    """The paragraphs of a SQuAD file's 'data' list in file order, each checked for its 'context'
    and 'qas' when it is reached (so a reader that stops early checks no further)."""
    for i, article in enumerate(data):
        title = article.get("title", f"article {i + 1}") if isinstance(article, dict) else ""
        for j, para in enumerate(need(article, "paragraphs", f"{path}: data[{i}]", list)):
            place = f"data[{i}].paragraphs[{j}]"
            where = f"{path}: {place}"
            context = need(para, "context", where, str)
            yield Paragraph(title, context, need(para, "qas", where, list), place)


def squad_version(doc: dict) -> str:
    """ "2.0" when the file says so or any question carries 'is_impossible', else "1.1"."""
    if str(doc.get("version", "")).lstrip("v").startswith("2"):
        return "2.0"
    for article in doc["data"]:
        for para in article.get("paragraphs", []) if isinstance(article, dict) else []:
            for qa in para.get("qas", []) if isinstance(para, dict) else []:
                if isinstance(qa, dict) and "is_impossible" in qa:
                    return "2.0"
    return "1.1"


def _question(qa, context: str, where: str, version: str) -> SquadQuestion:
    qid = need(qa, "id", where, str)
    text = need(qa, "question", where, str)
    answers = need(qa, "answers", where, list)
    golds = tuple(need(a, "text", f"{where}.answers[{k}]", str) for k, a in enumerate(answers))
    impossible = bool(qa.get("is_impossible", False)) if version == "2.0" else False
    if impossible and golds:
        raise DataError(f"{where}: question {qid!r} is_impossible but has {len(golds)} answers")
    return SquadQuestion(qid, text, context, golds, impossible)


def read_squad(path: str | Path, limit: int | None = None) -> SquadSet:
    """The questions of a SQuAD file in file order (the first `limit` of them, if given)."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    return squad_set(load_json(path), path, limit)


def squad_set(doc, path: Path, limit: int | None = None) -> SquadSet:
    """read_squad for a file already parsed (doc) from path."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: not a SQuAD file (expected a top-level 'data' list of articles)")
    version = squad_version(doc)
    questions, seen = [], {}
    for para in squad_paragraphs(doc["data"], path):
        for k, qa in enumerate(para.qas):
            at = f"{para.place}.qas[{k}]"
            q = _question(qa, para.context, f"{path}: {at}", version)
            if q.id in seen:
                raise DataError(f"{path}: {at}: question id {q.id!r} repeats {seen[q.id]}")
            seen[q.id] = at
            questions.append(q)
            if limit is not None and len(questions) == limit:
                return _finish(path, version, questions)
    return _finish(path, version, questions)


def _finish(path: Path, version: str, questions: list[SquadQuestion]) -> SquadSet:
    if not questions:
        raise DataError(f"{path} holds no questions")
    no_gold = [q.id for q in questions if version == "1.1" and not q.answers]
    return SquadSet(path, version, questions, no_gold)


def read_predictions(path: str | Path) -> dict[str, str]:
    """A `{question id: answer text}` JSON object, as the official scripts take."""
    path = Path(path)
    doc = load_json(path)
    if not isinstance(doc, dict):
        raise DataError(f"{path}: predictions must be a JSON object {{question id: answer text}}, "
                        f"got a {type(doc).__name__}")
    for qid, text in doc.items():
        if not isinstance(text, str):
            raise DataError(f"{path}: the prediction for {qid!r} must be a string, got {type(text).__name__}")
    return doc
