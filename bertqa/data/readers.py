"""Stories for the demo: the built-in ones, CoQA JSON, SQuAD JSON, or a plain text file.

Every reader returns a list of Story; a file that cannot be read raises DataError naming the
file and what is wrong with it (the JSON position, or the key that is missing).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bertqa.errors import DataError

BUILTIN = Path(__file__).resolve().parent / "stories.json"
# The largest data file read: SQuAD v2.0 train is 40 MB and CoQA train 49 MB; a JSON file takes
# about twice its size in memory as Python objects, so a much larger one is refused before reading.
MAX_DATA_BYTES = 256 << 20


@dataclass
class Story:
    title: str
    context: str
    questions: list[str] = field(default_factory=list)


def builtin_stories() -> list[Story]:
    return read_stories(BUILTIN)


def _check_size(path: Path) -> None:
    """DataError for a file larger than MAX_DATA_BYTES, from its size alone (nothing read)."""
    try:
        size = path.stat().st_size
    except OSError:
        return                                    # _read_text says why it cannot be read
    if path.is_file() and size > MAX_DATA_BYTES:
        raise DataError(f"data file {path} is {size / 2**20:.0f} MiB, more than the "
                        f"{MAX_DATA_BYTES >> 20} MiB a data file may be: split it")


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, or DataError saying why not."""
    _check_size(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"data file {path} is a directory") from None
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror or e}") from None


def _load_json(path: Path):
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"data file {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise DataError(f"data file {path} nests JSON arrays or objects too deeply to read "
                        "(no QA file nests more than a few levels)") from None


def _need(obj, key, where: str, kind=None):
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing key {key!r}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise DataError(f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _stories_from_coqa(data: list, path: Path) -> list[Story]:
    stories = []
    for i, item in enumerate(data):
        where = f"{path}: data[{i}]"
        context = _need(item, "story", where, str)
        questions = [q["input_text"] for q in coqa_turns(item, where, "questions")]
        stories.append(Story(item.get("name") or item.get("id") or f"story {i + 1}", context, questions))
    return stories


def coqa_turns(item, where: str, key: str = "questions") -> list[dict]:
    """A CoQA story's `questions` (or `answers`) list, checked and in turn order: each entry an
    object with a string 'input_text' and, where given, an integer 'turn_id' (the official files
    number turns 1, 2, ...); entries without one keep their place."""
    turns, numbered = _need(item, key, where, list), []
    for j, turn in enumerate(turns):
        at = f"{where}.{key}[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"{at}: each entry must be an object with 'input_text' "
                            f"(and 'turn_id'), got a {type(turn).__name__}")
        _need(turn, "input_text", at, str)
        turn_id = turn.get("turn_id", j + 1)
        if isinstance(turn_id, bool) or not isinstance(turn_id, int):
            raise DataError(f"{at}: 'turn_id' must be an integer (1, 2, ...), got "
                            f"{type(turn_id).__name__} {turn_id!r}")
        numbered.append((turn_id, j, turn))
    return [turn for _, _, turn in sorted(numbered, key=lambda t: t[:2])]


def _stories_from_squad(data: list, path: Path) -> list[Story]:
    stories = []
    for i, article in enumerate(data):
        title = article.get("title", f"article {i + 1}") if isinstance(article, dict) else ""
        for j, para in enumerate(_need(article, "paragraphs", f"{path}: data[{i}]", list)):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            context = _need(para, "context", where, str)
            qas = _need(para, "qas", where, list)
            questions = [_need(qa, "question", f"{where}.qas[{k}]", str) for k, qa in enumerate(qas)]
            stories.append(Story(title, context, questions))
    return stories


def _stories_from_builtin(data: list, path: Path) -> list[Story]:
    return [Story(_need(s, "title", f"{path}: stories[{i}]", str), _need(s, "context", f"{path}: stories[{i}]", str),
                  list(_need(s, "questions", f"{path}: stories[{i}]", list))) for i, s in enumerate(data)]


def _stories_from_text(path: Path) -> list[Story]:
    """Plain text: the story, with questions on lines that start with 'Q:' anywhere in it."""
    lines = _read_text(path).splitlines()
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
    doc = _load_json(path)
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
