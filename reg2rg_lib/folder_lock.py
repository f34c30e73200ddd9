"""One writer per output folder: `folder_lock` (and the decorator `one_writer`) hold a folder for one process,
and the processes it starts, while a stage writes there; a second writer is refused at once in one line naming
the holder.

The mutual exclusion is `filelock`'s: an `flock` (Windows: its byte-range lock) on `<folder>/.reg2rg.mutex`,
which the kernel drops when its process dies, however it dies; where the file system has no `flock`,
filelock's pid marker, which a process on the same host takes over once the recorded process has ended. What
filelock does not know, and the kit adds, in as little code as it takes:

- who holds a folder, for the refusal message: `<folder>/.reg2rg.lock`, a JSON record (pid, host, stage,
  command, start), written once the mutex is held. A killed process leaves it behind; it only serves to say,
  when the next writer takes the folder, whose lock it took over.
- folders in a tree: a folder is refused while another process holds a folder above it or one up to two levels
  below (`ablate` on a profile folder while one of its `runs/<name>` trains).
- children write under their parent's lock (the notebook kernels of `reg2rg run-notebooks`, the worker
  processes of `reg2rg ablate`): each held lock puts a random token into the environment variable
  `REG2RG_HELD_LOCKS`, which the processes started meanwhile inherit; a record with one of our tokens is ours.
  (This replaced walking /proc for the parent chain, which only Linux has.) Nesting in one process is fine
  too.
- the files are removed on release, so that a finished stage leaves its folder as it found it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from reg2rg_lib.errors import KitError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: who holds the folder (a JSON record), while a stage writes there
LOCK_NAME = ".reg2rg.lock"
#: the file filelock locks (an flock file, or filelock's pid marker where the file system has no flock)
MUTEX_NAME = ".reg2rg.mutex"
#: the tokens of the locks this process and its ancestors hold, `os.pathsep`-separated
HELD_ENV = "REG2RG_HELD_LOCKS"
#: how long a writer tries before it is refused: long enough to outlast another process's probe
#: (microseconds), short enough to count as "at once"
_WAIT_S = 0.5
_HELD: dict[str, int] = {}  # folders this process holds, with their nesting depth


class FolderBusyError(KitError):
    """Another live process is writing into the output folder (the message names it)."""


def make_folder(folder: str | os.PathLike[str]) -> Path:
    """`mkdir -p folder`; a path that cannot be a folder (under a file, no permission, a full disk) is a
    one-line `KitError` naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KitError(f"{folder}: cannot create this output folder ({err.strerror or err})") from None
    return folder


def _tokens() -> list[str]:
    return [t for t in os.environ.get(HELD_ENV, "").split(os.pathsep) if t]


def _read_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / LOCK_NAME).read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    """Write the record atomically (a reader never sees half of it)."""
    fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
        os.replace(tmp, folder / LOCK_NAME)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _acquire(mutex: Path, wait: float) -> FileLock | None:
    """`mutex` locked for this process, or None when another process holds it for longer than `wait`
    seconds."""
    lock = FileLock(mutex)
    try:
        lock.acquire(timeout=wait, poll_interval=0.02)
    except Timeout:
        return None
    return lock


def _release(lock: FileLock) -> None:
    """Release `lock`, removing its file first when it is an flock file (filelock leaves those in place).

    An flock file is empty, while a pid marker never is (filelock removes that one itself). Removed while
    still locked, so that a writer that opened the old file finds it unlinked once it gets the lock and takes
    a new one (filelock >= 4 retries then)."""
    with contextlib.suppress(OSError):
        if os.path.getsize(lock.lock_file) == 0:
            # on Windows an open file cannot be removed; filelock removes it after release
            os.unlink(lock.lock_file)
    lock.release()


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds `folder`'s lock ({pid, command, host, since, ...}), or None when it is free (a process that
    died holds nothing)."""
    folder = Path(folder)
    if not (folder / MUTEX_NAME).exists():
        return None
    probe = _acquire(folder / MUTEX_NAME, 0.1)
    if probe is None:
        return _read_record(folder) or {"pid": "?", "command": "unknown (the lock is being written)"}
    _release(probe)
    return None


def _busy(folder: Path, holder: dict[str, Any], stage: str) -> FolderBusyError:
    return FolderBusyError(
        f"{folder}: in use by another process, pid {holder.get('pid')} on {holder.get('host', '?')} "
        f"({holder.get('stage', '?')}: `{holder.get('command', '?')}`, since {holder.get('since', '?')}); "
        f"{stage} refuses to write into it at the same time: wait for that process or stop it (the lock of a "
        f"process that died is taken over; if none runs, delete {folder / MUTEX_NAME})")


def _refuse_if_taken(folder: Path, stage: str, mine: set[str]) -> None:
    """Raise `FolderBusyError` when another process holds `folder`, a folder above it or one up to two
    below."""
    below = [p.parent for depth in ("*", "*/*") for p in folder.glob(f"{depth}/{MUTEX_NAME}")]
    for other in [*reversed(folder.parents), folder, *below]:
        if not (other / MUTEX_NAME).exists() or _read_record(other).get("token") in mine:
            continue  # free, or held by this process or an ancestor
        holder = lock_holder(other)
        if holder is not None:
            raise _busy(other, holder, stage)


def _record(stage: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "stage": stage,
        "command": " ".join(
            [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
        ),
        "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "token": uuid.uuid4().hex,
    }


@contextlib.contextmanager
def _nested(key: str) -> Iterator[None]:
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield
    finally:
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], stage: str) -> Iterator[Path]:
    """Hold `folder` as its only writer for the block (`stage` names what writes, e.g. "train").

    Refused within half a second with `FolderBusyError` naming the holder (pid, command, host, start) when
    another live process holds `folder`, a folder above it or one up to two levels below. A lock held by this
    process or one of its ancestors is shared (ablation runs inside `reg2rg ablate`, notebook kernels under
    `reg2rg run-notebooks`), and nesting is fine."""
    folder = Path(folder).expanduser().resolve()
    key, tokens = str(folder), _tokens()
    _refuse_if_taken(folder, stage, set(tokens))
    if key in _HELD or _read_record(folder).get("token") in tokens:  # ours already: nested, or shared
        with _nested(key):
            yield folder
        return
    created = not folder.exists()
    make_folder(folder)
    lock = _acquire(folder / MUTEX_NAME, _WAIT_S)
    if lock is None:
        raise _busy(folder, _read_record(folder), stage)
    previous, record = _read_record(folder), _record(stage)
    if previous:
        logger.warning(f"[lock] {folder}: taking over the lock of pid {previous.get('pid')} "
                       f"(`{previous.get('command', '?')}`), which is no longer running")
    try:
        _write_record(folder, record)
        # inherited by the processes it starts
        os.environ[HELD_ENV] = os.pathsep.join([*tokens, record["token"]])
        with _nested(key):
            yield folder
    finally:
        os.environ[HELD_ENV] = os.pathsep.join(t for t in _tokens() if t != record["token"])
        with contextlib.suppress(OSError):
            # before the mutex: the next writer must not take it for a dead one's
            (folder / LOCK_NAME).unlink()
        _release(lock)
        if created:  # a stage refused before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def one_writer(folder: str | Callable[[Mapping[str, Any]], str | os.PathLike[str]], stage: str,
               *, parent: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a stage's entry point so that it holds its output folder (`folder_lock`) while it runs.

    `folder` names the argument holding the folder (`parent=True`: the argument is a file, lock its folder),
    or is a function of the bound arguments. Only the main process of a distributed launch (RANK 0) takes the
    lock: its other ranks write under it."""

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
