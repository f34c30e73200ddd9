"""Small helpers every stage uses: atomic writes so that no half-written file looks complete, a crash-safe
append-only CSV, a full disk reported in one line that says what was kept (`DiskFullError`), one writer per
output folder (`folder_lock`, `one_writer`: re-exported from `reg2rg_lib.folder_lock`), and the switch that
shows the kit's INFO messages (CLI and notebooks)."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any, TextIO

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.folder_lock import LOCK_NAME as LOCK_NAME  # re-exported: the stages import the lock from here
from reg2rg_lib.folder_lock import FolderBusyError as FolderBusyError
from reg2rg_lib.folder_lock import folder_lock as folder_lock
from reg2rg_lib.folder_lock import lock_holder as lock_holder
from reg2rg_lib.folder_lock import make_folder as make_folder
from reg2rg_lib.folder_lock import one_writer as one_writer


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds.

    The temporary file lives in the same folder, so the final `os.replace` is atomic on POSIX file systems. A
    full disk (here or in the block) raises `DiskFullError` naming `target`; the temporary file is removed and
    the previous `target`, if any, is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = (
        f"the previous {target.name} is unchanged"
        if target.exists()
        else f"no partial {target.name} was left"
    )
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    except OSError as err:
        raise write_failed(target, err, kept) from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except Exception as exc:  # safetensors and torch report a full disk in their own exception types
        err = write_error(exc)
        if err is not None and err.errno in DISK_FULL:
            raise write_failed(target, err, kept) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder next to `target`; it replaces `target` (an older one is removed) only
    if the block succeeds, else it is deleted: a reader never sees a half-written folder (a tokenizer, a
    converted LLM)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def rewrite_block(target: str | os.PathLike[str], start: str, end: str, body: str) -> Path:
    """Replace the lines between the marker lines `start` and `end` in the text file `target` by `body`
    (markers kept; the rest of the file as it was), atomically. A file without the markers is refused."""
    target = Path(target)
    text = target.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise BadInputError(target, f"no generated block: add the lines {start} and {end} where it goes")
    return write_text_atomic(target, pattern.sub(lambda _: f"{start}\n{body.strip()}\n{end}", text, count=1))


def write_json_atomic(target: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def write_csv_atomic(
    target: str | os.PathLike[str],
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    lineterminator: str = "\r\n",
) -> Path:
    """Write a header and `rows` (keys outside `columns` ignored) to `target` atomically, UTF-8.

    `lineterminator` is the csv module's default unless a file format fixes another (the predictions CSV:
    "\n")."""
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(
            f, fieldnames=list(columns), extrasaction="ignore", lineterminator=lineterminator
        )
        writer.writeheader()
        writer.writerows(rows)
    return Path(target)


def read_complete_csv(path: str | os.PathLike[str]) -> tuple[list[str] | None, list[dict[str, str]]]:
    """(header, rows) of a CSV that `AppendOnlyCSV` may have been writing when a crash cut it short.

    A row is complete once its line terminator is written: a last row without one, or with a quoted field left
    open, is left out, as is any row with the wrong number of fields. A file without a complete header line
    gives (None, []); a header the csv module cannot parse raises `csv.Error`."""
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
    back with `read_complete_csv`, perhaps filtered), then appends: each `write` adds one row and flushes it,
    and with `fsync` also forces it to disk (one row per generated report is worth it; one per training step
    is not)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str],
        rows: Iterable[Mapping[str, Any]] = (),
        *,
        lineterminator: str = "\r\n",
        fsync: bool = False,
    ) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.fsync = fsync
        self.rows = 0  # complete rows in the file
        rows = list(rows)
        write_csv_atomic(self.path, self.columns, rows, lineterminator)
        self.rows = len(rows)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._buf = StringIO()
        self._writer = csv.writer(self._buf, lineterminator=lineterminator)

    def write(self, values: Sequence[Any]) -> None:
        """Append one row, `values` in the order of `columns` (unbuffered: nothing waits in memory). A full
        disk raises `DiskFullError`: the rows before stay complete, and a rerun drops the cut one."""
        self.write_rows([values])

    def write_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append several rows with one write (and one `fsync`): a batch of generated reports costs one sync,
        not one per report. A crash mid-write can cut only the last row, which `read_complete_csv` drops."""
        if not rows:
            return
        self._buf.seek(0)
        self._buf.truncate()
        self._writer.writerows(rows)
        try:
            _write_all(self._fd, self._buf.getvalue().encode("utf-8"))
            if self.fsync:
                os.fsync(self._fd)
        except OSError as err:
            raise write_failed(
                self.path, err, f"its {self.rows} complete row(s) before these are kept"
            ) from err
        self.rows += len(rows)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AppendOnlyCSV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CurrentStream(logging.StreamHandler):
    """A `%(message)s` handler that writes to whatever `sys.<which>` is when a message is emitted (a notebook
    kernel or a test's capture may replace it after the handler was made)."""

    which = "stdout"

    def __init__(self) -> None:
        super().__init__(self.stream)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self.which)

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class _StdoutHandler(_CurrentStream):
    """The kit's messages on stdout, where `print` used to write."""


class _OthersLastResort(_CurrentStream):
    """What Python's last-resort handler does for a message no handler took (WARNING and above, `%(message)s`,
    on stderr), for every logger but the kit's own, whose messages `_StdoutHandler` shows."""

    which = "stderr"

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.addFilter(lambda record: not _is_kit(record.name))


#: the logger tree of the library's messages (`logging.getLogger(__name__)` in every module)
KIT_LOGGER = "reg2rg_lib"


def _is_kit(name: str) -> bool:
    return name == KIT_LOGGER or name.startswith(KIT_LOGGER + ".")


def enable_logging(level: int = logging.INFO) -> logging.Logger:
    """Show the `reg2rg_lib` logger tree's messages at `level` and above as plain lines on stdout, once each.

    The library only logs; the CLI's `main` and the notebooks call this once so that their users see the
    progress messages. Idempotent: calling it again only changes the level.

    Once each: rouge_score logs through absl, which calls `logging.basicConfig()` when the root logger has no
    handler; that stderr handler would print every kit message a second time ("INFO:reg2rg_lib...:", which a
    notebook shows as a second copy of each line). So a root logger without handlers gets one here, first: it
    passes other libraries' warnings on to stderr as Python's last resort would and leaves the kit's messages
    to stdout. A root logger that already has handlers (logging configured by the caller) is left alone."""
    logger = logging.getLogger(KIT_LOGGER)
    logger.setLevel(level)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_OthersLastResort())
    return logger


# ---- a full disk -------------------------------------------------------------------------------------------
#: errno values that mean "no room left": the disk (ENOSPC) or the user's quota (EDQUOT)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(KitError):
    """A write ran out of space; the message names the file and says what was kept. (One message argument
    only, so that it pickles back from a worker process.)"""


def write_failed(target: str | os.PathLike[str], err: OSError, kept: str) -> KitError:
    """The error to raise when writing `target` failed with `err`: one line naming the file, the cause (a full
    disk is said in words) and `kept`, what is still intact."""
    if err.errno in DISK_FULL:
        return DiskFullError(f"{os.fspath(target)}: the disk is full (no space left on device); {kept}; free "
                             "some space and run the same command again")
    return KitError(f"{os.fspath(target)}: could not be written ({err.strerror or err}); {kept}")


def write_error(exc: BaseException) -> OSError | None:
    """`exc` as the OSError of a failed write, or None when it is not one. torch's zip writer and safetensors
    report a full disk as RuntimeError / SafetensorError text (`file write failed`, `No space left`,
    `code: 28`)."""
    if isinstance(exc, OSError):
        return exc
    text = str(exc)
    if "No space left" in text or "code: 28" in text:
        return OSError(errno.ENOSPC, "No space left on device")
    if type(exc).__name__ in ("RuntimeError", "SafetensorError") and "write" in text.lower():
        return OSError(errno.EIO, text.splitlines()[0][:200] if text else "write failed")
    return None


def _write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte is written (a short write is not an error, a full disk is)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
