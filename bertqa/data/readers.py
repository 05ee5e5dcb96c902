"""Stories for the demo: the built-in ones, CoQA JSON, SQuAD JSON, or a plain text file.

Every reader returns a list of Story; a file that cannot be read raises DataError naming the
file and what is wrong with it (the JSON position, or the key that is missing). SQuAD's layout is
read by bertqa.data.squad, the file itself by bertqa.data.files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bertqa.data.files import load_json, need, read_text
from bertqa.data.squad import squad_paragraphs
from bertqa.errors import DataError

BUILTIN = Path(__file__).resolve().parent / "stories.json"


@dataclass
class Story:
    title: str
    context: str
    questions: list[str] = field(default_factory=list)


def builtin_stories() -> list[Story]:
    return read_stories(BUILTIN)


def _stories_from_coqa(data: list, path: Path) -> list[Story]:
    stories = []
    for i, item in enumerate(data):
        where = f"{path}: data[{i}]"
        context = need(item, "story", where, str)
        questions = [q["input_text"] for q in coqa_turns(item, where, "questions")]
        stories.append(Story(item.get("name") or item.get("id") or f"story {i + 1}", context, questions))
    return stories


def coqa_turns(item, where: str, key: str = "questions") -> list[dict]:
    """A CoQA story's `questions` (or `answers`) list, checked and in turn order: each entry an
    object with a string 'input_text' and, where given, an integer 'turn_id' (the official files
    number turns 1, 2, ...); entries without one keep their place."""
    turns, numbered = need(item, key, where, list), []
    for j, turn in enumerate(turns):
        at = f"{where}.{key}[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"{at}: each entry must be an object with 'input_text' "
                            f"(and 'turn_id'), got a {type(turn).__name__}")
        need(turn, "input_text", at, str)
        turn_id = turn.get("turn_id", j + 1)
        if isinstance(turn_id, bool) or not isinstance(turn_id, int):
            raise DataError(f"{at}: 'turn_id' must be an integer (1, 2, ...), got "
                            f"{type(turn_id).__name__} {turn_id!r}")
        numbered.append((turn_id, j, turn))
    return [turn for _, _, turn in sorted(numbered, key=lambda t: t[:2])]


def _stories_from_squad(data: list, path: Path) -> list[Story]:
    return [Story(para.title, para.context,
                  [need(qa, "question", f"{path}: {para.place}.qas[{k}]", str) for k, qa in enumerate(para.qas)])
            for para in squad_paragraphs(data, path)]


def _stories_from_builtin(data: list, path: Path) -> list[Story]:
    return [Story(need(s, "title", f"{path}: stories[{i}]", str), need(s, "context", f"{path}: stories[{i}]", str),
                  list(need(s, "questions", f"{path}: stories[{i}]", list))) for i, s in enumerate(data)]


def _stories_from_text(path: Path) -> list[Story]:
    """Plain text: the story, with questions on lines that start with 'Q:' anywhere in it."""
    lines = read_text(path).splitlines()
    questions = [l.strip()[2:].strip() for l in lines if l.strip().startswith("Q:")]
    context = "\n".join(l for l in lines if not l.strip().startswith("Q:")).strip()
    if not context:
        raise DataError(f"data file {path} has no story text")
    questions = [q for q in questions if q]
    if not questions:
        raise DataError(f"data file {path} has no questions: put each on a line that starts with 'Q:'")
    return [Story(path.stem, context, questions)]


def read_stories(path: str | Path) -> list[Story]:
    """Stories from a CoQA, SQuAD or bertqa JSON file, or a plain text file (.txt or other)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return _stories_from_text(path)
    doc = load_json(path)
    if isinstance(doc, dict) and isinstance(doc.get("stories"), list):
        stories = _stories_from_builtin(doc["stories"], path)
    elif isinstance(doc, dict) and isinstance(doc.get("data"), list):
        data = doc["data"]
        if data and isinstance(data[0], dict) and "story" in data[0]:
            stories = _stories_from_coqa(data, path)
        elif data and isinstance(data[0], dict) and "paragraphs" in data[0]:
            stories = _stories_from_squad(data, path)
        else:
            raise DataError(f"{path}: 'data' holds neither CoQA stories ('story', 'questions') "
                            "nor SQuAD articles ('paragraphs')")
    else:
        raise DataError(f"{path}: not a CoQA or SQuAD file (expected a top-level 'data' list) "
                        "nor a bertqa stories file ('stories' list)")
    if not stories:
        raise DataError(f"{path} holds no stories")
    return stories
