"""A profile folder's inputs made sure of before training: the prep cache and, for the CPU presets, the
tokenizer.

Training only reads them (`train.run.train_run` fails with `check_inputs`'s one-line error when one is
missing): `reg2rg train` (`ensure_inputs_once`, rank 0 first under torchrun / accelerate launch), notebook 03,
the ablation runner, the benchmarks and the tests' fixtures call `ensure_inputs` before they train or build
samples.
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


def check_inputs(profile: Profile, cache_dir: str | os.PathLike[str],
                 tokenizer_dir: str | os.PathLike[str]) -> None:
    """A one-line KitError naming the missing folder and what builds it when the prep cache or (CPU presets,
    no `model.llm_path`) the tokenizer is not there; nothing is built."""
    cache_dir, tokenizer_dir = Path(cache_dir), Path(tokenizer_dir)
    if not (cache_dir / "manifest.json").is_file():
        name = profile.name
        raise KitError(f"missing prep cache {cache_dir}: run notebook 01 (or `reg2rg synth --profile {name} "
                       f"--out DATA` and `reg2rg prepare --profile {name} --data DATA --out {cache_dir}`) "
                       "first, or pass --cache")
    if not profile.model.llm_path and not tokenizer_dir.is_dir():
        raise KitError(f"missing tokenizer {tokenizer_dir}: `reg2rg train --profile {profile.name}` or "
                       "notebook 03 trains it on the train reports (`samples.inputs.ensure_inputs`), or pass "
                       "--tokenizer")


def ensure_inputs(profile: Profile, paths: RunPaths, cache_dir: str | os.PathLike[str] | None = None,
                  tokenizer_dir: str | os.PathLike[str] | None = None) -> None:
    """Make sure the prep cache (default `paths.cache`) and, for the CPU presets, the tokenizer (default
    `paths.tokenizer`) exist.

    A missing tokenizer is trained on the train split's region paragraphs and saved (`tokenizer_from_cache`;
    the paper preset uses its LLM's own tokenizer instead). A missing prep cache is an error naming what to
    run (`check_inputs`), except for the smoke profile, which builds its benchmark and cache, so that
    `reg2rg train --profile smoke` (and the torchrun check) works from nothing."""
    cache_dir = Path(cache_dir) if cache_dir else paths.cache
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else paths.tokenizer
    if not (cache_dir / "manifest.json").is_file():
        if profile.name != "smoke":
            check_inputs(profile, cache_dir, tokenizer_dir)  # raises: the missing cache and what builds it
        logger.info(f"[train] smoke profile: building the benchmark and prep cache under {paths.root}")
        d = profile.data
        if not (paths.data / "manifest.json").is_file():
            synthesize_profile(d, paths.data, progress=False)
        prepare(paths.data, cache_dir, PrepParams.from_profile(d), workers=d.workers, progress=False)
    if not profile.model.llm_path and not tokenizer_dir.is_dir():
        logger.info(f"[train] training the tokenizer on the train reports -> {tokenizer_dir}")
        tokenizer_from_cache(load_cache(cache_dir), tokenizer_dir)


def ensure_inputs_once(profile: Profile, paths: RunPaths, cache_dir: str | os.PathLike[str] | None = None,
                       tokenizer_dir: str | os.PathLike[str] | None = None) -> None:
    """`ensure_inputs` for a command that several processes run (`torchrun`, `accelerate launch`): rank 0
    builds what is missing while the others wait at a barrier, so no two ranks write one cache; in a single
    process it is `ensure_inputs`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        ensure_inputs(profile, paths, cache_dir, tokenizer_dir)
        return
    import torch
    from accelerate import PartialState

    # the process group the training's Accelerator then joins (the same `cpu` choice as
    # `train.loop.make_accelerator`: only then does accelerate treat a CPU torchrun launch as gloo ranks)
    state = PartialState(cpu=not torch.cuda.is_available())
    with state.main_process_first():
        if state.is_main_process:
            ensure_inputs(profile, paths, cache_dir, tokenizer_dir)
