"""`reg2rg bench <name>`: each benchmark family (bench/*.py) adds its subcommand with `register_bench`.
"""

from __future__ import annotations

import argparse
import importlib

#: Modules that add `reg2rg bench <name>` subcommands.
BENCH_MODULES: tuple[str, ...] = (
    "reg2rg_lib.bench.train_step",  # train-step
    "reg2rg_lib.bench.batch_generate",  # generate
    "reg2rg_lib.bench.gpu_step",  # gpu-step
    "reg2rg_lib.bench.train_demo",  # train-demo
    "reg2rg_lib.bench.metrics",  # metrics
    "reg2rg_lib.bench.preprocess",  # preprocess
    "reg2rg_lib.bench.train_seeds",  # seeds
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmarks (each prints the kit against a reference recipe, as a ratio)"
    )
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    bench_sub.required = True
    for name in BENCH_MODULES:
        importlib.import_module(name).register_bench(bench_sub)
