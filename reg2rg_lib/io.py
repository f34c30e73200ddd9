"""Small helpers every stage uses: atomic writes so that no half-written file looks complete, a crash-safe
append-only CSV, a full disk reported in one line that says what was kept (`DiskFullError`), one writer per output
folder (`folder_lock`, `one_writer`), and the switch that shows the kit's INFO messages (CLI and notebooks)."""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import inspect
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any, TextIO, TypeVar

from reg2rg_lib.errors import KitError

try:
    import fcntl
except ImportError:  # Windows: no flock; the pid recorded in the lock file decides
    fcntl = None

logger = logging.getLogger(__name__)
T = TypeVar("T")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds.

    The temporary file lives in the same folder, so the final `os.replace` is atomic on POSIX file systems. A full
    disk (here or in the block) raises `DiskFullError` naming `target`; the temporary file is removed and the
    previous `target`, if any, is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = f"the previous {target.name} is unchanged" if target.exists() else f"no partial {target.name} was left"
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
    """Yield an empty temporary folder next to `target`; it replaces `target` (an older one is removed) only if the
    block succeeds, else it is deleted: a reader never sees a half-written folder (a tokenizer, a converted LLM)."""
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
        self.rows = 0  # complete rows in the file
        rows = list(rows)
        write_csv_atomic(self.path, self.columns, rows, lineterminator)
        self.rows = len(rows)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._buf = StringIO()
        self._writer = csv.writer(self._buf, lineterminator=lineterminator)

    def write(self, values: Sequence[Any]) -> None:
        """Append one row, `values` in the order of `columns` (unbuffered: nothing waits in memory). A full disk
        raises `DiskFullError`: the rows before stay complete, and a rerun drops the cut one."""
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
            raise write_failed(self.path, err, f"its {self.rows} complete row(s) before these are kept") from err
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
    """What Python's last-resort handler does for a message no handler took (WARNING and above, `%(message)s`, on
    stderr), for every logger but the kit's own, whose messages `_StdoutHandler` shows."""

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

    The library only logs; the CLI's `main` and the notebooks call this once so that their users see the progress
    messages. Idempotent: calling it again only changes the level.

    Once each: rouge_score logs through absl, which calls `logging.basicConfig()` when the root logger has no
    handler; that stderr handler would print every kit message a second time ("INFO:reg2rg_lib...:", which a
    notebook shows as a second copy of each line). So a root logger without handlers gets one here, first: it
    passes other libraries' warnings on to stderr as Python's last resort would and leaves the kit's messages to
    stdout. A root logger that already has handlers (logging configured by the caller) is left alone."""
    logger = logging.getLogger(KIT_LOGGER)
    logger.setLevel(level)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_OthersLastResort())
    return logger


# ---- a full disk ------------------------------------------------------------------------------------------------
#: errno values that mean "no room left": the disk (ENOSPC) or the user's quota (EDQUOT)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(KitError):
    """A write ran out of space; the message names the file and says what was kept. (One message argument only,
    so that it pickles back from a worker process.)"""


def write_failed(target: str | os.PathLike[str], err: OSError, kept: str) -> KitError:
    """The error to raise when writing `target` failed with `err`: one line naming the file, the cause (a full
    disk is said in words) and `kept`, what is still intact."""
    if err.errno in DISK_FULL:
        return DiskFullError(f"{os.fspath(target)}: the disk is full (no space left on device); {kept}; free "
                             "some space and run the same command again")
    return KitError(f"{os.fspath(target)}: could not be written ({err.strerror or err}); {kept}")


def write_error(exc: BaseException) -> OSError | None:
    """`exc` as the OSError of a failed write, or None when it is not one. torch's zip writer and safetensors
    report a full disk as RuntimeError / SafetensorError text (`file write failed`, `No space left`, `code: 28`)."""
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


# ---- one writer per output folder -------------------------------------------------------------------------------
#: the lock file a stage holds in its output folder while it writes there
LOCK_NAME = ".reg2rg.lock"
_HELD: dict[str, int] = {}  # folders this process holds, with their nesting depth


class FolderBusyError(KitError):
    """Another live process is writing into the output folder (the message names it)."""


def _flock(fd: int, operation: str) -> None:
    """flock `fd` ("sh", "ex": non-blocking; "un"); OSError(ENOTSUP) where the platform has no flock."""
    if fcntl is None:
        raise OSError(errno.ENOTSUP, "flock is not available on this platform")
    flags = {"sh": fcntl.LOCK_SH | fcntl.LOCK_NB, "ex": fcntl.LOCK_EX | fcntl.LOCK_NB, "un": fcntl.LOCK_UN}
    fcntl.flock(fd, flags[operation])


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, Linux), so a reused pid is not taken for the
    process that wrote a lock; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _ancestry() -> set[int]:
    """This process and its ancestors: a lock one of them holds is ours to write under (the notebook kernel of
    `reg2rg run-notebooks`, the worker processes of `reg2rg ablate`)."""
    found, pid = {os.getpid(), os.getppid()}, os.getppid()
    while pid and pid > 1:
        pid = _parent(pid)
        if pid is None:
            break
        found.add(pid)
    return found


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote a lock still runs (same host; a reused pid does not count)."""
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: assume it runs
    pid = int(holder.get("pid", 0))
    if os.name == "nt":  # os.kill would signal the process there, not probe it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _proc_start(pid)
    return start is None or holder.get("start") in (None, start)


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds `folder`'s lock ({pid, command, host, since, ...}), or None when it is free.

    The lock is an `flock` on `folder/.reg2rg.lock`: the kernel drops it when its process dies, however it dies,
    so a dead process's lock is free. On a file system without `flock`, the pid and its start time decide."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            _flock(fd, "sh")
        except BlockingIOError:
            return _read_holder(path) or {"pid": "?", "command": "unknown (the lock is being written)"}
        except OSError:  # no flock here (some network file systems): trust the pid
            holder = _read_holder(path)
            return holder if holder and _alive(holder) else None
        _flock(fd, "un")
        return None
    finally:
        os.close(fd)


def _busy(folder: Path, holder: dict[str, Any], stage: str) -> FolderBusyError:
    return FolderBusyError(
        f"{folder}: in use by another process, pid {holder.get('pid')} on {holder.get('host', '?')} "
        f"({holder.get('stage', '?')}: `{holder.get('command', '?')}`, since {holder.get('since', '?')}); "
        f"{stage} refuses to write into it at the same time: wait for that process or stop it (the lock of a "
        f"process that died is taken over; if none runs, delete {folder / LOCK_NAME})")


def _take(path: Path, holder: dict[str, Any]) -> int | None:
    """flock `path` for this process and write `holder` into it; the fd, or None when another process has it."""
    for _attempt in range(50):
        previous = _read_holder(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, "ex")
        except BlockingIOError:
            os.close(fd)
            if lock_holder(path.parent) is not None:
                return None
            time.sleep(0.02)  # someone only looked at it (a shared probe): try again
            continue
        except OSError:  # no flock on this file system: the pid in the file decides
            if previous and _alive(previous) and previous.get("pid") != os.getpid():
                os.close(fd)
                return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file while we opened it: lock the new one
            os.close(fd)
            continue
        if previous.get("pid") not in (None, os.getpid()):
            logger.warning(f"[lock] {path.parent}: taking over the lock of pid {previous.get('pid')} "
                           f"(`{previous.get('command', '?')}`), which is no longer running")
        os.ftruncate(fd, 0)
        _write_all(fd, (json.dumps(holder) + "\n").encode())
        return fd
    return None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], stage: str) -> Iterator[Path]:
    """Hold `folder` as its only writer for the block (`stage` names what writes, e.g. "train").

    Refused at once with `FolderBusyError` naming the holder (pid, command, host, start) when another live
    process holds `folder`, a folder above it or one up to two levels below (`ablate` on a profile folder while
    one of its `runs/<name>` trains). A lock held by this process or one of its ancestors is shared
    (ablation runs inside `reg2rg ablate`, notebook kernels under `reg2rg run-notebooks`), and nesting is fine."""
    folder = Path(folder).expanduser().resolve()
    key = str(folder)
    mine = _ancestry()
    below = [p.parent for depth in ("*", "*/*") for p in folder.glob(f"{depth}/{LOCK_NAME}")]
    for other in [*reversed(folder.parents), folder, *below]:  # a folder above, itself, two levels below
        holder = lock_holder(other) if (other / LOCK_NAME).exists() else None
        if holder is not None and holder.get("pid") not in mine:
            raise _busy(other, holder, stage)
    if key in _HELD or (lock_holder(folder) or {}).get("pid") in mine:  # ours already: nested
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    created = not folder.exists()
    make_folder(folder)
    path = folder / LOCK_NAME
    info = {"pid": os.getpid(), "start": _proc_start(os.getpid()), "host": socket.gethostname(), "stage": stage,
            "command": " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    fd = _take(path, info)
    if fd is None:
        raise _busy(folder, lock_holder(folder) or _read_holder(path), stage)
    _HELD[key] = 1
    try:
        yield folder
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            path.unlink()  # before the unlock: a waiter that opened the old file sees it is gone and retries
        os.close(fd)
        if created:  # a stage refused before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def make_folder(folder: str | os.PathLike[str]) -> Path:
    """`mkdir -p folder`; a path that cannot be a folder (under a file, no permission, a full disk) is a one-line
    `KitError` naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KitError(f"{folder}: cannot create this output folder ({err.strerror or err})") from None
    return folder


def one_writer(folder: str | Callable[[Mapping[str, Any]], str | os.PathLike[str]], stage: str,
               *, parent: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a stage's entry point so that it holds its output folder (`folder_lock`) while it runs.

    `folder` names the argument holding the folder (`parent=True`: the argument is a file, lock its folder), or
    is a function of the bound arguments. Only the main process of a distributed launch (RANK 0) takes the lock:
    its other ranks write under it."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> T:
            if os.environ.get("RANK", "0") != "0":
                return fn(*args, **kwargs)
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            where = folder(bound.arguments) if callable(folder) else bound.arguments[folder]
            where = Path(where).expanduser()
            with folder_lock(where.parent if parent else where, stage):
                return fn(*args, **kwargs)
        return locked
    return wrap
