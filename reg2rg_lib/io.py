"""Small file helpers every stage uses: atomic writes so that no half-written file looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds.

    The temporary file lives in the same folder, so the final `os.replace` is atomic on POSIX file systems.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")
