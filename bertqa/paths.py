"""Output folders: made where missing, refused with a clear BertQAError where they cannot be."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def out_dir_undone_on_error(path: str | Path) -> Iterator[Path]:
    """out_dir(path) for one piece of work: if the work fails, the folders made here (and what the
    failed work wrote into them) are removed, so that no empty or half-written output stays behind.
    A folder that existed before is left as it was."""
    out = Path(path).expanduser()
    made = None                                    # the outermost folder that does not exist yet
    for folder in (out, *out.parents):
        if folder.exists():
            break
        made = folder
    result = out_dir(out)
    try:
        yield result
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
