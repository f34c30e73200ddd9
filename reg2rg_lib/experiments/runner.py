"""Run the ablation grid: train, generate and evaluate each run on the embedded benchmark, resumably.

Every run uses the profile's seeds, data and step count (`ablations.max_steps`, default `train.max_steps`),
the Training stage's `train_run` (frozen-ViT outputs cached once per case and shared by every run with the
same encoder), the Inference stage's `generate_run` (greedy decoding) and the Metrics stage's
`evaluate_predictions` against the benchmark's exact test labels. A run whose predictions and metrics are
complete is reused, so an interrupted grid resumes and notebook 03's `full` is not trained again. Runs can
train side by side in worker processes (`ablations.parallel`). Outputs: `summary.json` (`summary.py`) and
`ablation_stats.csv` (`ablation_stats.py`).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

import torch

from reg2rg_lib.data.layout import scan_layout
from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.experiments.ablation_stats import ablation_stats
from reg2rg_lib.experiments.baselines import annotate_runs
from reg2rg_lib.experiments.grid import Ablation, grid_for, profile_for, run_folder, run_steps, same_model_as
from reg2rg_lib.experiments.summary import EVALUATION_METRICS, SHOWN_METRICS, write_summary
from reg2rg_lib.infer.generate import DecodeSettings, generate_run
from reg2rg_lib.infer.predictions import decoding_path, read_predictions, same_decoding
from reg2rg_lib.io import KIT_LOGGER, atomic_path, one_writer
from reg2rg_lib.metrics import evaluate_predictions
from reg2rg_lib.metrics.grounded import benchmark_manifest
from reg2rg_lib.metrics.labeler import RuleLabeler
from reg2rg_lib.model import Reg2RGConfig
from reg2rg_lib.paths import REPO_ROOT, MetricsFolder, RunFolder, RunPaths
from reg2rg_lib.profiles import Profile, load_profile
from reg2rg_lib.samples.inputs import ensure_inputs
from reg2rg_lib.train.loop import TrainSettings, summary
from reg2rg_lib.train.pretrain_vision import ensure_pretrained_vision
from reg2rg_lib.train.run import train_run

logger = logging.getLogger(__name__)


def _test_names(cache_dir: Path) -> list[str]:
    return [r.name for r in load_cache(cache_dir).cases("test")]


def predictions_complete(pred_csv: Path, names: Sequence[str]) -> bool:
    """True when `pred_csv` holds a prediction for every test case in `names`."""
    if not pred_csv.is_file():
        return False

    return set(names) <= {r["AccNum"] for r in read_predictions(pred_csv)}


def trained_steps(run_dir: Path) -> int | None:
    """Steps of the run's finished training (`train_summary.json`), None when it has not finished."""
    steps = summary(run_dir).get("steps")
    return int(steps) if steps is not None else None


def test_labels(paths: RunPaths) -> Path | None:
    """The benchmark's exact test labels (`test_predicted_labels.csv`), the CE reference of every run; None
    when the profile's data has none (then the labeler labels the ground-truth reports too)."""
    if not paths.data.is_dir():
        return None

    return scan_layout(paths.data).label_csvs.get("test")


def metrics_of(run_dir: Path, labels: Path | None) -> dict[str, Any] | None:
    """The run's headline metrics (`metrics/summary.json` of `evaluate_predictions`) if its evaluation
    finished with the same CE reference labels, else None (then it is evaluated again)."""
    files = RunFolder(run_dir)
    summary, ce = files.metrics_summary(), MetricsFolder(files.metrics()).ce_json
    if not (summary.is_file() and ce.is_file()):
        return None
    wanted = str(labels) if labels is not None else None
    used = json.loads(ce.read_text()).get("reference_labels")
    if wanted is not None and used != wanted or wanted is None and not str(used).startswith("labeler"):
        return None
    headline = json.loads(summary.read_text())["headline"]
    # evaluated before CRG/grounded findings existed: evaluate again
    return headline if "CRG" in headline else None


def _headline(metrics: Mapping[str, Any], run_dir: Path) -> dict[str, float | None]:
    """The numbers summary.json keeps for a run: every numeric headline metric plus the training steps.

    `region_accuracy` is null (not 0) for a run whose reports carry no region names at all (`no_rra`: without
    region-report alignment the model is never asked to name the organ), so no one reads it as a failure.
    """
    out: dict[str, float | None] = {k: float(v) for k, v in metrics.items()
                                    if isinstance(v, int | float) and not isinstance(v, bool)}
    region = MetricsFolder(RunFolder(run_dir).metrics()).region_json
    if region.is_file() and json.loads(region.read_text()).get("n_scored") == 0:
        out["region_accuracy"] = None  # no "The region i is X:" in the references (no_rra): not applicable
    for key in EVALUATION_METRICS:
        # not applicable for this run (e.g. no positive reference label): null, not 0
        out.setdefault(key, None)
    out["train_steps"] = float(trained_steps(run_dir) or 0)
    return out


def run_one(
    profile: Profile,
    paths: RunPaths,
    ab: Ablation,
    steps: int | None,
    names: Sequence[str],
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (unless finished), generate (unless complete) and evaluate one run; return its headline metrics.

    Each stage resumes: training from its newest checkpoint, generation from the rows already written.
    """
    run_dir = paths.run(run_folder(profile, ab.name, steps))
    files = RunFolder(run_dir)
    pred = files.predictions()
    labels = test_labels(paths)
    if force:
        for stale in (pred, files.metrics_summary(), files.train_summary):
            stale.unlink(missing_ok=True)
    decode = DecodeSettings.from_profile(profile.generate)
    if ab.imported:
        import_run(ab, run_dir, names)
        if ab.name in profile.ablations.imported:  # a row of this grid, trained by its command elsewhere
            check_imported_recipe(profile, ab, steps, paths, run_dir)
            check_imported_decoding(profile, ab, decode, pred)
    elif same_decoding(pred, asdict(decode), "test") is False:  # the profile's decoding changed since
        logger.warning(f"[ablate] WARNING {ab.name}: its predictions were generated with another decoding "
                       f"than the profile's ({decode.describe()}): generating them again")
        for stale in (pred, decoding_path(pred), files.metrics_summary()):
            stale.unlink(missing_ok=True)
    done = metrics_of(run_dir, labels)
    if done is not None and predictions_complete(pred, names) and trained_steps(run_dir) in (steps, None):
        logger.info(f"[ablate] {ab.name}: reusing {run_dir} ({trained_steps(run_dir)} steps)")
        return _headline(done, run_dir)
    start = time.perf_counter()
    have = trained_steps(run_dir)
    if not ab.imported and (have is None or (steps is not None and have != steps)):
        if have is not None:
            logger.warning(
                f"[ablate] WARNING {ab.name}: trained {have} steps, the grid uses {steps}: training it again"
            )
        logger.info(f"[ablate] {ab.name}: training {steps} steps ({ab.description})")
        train_run(profile_for(profile, ab), run_dir, cache_dir=paths.cache, tokenizer_dir=paths.tokenizer,
                  max_steps=steps, resume=not force and have is None, model_changes=dict(ab.changes) or None,
                  llm_arch=ab.llm_arch, progress=progress)
        pred.unlink(missing_ok=True)  # predictions of an older model must not be resumed into
    if not predictions_complete(pred, names):
        generate_run(run_dir, paths.cache, pred, decode=decode, batch_size=profile.generate.batch_size,
                     progress=progress)
    headline = _headline(evaluate_predictions(pred, files.metrics(), labels=labels,
                                              ground_truth=benchmark_manifest(paths.data)), run_dir)
    logger.info(f"[ablate] {ab.name}: done in {time.perf_counter() - start:.0f} s: "
                + ", ".join(f"{k} {headline[k]:.4f}" for k in SHOWN_METRICS if headline.get(k) is not None))
    return headline


def import_run(ab: Ablation, run_dir: Path, names: Sequence[str]) -> None:
    """Copy an imported run's committed files (`Ablation.imported`, relative to the repository) into
    `run_dir`, unless its predictions there are already complete. A one-line error when they are missing or do
    not cover the test cases `names` (another benchmark, or a profile whose test split differs)."""
    source = REPO_ROOT / str(ab.imported)
    pred = RunFolder(source).predictions()
    if predictions_complete(RunFolder(run_dir).predictions(), names):
        return
    if not pred.is_file():
        raise BadInputError(pred, f"run {ab.name} is imported (trained outside the grid) and its committed "
                                  "predictions are missing; restore them from git or drop the run")
    if not predictions_complete(pred, names):
        raise BadInputError(pred, f"run {ab.name}: the committed predictions do not cover this profile's "
                                  f"{len(names)} test cases; they belong to another benchmark or split")
    run_dir.mkdir(parents=True, exist_ok=True)
    for there, here in zip(RunFolder(source).imported, RunFolder(run_dir).imported, strict=True):
        if there.is_file():  # the predictions, and how they were made where the import has it
            with atomic_path(here) as tmp:
                shutil.copyfile(there, tmp)
    logger.info(f"[ablate] {ab.name}: imported the committed predictions of {source} (not trained here)")


#: run_config.json entries that say where or how often a run saved, not what it learned: left out when an
#: imported run's recipe is compared with the grid's.
_WHERE_NOT_WHAT = frozenset({"save_every", "keep_checkpoints", "num_workers", "fused_optimizer",
                             "vision_checkpoint", "perceiver_checkpoint", "llm_path"})


def recipe_of(profile: Profile, ab: Ablation, steps: int | None, paths: RunPaths) -> dict[str, Any]:
    """What `train_run` would write to run_config.json's `settings` and `model` for run `ab` of the grid,
    without the entries that do not change what it learns (`_WHERE_NOT_WHAT`)."""
    prof = profile_for(profile, ab)
    settings = asdict(TrainSettings.from_profile(prof.train, max_steps=steps))
    model = Reg2RGConfig.from_profile(prof, dict(ab.changes) or None, paths, llm_arch=ab.llm_arch).to_dict()
    return {part: {k: v for k, v in values.items() if k not in _WHERE_NOT_WHAT}
            for part, values in (("settings", settings), ("model", model))}


def check_imported_recipe(profile: Profile, ab: Ablation, steps: int | None, paths: RunPaths,
                          run_dir: Path) -> None:
    """A one-line error when a run the profile imports (`ablations.imported`) was trained with another recipe
    than the one the grid would train it with (another step count, seed, learning rate, model, ...): its row
    would compare two recipes. The fix: retrain it (`reg2rg ablate --runs NAME --train-imported`) and commit
    its files again."""
    config = RunFolder(run_dir).run_config
    if not config.is_file():
        raise BadInputError(config, f"run {ab.name} is imported without a run_config.json to tell its recipe")
    saved = json.loads(config.read_text())
    want = recipe_of(profile, ab, steps, paths)
    # a setting added after the run was trained is absent from its run_config; the kit adds a setting with
    # its old behaviour as the default, so the run was trained with that default
    defaults = {part: {f.name: f.default for f in fields(kind) if f.default is not MISSING}
                for part, kind in (("settings", TrainSettings), ("model", Reg2RGConfig))}
    for part, values in want.items():
        for key, value in values.items():
            had = (saved.get(part) or {}).get(key, defaults[part].get(key, "missing"))
            if json.loads(json.dumps(had)) != json.loads(json.dumps(value)):
                raise BadInputError(
                    REPO_ROOT / str(ab.imported),
                    f"imported run {ab.name} was trained with {part}.{key} = {had!r}, the grid trains "
                    f"{value!r}: retrain it (`reg2rg ablate --profile {profile.name} --runs {ab.name} "
                    f"--train-imported`) and commit its files here again",
                )


def check_imported_decoding(profile: Profile, ab: Ablation, decode: DecodeSettings, pred: Path) -> None:
    """A one-line error when the committed predictions of a row the profile imports were generated with
    another decoding than the profile's: the row would compare two decodings."""
    if same_decoding(pred, asdict(decode), "test") is False:
        raise BadInputError(
            REPO_ROOT / str(ab.imported),
            f"imported run {ab.name} was generated with another decoding than the profile's "
            f"({decode.describe()}): regenerate it (`reg2rg ablate --profile {profile.name} --runs {ab.name} "
            f"--train-imported`) and commit its files here again",
        )


@one_writer("out_dir", "ablate")  # its runs train and generate under this lock (worker processes too)
def run_ablations(
    profile: str | Profile,
    out_dir: str | os.PathLike[str],
    runs: Sequence[str] | None = None,
    max_steps: int | None = None,
    force: bool = False,
    n_resamples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    parallel: int | None = None,
    train_imported: bool = False,
) -> dict[str, Any]:
    """Run the grid, write `out_dir/summary.json` and `out_dir/ablation_stats.csv`; return the summary.

    `runs` defaults to the profile's `ablations.runs`, `max_steps` to its step count (`run_steps`),
    `n_resamples` to `ablations.resamples`, `parallel` (runs trained at once, in worker processes that share
    the CPU cores) to `ablations.parallel` (1: one after the other, in this process). Runs are independent and
    seeded, so the numbers do not depend on `parallel`. The runs the profile imports (`ablations.imported`)
    are evaluated from their committed files, or trained here with `train_imported`.
    """
    profile = load_profile(profile)
    paths = RunPaths(out_dir)
    if not (paths.cache / "manifest.json").is_file():
        raise KitError(f"no prep cache at {paths.cache}: run notebooks 01-03 (or `reg2rg prepare`) first")
    ensure_inputs(profile, paths)  # the tokenizer, when notebook 03 has not trained one (CPU presets)
    steps = max_steps if max_steps is not None else run_steps(profile)
    names = _test_names(paths.cache)
    todo = grid_for(profile, runs, train_imported=train_imported)
    logger.info(
        f"[ablate] profile {profile.name}: {len(todo)} runs x {steps} steps, {len(names)} test cases: "
        + ", ".join(a.name for a in todo)
    )
    results: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    if steps != profile.train.max_steps:
        logger.info(f"[ablate] the grid trains {steps} steps, notebook 03's full {profile.train.max_steps}: "
                    f"every run of the grid, full included, goes to runs/<name>_s{steps}/")
    unique: list[Ablation] = []
    for ab in todo:
        twin = next((u.name for u in unique if same_model_as(profile, ab, u)), None)
        if twin is not None:
            logger.info(f"[ablate] {ab.name}: the same model as {twin}; reusing its outputs")
            aliases[ab.name] = twin
        else:
            unique.append(ab)
    rules = RuleLabeler()  # pretrains the ViT when a run loads it and it is missing (notebook 02 did not)
    ensure_pretrained_vision(profile, paths, lambda texts: rules.label(texts).to_numpy(), unique,
                             progress=progress)
    workers = max(1, min(parallel if parallel is not None else profile.ablations.parallel,
                         len(unique)))
    if workers == 1:
        for ab in unique:
            results[ab.name] = run_one(profile, paths, ab, steps, names, force=force, progress=progress)
    else:
        results.update(_run_parallel(profile, paths, unique, steps, names, force, workers))
    for name, twin in aliases.items():
        results[name] = results[twin]
    results = {a.name: results[a.name] for a in todo}  # the grid's order, full first
    folders = {a.name: run_folder(profile, aliases.get(a.name, a.name), steps) for a in todo}
    baselines = annotate_runs(profile, paths, results, folders, names, test_labels(paths), progress)
    summary = write_summary(paths, profile.name, results)
    resamples = n_resamples or profile.ablations.resamples
    stats = ablation_stats(paths, [a.name for a in todo], aliases, folders, n_resamples=resamples, seed=seed,
                           baselines=baselines, seeds=[profile.train.seed])
    with atomic_path(paths.ablation_stats) as tmp:
        stats.to_csv(tmp, index=False, lineterminator="\n")
    return summary


class _Collect(logging.Handler):
    """Keeps a worker process's `reg2rg_lib` messages, each labelled with its run (`[no_lfd] [train] ...`), so
    that the parent logs them when the run is done and two workers' lines never mix unnamed."""

    def __init__(self, label: str) -> None:
        super().__init__(logging.INFO)
        self.label = label
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"[{self.label}] {record.getMessage()}")


def _worker(
    profile: Profile,
    out_dir: str,
    ab: Ablation,
    steps: int | None,
    names: Sequence[str],
    force: bool,
    threads: int,
) -> tuple[str, dict[str, Any], list[str]]:
    """One run in a worker process (`run_ablations(parallel>1)`): its headline metrics and its labelled
    messages.

    The messages go back to the parent only: they do not propagate to the worker's root logger, where a
    library's `logging.basicConfig()` (absl's, through rouge_score) would print them, unlabelled, on the
    stderr that the workers and the notebook share."""
    torch.set_num_threads(threads)
    package_logger, collect = logging.getLogger(KIT_LOGGER), _Collect(ab.name)
    package_logger.setLevel(logging.INFO)
    package_logger.addHandler(collect)
    propagate, package_logger.propagate = package_logger.propagate, False
    try:
        headline = run_one(profile, RunPaths(out_dir), ab, steps, names, force=force, progress=False)
    finally:
        package_logger.removeHandler(collect)
        package_logger.propagate = propagate
    return ab.name, headline, collect.lines


def train_rows(profile: Profile, out_dir: str | os.PathLike[str], rows: Sequence[Ablation],
               threads: int = 1) -> list[str]:
    """Train, generate and evaluate `rows` one after the other in this process, each as a grid worker does
    (`threads` torch threads, messages labelled with the run); return the messages. `experiments.beside` runs
    it in its second process, beside notebook 03's `full`."""
    names = _test_names(RunPaths(out_dir).cache)
    steps = run_steps(profile)
    lines: list[str] = []
    for ab in rows:
        lines += _worker(profile, str(out_dir), ab, steps, names, False, threads)[2]
    return lines


def _run_parallel(profile: Profile, paths: RunPaths, runs: Sequence[Ablation], steps: int | None,
                  names: Sequence[str], force: bool, workers: int) -> dict[str, dict[str, Any]]:
    """`runs` in `workers` spawned processes, each with an equal share of the cores (small models train faster
    on one thread each, side by side, than on all threads one after the other). The largest LLM starts
    first."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    order = sorted(runs, key=lambda a: a.llm_arch is None)  # llm_<arch> runs first: they take longest
    logger.info(f"[ablate] {len(order)} runs in {workers} worker processes x {threads} thread(s): "
                + ", ".join(a.name for a in order))
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, profile, str(paths.root), ab, steps, names, force, threads)
                   for ab in order]
        for fut in cf.as_completed(futures):
            name, headline, lines = fut.result()
            for line in lines:
                logger.info(line)
            results[name] = headline
            logger.info(
                f"[ablate] {len(results)}/{len(order)} runs finished ({time.perf_counter() - start:.0f} s)"
            )
    return results
