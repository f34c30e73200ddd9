"""A profile folder's inputs made sure of before training: the prep cache and, for the CPU presets, the
tokenizer.

`reg2rg train`, notebook 03 and the benchmarks call `ensure_inputs` before they build samples;
`train.run.train_run` calls it too, on the main process only, so that `reg2rg train --profile smoke` under
torchrun works from nothing without two ranks writing one cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from reg2rg_lib.data.prep import PrepParams, load_cache, prepare
from reg2rg_lib.data.synth.build import synthesize_profile
from reg2rg_lib.errors import KitError
from reg2rg_lib.model.tokenizer import tokenizer_from_cache
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import Profile

logger = logging.getLogger(__name__)


def ensure_inputs(profile: Profile, paths: RunPaths, cache_dir: str | os.PathLike[str] | None = None,
                  tokenizer_dir: str | os.PathLike[str] | None = None) -> None:
    """Make sure the prep cache (default `paths.cache`) and, for the CPU presets, the tokenizer (default
    `paths.tokenizer`) exist.

    A missing tokenizer is trained on the train split's region paragraphs and saved (`tokenizer_from_cache`;
    the paper preset uses its LLM's own tokenizer instead). A missing prep cache is an error naming what to
    run, except for the smoke profile, which builds its benchmark and cache, so that
    `reg2rg train --profile smoke` (and the torchrun check) works from nothing."""
    cache_dir = Path(cache_dir) if cache_dir else paths.cache
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else paths.tokenizer
    if not (cache_dir / "manifest.json").is_file():
        if profile.name != "smoke":
            raise KitError(f"missing prep cache {cache_dir}: run notebook 01 (or `reg2rg synth` and `reg2rg "
                           "prepare`) first, or pass --cache")
        logger.info(f"[train] smoke profile: building the benchmark and prep cache under {paths.root}")
        d = profile.data
        if not (paths.data / "manifest.json").is_file():
            synthesize_profile(d, paths.data, progress=False)
        prepare(paths.data, cache_dir, PrepParams.from_profile(d), workers=d.workers, progress=False)
    if not profile.model.llm_path and not tokenizer_dir.is_dir():
        logger.info(f"[train] training the tokenizer on the train reports -> {tokenizer_dir}")
        tokenizer_from_cache(load_cache(cache_dir), tokenizer_dir)
