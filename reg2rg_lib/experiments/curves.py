"""Region accuracy against training step (notebook 03's curve), on the VALIDATION split.

The training log holds the loss only; whether the model names the organs of the prompt's regions shows in its
generated reports. A checkpoint's score is the region accuracy (`metrics.region`) of the "The region i is X:"
names in its greedy reports of the first `CURVE_CASES` validation cases (never the test split: this is a
training-time look). Two ways to get the points:

- during training: `checkpoint_scorer(...)` is a `train_run(..., on_checkpoint=...)` callback that scores each
  checkpoint as soon as it is saved, before the Training stage prunes it (it keeps the newest
  `keep_checkpoints`), and writes its row to `run_dir/region_accuracy_by_step.csv`; so the demo's 2000 steps
  with `save_every` 500 give 4 points although only 2 checkpoints stay on disk;
- afterwards: `region_accuracy_by_step` scores every complete checkpoint still on disk (reports cached under
  `run_dir/curve/`, so a rerun only reads them) and adds the rows of the table for the pruned steps.

`report.kit_figures.kit_fig5_region_accuracy_by_step` draws the result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.infer.generate import DecodeSettings, generate_run
from reg2rg_lib.infer.predictions import read_predictions
from reg2rg_lib.io import read_complete_csv, write_csv_atomic
from reg2rg_lib.metrics.csv_inputs import read_report_pairs
from reg2rg_lib.metrics.region import region_recognition
from reg2rg_lib.paths import COMPLETE, RunFolder, list_checkpoints
from reg2rg_lib.profiles import Profile, load_profile

logger = logging.getLogger(__name__)

CURVE_DIR = "curve"
STEP_TABLE = "region_accuracy_by_step.csv"
#: topic_consistency (the share of the reports' paragraphs on their named organ's topic) is empty in tables
#: written before it was added.
CURVE_COLUMNS = ("step", "region_accuracy", "topic_consistency", "n_scored", "n_cases", "split",
                 "predictions")
#: Validation cases whose reports score each checkpoint: a few seconds of greedy decoding on the demo.
CURVE_CASES = 16


def _expected_cases(cache_dir: str | os.PathLike[str], split: str, limit: int | None) -> int:
    n = len(load_cache(cache_dir).cases(split))
    return min(n, limit) if limit else n


def score_checkpoint(
    step: int,
    folder: Path,
    run_dir: Path,
    cache_dir: str | os.PathLike[str],
    profile: Profile,
    split: str = "validation",
    limit: int | None = CURVE_CASES,
    progress: bool = False,
) -> dict[str, Any]:
    """The curve's row of the checkpoint `folder` (step `step`): its reports of the first `limit` cases of
    `split` (`run_dir/curve/<split>-step-N.csv`, reused while newer than the checkpoint and complete) and
    their region accuracy (None where no reference region is numbered, e.g. a run without RRA) and topic
    consistency (None where the reports number no paragraph)."""
    out = run_dir / CURVE_DIR / f"{split}-step-{step}.csv"
    want = _expected_cases(cache_dir, split, limit)
    if out.is_file() and (out.stat().st_mtime < (folder / COMPLETE).stat().st_mtime
                          or len(read_predictions(out)) != want):
        out.unlink()  # an older training's reports at this step, or another number of cases
    if not out.is_file():
        decode = DecodeSettings.from_profile(profile.generate)
        generate_run(
            folder,
            cache_dir,
            out,
            decode=decode,
            batch_size=profile.generate.batch_size,
            split=split,
            limit=limit,
            progress=progress,
        )
    pairs = read_report_pairs(out, allow_empty_predictions=True)
    m = region_recognition(pairs.references, pairs.predictions, pairs.ids)
    row = {
        "step": step,
        "region_accuracy": m["accuracy"] if m["n_scored"] else None,
        "topic_consistency": m["topic_consistency"],
        "n_scored": m["n_scored"],
        "n_cases": m["n"],
        "split": split,
        "predictions": str(out.relative_to(run_dir)),
    }
    acc, topic = (f"{v:.4f}" if v is not None else "n/a" for v in (row["region_accuracy"],
                                                                     row["topic_consistency"]))
    logger.info(f"[curve] step {step}: region accuracy {acc}, topic consistency {topic} on {m['n']} {split} "
                "cases")
    return row


def read_step_table(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """`run_dir/region_accuracy_by_step.csv` as written during training (empty when absent)."""
    path = Path(run_dir) / STEP_TABLE
    rows = read_complete_csv(path)[1] if path.is_file() else []
    table = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    for col in ("step", "n_scored", "n_cases"):
        table[col] = pd.to_numeric(table[col]).astype(int)
    for col in ("region_accuracy", "topic_consistency"):  # "" or a missing column (older tables): NaN
        table[col] = pd.to_numeric(table[col].replace("", None), errors="coerce")
    return table


def checkpoint_scorer(
    run_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    profile: str | Profile,
    limit: int | None = CURVE_CASES,
    split: str = "validation",
    fresh: bool = False,
) -> Callable[[int, Path], None]:
    """An `on_checkpoint(step, folder)` callback for `train.run.train_run`: score each checkpoint as it is
    saved and keep its row in `run_dir/region_accuracy_by_step.csv`. Rows of steps at or after the one just
    saved (a restarted or resumed run's future) are replaced; `fresh` (a run started from step 0,
    `resume=False`) drops all earlier rows at the first checkpoint."""
    run_dir, prof, drop_all = Path(run_dir), load_profile(profile), [fresh]

    def on_checkpoint(step: int, folder: Path) -> None:
        if not _expected_cases(cache_dir, split, limit):
            logger.warning(f"[curve] the prep cache {cache_dir} has no {split} cases: step {step} not scored")
            return
        row = score_checkpoint(step, Path(folder), run_dir, cache_dir, prof, split, limit)
        kept = (
            []
            if drop_all[0]
            else [r for r in read_step_table(run_dir).to_dict("records") if r["step"] < step]
        )
        drop_all[0] = False
        # NaN: ""
        rows = [{k: ("" if v is None or v != v else v) for k, v in r.items()} for r in [*kept, row]]
        write_csv_atomic(run_dir / STEP_TABLE, CURVE_COLUMNS, rows, lineterminator="\n")

    return on_checkpoint


def region_accuracy_by_step(
    run_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    profile: str | Profile,
    limit: int | None = CURVE_CASES,
    split: str = "validation",
    progress: bool = False,
) -> pd.DataFrame:
    """One row per scored step, in step order: step, region_accuracy (None where no reference region is
    numbered), n_scored, n_cases, split, predictions (the CSV, relative to `run_dir`).

    Checkpoints still on disk are scored here (`score_checkpoint`, reports cached); steps pruned since come
    from `run_dir/region_accuracy_by_step.csv` when `checkpoint_scorer` wrote them during training with the
    same split and number of cases. Reports are decoded with the profile's `generate` settings, as notebook
    04's are."""
    run_dir, prof = Path(run_dir), load_profile(profile)
    if not _expected_cases(cache_dir, split, limit):
        logger.warning(f"[curve] the prep cache {cache_dir} has no {split} cases: no checkpoint scored")
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    rows = [score_checkpoint(step, folder, run_dir, cache_dir, prof, split, limit, progress)
            for step, folder in list_checkpoints(RunFolder(run_dir).checkpoints)]
    on_disk, want = {r["step"] for r in rows}, _expected_cases(cache_dir, split, limit)
    last = max(on_disk, default=None)
    for r in read_step_table(run_dir).to_dict("records"):
        if (r["step"] not in on_disk and r["split"] == split and r["n_cases"] == want
                and (last is None or r["step"] < last)):
            rows.append({**r, **{k: None if pd.isna(r[k]) else r[k]
                                 for k in ("region_accuracy", "topic_consistency")}})
    return pd.DataFrame(sorted(rows, key=lambda r: r["step"]), columns=list(CURVE_COLUMNS))


def curve_story(curve: pd.DataFrame, baseline: float | None = None) -> str:
    """Notebook 03's sentence under the curve, from the curve's own rows (and the canonical-order baseline on
    the same cases, when given)."""
    if curve.empty:
        return (
            "No checkpoint was scored: the run has no complete checkpoint and no rows written while "
            "training, or the prep cache has no validation cases (rebuild it with notebook 01)."
        )
    points = ", ".join(
        f"step {int(r.step)}: " + ("n/a" if pd.isna(r.region_accuracy) else f"{r.region_accuracy:.4f}")
        + ("" if pd.isna(topic := getattr(r, "topic_consistency", None)) else f" (topic {topic:.4f})")
        for r in curve.itertuples()
    )
    n, split = int(curve["n_cases"].iloc[-1]), curve["split"].iloc[-1]
    text = (
        "Region accuracy (and topic consistency: the share of paragraphs on their named organ's topic) of "
        f"the reports of {n} {split} cases at {len(curve)} checkpoint(s): {points}."
    )
    last = curve["region_accuracy"].iloc[-1]
    if baseline is not None and not pd.isna(last):
        side = "above" if last > baseline else "below" if last < baseline else "equal to"
        text += (
            f" Writing the organ names in canonical order (position alone) scores {baseline:.4f} on the same "
            f"cases; the last checkpoint is {side} it ({last - baseline:+.4f})."
        )
    elif baseline is None:
        text += " No canonical-order baseline was computed for these cases."
    if len(curve) < 2:
        text += " One point is no curve: save checkpoints more often (`train.save_every`) to see the trend."
    return text
