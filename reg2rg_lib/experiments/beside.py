"""Grid rows trained beside notebook 03's `full`, on the core its one-thread training leaves idle.

On the demo's 2-core machine `full` trains on one thread (`train.threads: 1`) for several minutes while the
other core waits, and notebook 05's grid then trains five rows two at a time, in three rounds with one worker
idle in the last. `beside_full` starts the profile's `ablations.beside_full` rows in one spawned process while
`full` trains (each row trained, generated and evaluated as the grid's workers do it: `runner.run_one`, one
thread) and waits for them when `full` is done. Notebook 05 finds them finished and reuses them (`run_one`
reuses a run whose predictions and metrics are complete), so its grid needs one round less. The numbers do not
change: every run is seeded and trains on one thread in its own process, as in the grid. The frozen ViT's
features both processes read are computed first, in this process, as `full`'s training computes them
(`train.run.train_features`), so that the two never write them at once.

Nothing starts on a single core, or when the profile names no rows. If the cell that trains `full` fails or is
interrupted, the second process is stopped; a row it left half trained resumes from its newest checkpoint in
notebook 05, and a row that failed there is a warning in notebook 03 and trained again in notebook 05. If the
notebook's kernel is killed outright, the second process notices within a second and ends too.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from reg2rg_lib.errors import KitError
from reg2rg_lib.experiments.grid import Ablation, grid_for, same_model_as
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import Profile, load_profile
from reg2rg_lib.train.run import train_features

logger = logging.getLogger(__name__)


def rows_beside(profile: Profile, runs: Sequence[str] | None = None) -> list[Ablation]:
    """The grid rows to train beside `full`: `runs`, else the profile's `ablations.beside_full`; never `full`
    itself or an imported row, and only rows of this profile's grid (a one-line error names any other)."""
    names = list(profile.ablations.beside_full if runs is None else runs)
    grid = {a.name: a for a in grid_for(profile)}
    unknown = [n for n in names if n not in grid]
    if unknown:
        raise KitError(f"beside_full: {', '.join(unknown)} not in profile {profile.name}'s grid "
                       f"({', '.join(grid)})")
    full = grid["full"]
    # full itself, a row that is full's model under another name (the grid reuses full for it), imported rows
    return [grid[n] for n in names
            if n != "full" and not grid[n].imported and not same_model_as(profile, grid[n], full)]


def _exit_with(parent: int, every_s: float = 1.0) -> None:
    """End this process soon after process `parent` has gone (killed with -9, so it could not stop us): a
    daemon thread that checks the parent's pid every `every_s` seconds. What the rows wrote is atomic, and the
    folder lock goes with the process, so notebook 05 resumes them."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="reg2rg-beside-watch", daemon=True).start()


def _train_rows(profile: Profile, out_dir: str, rows: Sequence[Ablation], conn: Connection,
                parent: int) -> None:
    """The spawned process: the rows as the grid's worker runs them; sends back (messages, error or None)."""
    from reg2rg_lib.experiments.runner import train_rows

    _exit_with(parent)
    lines: list[str] = []
    error = None
    try:
        lines = train_rows(profile, out_dir, rows)
    except BaseException as exc:  # reported in the parent, in one line
        error = f"{type(exc).__name__}: {exc}"
        lines.append(traceback.format_exc(limit=3))
    conn.send((lines, error))
    conn.close()


@contextlib.contextmanager
def beside_full(profile: str | Profile, out_dir: str | os.PathLike[str],
                runs: Sequence[str] | None = None) -> Iterator[list[str]]:
    """Train grid rows in a second process while the `with` block trains `full`; yield their names.

    On leaving the block normally it waits for them and logs their messages; a row that failed there is a
    one-line warning, not an error (the block's own work, `full`, is done, and notebook 05's grid trains the
    row again, where a real problem shows as its error). On an exception or interrupt in the block it stops
    them and re-raises. Yields [] (and starts nothing) on one core or when there are no rows.
    """
    prof = load_profile(profile)
    rows = rows_beside(prof, runs)
    if not rows or (os.cpu_count() or 1) < 2:
        if rows:
            logger.info(f"[beside] one core: {', '.join(a.name for a in rows)} will train in notebook 05")
        yield []
        return
    paths = RunPaths(out_dir)
    train_features(prof, paths.run("full"))  # here first, as full's training would: never by both at once
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_train_rows, args=(prof, str(paths.root), rows, send, os.getpid()),
                       name="reg2rg-beside")
    proc.start()
    send.close()
    names = [a.name for a in rows]
    logger.info(f"[beside] training {', '.join(names)} in a second process while full trains "
                f"(notebook 05 reuses them)")
    try:
        yield names
    except BaseException:
        proc.terminate()
        proc.join()
        logger.info(f"[beside] stopped {', '.join(names)} (notebook 05 resumes them from their checkpoints)")
        raise
    result = _receive(receive, proc)
    proc.join()
    lines, error = result
    for line in lines:
        logger.info(line)
    if error is not None:  # full's own training succeeded: the grid trains what did not finish here
        logger.warning(f"[beside] WARNING training {', '.join(names)} beside full failed ({error}); "
                       "notebook 05 trains what did not finish")
        return
    logger.info(f"[beside] {', '.join(names)} finished")


def _receive(conn: Connection, proc: Any) -> tuple[list[str], str | None]:
    """The process's (messages, error); an error when it died without sending them (killed, out of memory)."""
    try:
        return conn.recv()
    except EOFError:
        proc.join()
        return [], f"the process ended with exit code {proc.exitcode} before reporting"
