"""The `reg2rg` command line (also `python -m reg2rg_lib.cli`). Thin: parse arguments, call the library.

Each command family lives in its own module that exposes `register(subparsers)`; heavy imports (torch,
transformers) happen inside the handlers, so `reg2rg --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from reg2rg_lib._version import __version__
from reg2rg_lib.errors import KitError
from reg2rg_lib.io import enable_logging

#: Modules that add subcommands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "reg2rg_lib.cli.core",  # version, doctor, assets, run-notebooks
    "reg2rg_lib.cli.bench",  # bench <name>
    "reg2rg_lib.cli.data",  # synth, prepare
    "reg2rg_lib.cli.own_ct",  # import-ct, regions, report (your own CT)
    "reg2rg_lib.cli.pretrain",  # pretrain-vision
    "reg2rg_lib.cli.train",  # train, generate
    "reg2rg_lib.cli.model",  # model summary
    "reg2rg_lib.cli.ablate",  # ablate (Tables 4-7)
    "reg2rg_lib.cli.evaluate",  # evaluate nlg|ce|region|compare|all
    "reg2rg_lib.cli.readme",  # readme (the README's generated demo block)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reg2rg",
        description="reg2rg-kit: reproduce Reg2RG (region-guided CT report generation) on a CPU or GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"reg2rg-kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    enable_logging()  # the library's INFO messages ([train] ..., [generate] ...) are the commands' progress
    try:
        return int(args.func(args) or 0)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
