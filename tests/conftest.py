"""Shared fixtures. Tests never write into the repository: everything goes to pytest's tmp folders."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from reg2rg_lib.data.prep import PrepCache, load_cache
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, load_tokenizer
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.dataset import ReportDataset
from reg2rg_lib.samples.features import FeatureCache, feature_cache_for, set_train_statistics
from reg2rg_lib.samples.inputs import ensure_inputs
from reg2rg_lib.train.run import train_run

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
RELEASE_DIR = SHARED / "reference" / "reg2rg_release_ctrg"
SHARED_NLTK = SHARED / "nltk_data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def release_dir() -> Path:
    """The authors' released CTRG outputs in ../shared; tests that need them skip cleanly when absent."""
    if not RELEASE_DIR.is_dir():
        pytest.skip(f"released reference outputs not found at {RELEASE_DIR}")
    return RELEASE_DIR


@pytest.fixture(scope="session")
def nltk_ready() -> None:
    """WordNet (required for METEOR) and Punkt; skips cleanly off CI when WordNet was never fetched."""
    import nltk

    from reg2rg_lib.env import nltk as na

    if na.punkt_source().kind == "missing" and SHARED_NLTK.is_dir():
        nltk.data.path.append(str(SHARED_NLTK))
        na._clear_caches()
    if na.wordnet_source().kind == "missing":
        msg = "NLTK WordNet not available: run `reg2rg assets fetch` (make setup does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> RunPaths:
    """The smoke profile's benchmark, prep cache and tokenizer (the same builder `reg2rg train` uses)."""
    paths = RunPaths(tmp_path_factory.mktemp("smoke_inputs"))
    ensure_inputs(load_profile("smoke"), paths, paths.cache, paths.tokenizer)
    return paths


@pytest.fixture(scope="session")
def trained(smoke: RunPaths) -> Path:
    """A 4-step tiny Reg2RG run on the smoke inputs, checkpointed at steps 2 and 4."""
    run = smoke.run("full")
    train_run("smoke", run, max_steps=4, save_every=2, progress=False)
    return run


@pytest.fixture(scope="session")
def fresh_model(smoke: RunPaths) -> Callable[..., Reg2RG]:
    """`fresh_model(cfg=None, tok=None)` -> a new untrained Reg2RG (the smoke profile's config by default)
    that can run as `train_run` starts one: with `vision_standardize` (smoke's, as the demo's) its feature
    statistics are set from the smoke cache's train split (`samples.features.set_train_statistics`)."""
    cache = load_cache(smoke.cache)
    train = [r.name for r in cache.cases("train")]

    def build(cfg: Reg2RGConfig | None = None, tok: Any = None) -> Reg2RG:
        cfg = cfg or Reg2RGConfig.from_profile(load_profile("smoke"))
        model = Reg2RG(cfg, tok if tok is not None else load_tokenizer(smoke.tokenizer))
        if cfg.vision_standardize:
            set_train_statistics(model, feature_cache_for(model, cache, train, progress=False), train)
        return model

    return build


@pytest.fixture(scope="session")
def smoke_dataset(
    smoke: RunPaths, fresh_model: Callable[..., Reg2RG]
) -> Callable[..., tuple[ReportDataset, Reg2RG, PrepCache]]:
    """`smoke_dataset(shuffle=True, features=None)` -> (the training ReportDataset, a fresh untrained Reg2RG
    (`fresh_model`), the prep cache): a new model each call, so a test may change its weights."""

    def build(
        shuffle: bool = True, features: FeatureCache | None = None
    ) -> tuple[ReportDataset, Reg2RG, PrepCache]:
        cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
        cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
        model = fresh_model(cfg, tok)
        ds = ReportDataset(cache, "train", tok, cfg, features=features, shuffle_regions=shuffle, seed=0)
        return ds, model, cache

    return build


@pytest.fixture(scope="session")
def write_notebook() -> Callable[[Path, str], None]:
    """`write_notebook(path, body)`: a three-cell notebook (intro, a `parameters` cell, then `body`)."""

    def write(path: Path, body: str) -> None:
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('profile = "demo"\nout_dir = "x"\nfigures_dir = "y"')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell("# t"), params, nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, path)

    return write


_HOLD = """import sys, time
from reg2rg_lib.io import folder_lock
with folder_lock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture(scope="session")
def hold_lock() -> Callable[..., Any]:
    """`with hold_lock(folder, stage) as proc:` a real second process holds `folder`'s writer lock (what a
    running `reg2rg <stage>` does) until the block ends."""
    @contextlib.contextmanager
    def held(folder: Path, stage: str = "train"):
        script = folder.parent / "hold.py"
        folder.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_HOLD)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(folder), stage], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "locked"
            yield proc
        finally:
            proc.kill()
            proc.wait()

    return held


@pytest.fixture(scope="session")
def rotated_affine() -> Callable[[int], Any]:
    """`rotated_affine(seed=0)`: a non-trivial NIfTI affine (rotated about all three axes, anisotropic, a
    little sheared, translated), for the NIfTI reading and label resampling tests."""
    import numpy as np

    def _rotated(seed: int = 0) -> np.ndarray:
        """A non-trivial affine: rotated about all three axes, anisotropic, sheared a little, translated."""
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        affine = np.eye(4)
        affine[:3, :3] = q @ np.diag([0.7, 0.9, 2.5]) @ np.array([[1, 0.05, 0], [0, 1, 0], [0, 0, 1]])
        affine[:3, 3] = [-120.5, 33.25, 410.0]
        return affine

    return _rotated
