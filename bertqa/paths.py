"""Output folders: made where missing, refused with a clear BertQAError where they cannot be."""
from __future__ import annotations

from pathlib import Path

from bertqa.errors import BertQAError


def out_dir(path: str | Path) -> Path:
    """path as a directory that exists (made with its parents if missing); BertQAError if it
    names a file or cannot be made."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise BertQAError(f"{out} exists and is not a directory: name a directory to write into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BertQAError(f"cannot make the directory {out}: {e.strerror or e}") from None
    return out
