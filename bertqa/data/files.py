"""Reading the data files every reader shares: size cap, UTF-8 text, JSON, and checked keys.

Each failure is a one-line DataError naming the file and what is wrong with it: the JSON line and
column for a syntax error, the key path (`data[3].paragraphs[0]`) for a missing or mistyped key.
"""
from __future__ import annotations

import json
from pathlib import Path

from bertqa.errors import DataError

# The largest data file read: SQuAD v2.0 train is 40 MB and CoQA train 49 MB; a JSON file takes
# about twice its size in memory as Python objects, so a much larger one is refused before reading.
MAX_DATA_BYTES = 256 << 20


def _check_size(path: Path) -> None:
    """DataError for a file larger than MAX_DATA_BYTES, from its size alone (nothing read)."""
    try:
        size = path.stat().st_size
    except OSError:
        return                                    # read_text says why it cannot be read
    if path.is_file() and size > MAX_DATA_BYTES:
        raise DataError(f"data file {path} is {size / 2**20:.0f} MiB, more than the "
                        f"{MAX_DATA_BYTES >> 20} MiB a data file may be: split it")


def read_text(path: Path) -> str:
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


def load_json(path: Path):
    """The parsed JSON document of a data file, or DataError with the line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"data file {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise DataError(f"data file {path} nests JSON arrays or objects too deeply to read "
                        "(no QA file nests more than a few levels)") from None


def need(obj, key, where: str, kind=None):
    """obj[key], checked to be there (and of type kind, if given); `where` names the place."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing key {key!r}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise DataError(f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value
