"""`reg2rg bench ...`: benchmarks that print a ratio measured in one run (never timed tests).

Each benchmark family lives next to the code it measures and exposes `register_bench(subparsers)`; its handler
returns a dict of figures, which `report` prints as a table or, with `--json`, as one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from typing import Any

#: Modules that add `reg2rg bench <name>` subcommands.
BENCH_MODULES: tuple[str, ...] = (
    "reg2rg_lib.train_bench",  # train-step, generate, gpu-step
    "reg2rg_lib.metrics.bench",  # metrics
    "reg2rg_lib.data.bench",  # preprocess
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (each prints the kit against a reference recipe, as a ratio)")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    bench_sub.required = True
    for name in BENCH_MODULES:
        importlib.import_module(name).register_bench(bench_sub)


def machine() -> dict[str, Any]:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def report(figures: dict[str, Any], as_json: bool) -> int:
    """Print `figures` (one JSON line with --json, else an aligned table); returns 0."""
    if as_json:
        print(json.dumps(figures, default=float))
        return 0
    width = max(map(len, figures)) if figures else 0
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0
