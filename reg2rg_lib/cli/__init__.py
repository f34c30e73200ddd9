"""The `reg2rg` command line: argument parsing only; each command calls one pipeline stage (`main.py`)."""

from reg2rg_lib.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
