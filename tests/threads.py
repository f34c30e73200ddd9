"""One torch thread for tests of tiny models (imported by test modules and conftests:
`from threads import ...`)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Tiny matmuls gain nothing from a second thread, and on a loaded 2-core machine OpenMP's spinning
    threads make them ~10x slower (measured: 94 s vs 8 s for 100 tiny training steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
