"""Small helpers every stage uses: atomic writes so that no half-written file looks complete, a crash-safe
append-only CSV, and the switch that shows the kit's INFO messages (CLI and notebooks)."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any, TextIO


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


def write_csv_atomic(target: str | os.PathLike[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]],
                     lineterminator: str = "\r\n") -> Path:
    """Write a header and `rows` (keys outside `columns` ignored) to `target` atomically, UTF-8.

    `lineterminator` is the csv module's default unless a file format fixes another (the predictions CSV: "\n")."""
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator=lineterminator)
        writer.writeheader()
        writer.writerows(rows)
    return Path(target)


def read_complete_csv(path: str | os.PathLike[str]) -> tuple[list[str] | None, list[dict[str, str]]]:
    """(header, rows) of a CSV that `AppendOnlyCSV` may have been writing when a crash cut it short.

    A row is complete once its line terminator is written: a last row without one, or with a quoted field left
    open, is left out, as is any row with the wrong number of fields. A file without a complete header line gives
    (None, []); a header the csv module cannot parse raises `csv.Error`."""
    text = Path(path).read_text(encoding="utf-8")
    if "\n" not in text:  # empty, or a header that never finished
        return None, []
    reader = csv.reader(StringIO(text))
    header = next(reader, [])
    records = []
    try:
        records.extend(reader)
    except csv.Error:  # an unterminated quoted field at the end: the crash cut it
        pass
    if records and not text.endswith("\n"):
        records.pop()  # every row ends with a newline; one without it never finished
    return header, [dict(zip(header, r)) for r in records if len(r) == len(header)]


class AppendOnlyCSV:
    """A CSV file written one row at a time so that a crash loses at most the row being written.

    Opening rewrites the file atomically with the header and the complete `rows` the caller keeps (those read
    back with `read_complete_csv`, perhaps filtered), then appends: each `write` adds one row and flushes it, and
    with `fsync` also forces it to disk (one row per generated report is worth it; one per training step is
    not)."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]] = (),
                 *, lineterminator: str = "\r\n", fsync: bool = False) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.fsync = fsync
        write_csv_atomic(self.path, self.columns, rows, lineterminator)
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator=lineterminator)

    def write(self, values: Sequence[Any]) -> None:
        """Append one row, `values` in the order of `columns`."""
        self._writer.writerow(values)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AppendOnlyCSV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StdoutHandler(logging.StreamHandler):
    """A `%(message)s` handler that writes to whatever `sys.stdout` is when a message is emitted (a notebook
    kernel or a test's capture may replace it after the handler was made), where `print` used to write."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def enable_logging(level: int = logging.INFO) -> logging.Logger:
    """Show the `reg2rg_lib` logger tree's messages at `level` and above as plain lines on stdout.

    The library only logs; the CLI's `main` and the notebooks call this once so that their users see the progress
    messages. Idempotent: calling it again only changes the level."""
    logger = logging.getLogger("reg2rg_lib")
    logger.setLevel(level)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
    return logger
