"""What the `reg2rg bench ...` commands share: printing figures (an aligned table or, with `--json`, one JSON
line), and the flags and inputs of the benchmarks that run the model on a profile's inputs (`bench_inputs`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from reg2rg_lib.paths import RunPaths, default_out_dir
from reg2rg_lib.profiles import load_profile


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


def common_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the benchmarks that run the model on a profile's inputs (train-step, generate)."""
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--profile", default="demo", help="model and image size of this profile (default: demo)")
    p.add_argument(
        "--out",
        default=None,
        help="the profile's output folder holding cache/ and tokenizer/ (default: "
        "outputs/<profile>; when absent, smoke-sized inputs are built in a temporary folder)",
    )


def bench_inputs(profile_name: str, out: str | None, tmp: Path) -> tuple[Any, Any, Any, str]:
    """(profile, prep cache, tokenizer, where) for a benchmark: the profile run's inputs if present, else the
    smoke profile's, built under `tmp` (same code path, smaller images)."""
    # bench modules load at `reg2rg --help`: each handler imports the stage it measures when it runs
    from reg2rg_lib.data.prep import load_cache
    from reg2rg_lib.model import load_tokenizer
    from reg2rg_lib.samples.inputs import ensure_inputs

    paths = RunPaths(out or default_out_dir(profile_name))
    profile = load_profile(profile_name)
    if not ((paths.cache / "manifest.json").is_file() and paths.tokenizer.is_dir()):
        profile, paths = load_profile("smoke"), RunPaths(tmp)
        train_logger = logging.getLogger("reg2rg_lib.train")  # its progress lines would mix with the figures
        level = train_logger.level
        train_logger.setLevel(logging.WARNING)
        try:
            ensure_inputs(profile, paths, paths.cache, paths.tokenizer)
        finally:
            train_logger.setLevel(level)
    return profile, load_cache(paths.cache), load_tokenizer(paths.tokenizer), str(paths.root)
