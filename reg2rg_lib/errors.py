"""User-facing errors: one clear line naming the file and the problem, shown without a traceback by the
CLI."""

from __future__ import annotations

import os


class KitError(Exception):
    """Bad input or a missing asset. The CLI prints `error: <message>` and exits with status 2."""


class BadInputError(KitError):
    """A specific input file is unusable; the message starts with its path."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path, self.problem = os.fspath(path), problem
