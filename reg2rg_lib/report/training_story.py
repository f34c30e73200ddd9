"""Notebook 03's prose about a training run: the schedule and the loss it actually used (from run_config.json
and train_log.csv, else the profile), the shape of its loss curve, and whether the logged learning rate
follows the stated schedule.

    training_story(run_dir, profile)   the schedule and the loss the run used, the curve's shape (Markdown)
    schedule_check(run_dir, profile)   the logged learning rate follows the stated schedule (an `Expectation`)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.paths import RunFolder
from reg2rg_lib.profiles import Profile, load_profile
from reg2rg_lib.report.narrative import Expectation, expectation
from reg2rg_lib.samples.dataset import FEW_REGIONS
from reg2rg_lib.train.loop import TrainSettings, lr_multiplier, read_train_log

PLATEAU_TAIL = 0.2  # the share of the last steps `loss_trend` looks at
# |relative change of the mean loss| within the tail below which the curve has plateaued
PLATEAU_TOLERANCE = 0.05


def run_settings(
    run_dir: str | os.PathLike[str], profile: str | Profile | None = None
) -> tuple[TrainSettings, dict, str]:
    """(the training settings a run used, its model config as a dict, where they came from): the run's
    `run_config.json` when it exists, else the profile's `train` section (the run has not been trained
    yet)."""
    path = RunFolder(run_dir).run_config
    if path.is_file():
        try:
            config = json.loads(path.read_text())
            known = {k: v for k, v in config["settings"].items() if k in TrainSettings.__dataclass_fields__}
            return TrainSettings(**known), dict(config.get("model") or {}), path.name
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BadInputError(path, f"not a run config ({err})") from None
    if profile is None:
        raise BadInputError(
            path, "not found, and no profile given to read the settings from; train the run first"
        )
    return (
        TrainSettings.from_profile(load_profile(profile).train),
        {},
        f"profile {load_profile(profile).name}",
    )


def loss_trend(losses: Sequence[float], tail: float = PLATEAU_TAIL, tolerance: float = PLATEAU_TOLERANCE
               ) -> dict[str, Any]:
    """The loss over the last `tail` share of the steps, split in two halves: their means, the relative
    change and the verdict (`plateau` when |change| < `tolerance`, `falling`, `rising`; `too short` under 4
    steps)."""
    values = np.asarray(losses, dtype=np.float64)
    n_tail = int(math.ceil(len(values) * tail))
    out: dict[str, Any] = {"tail_steps": n_tail, "tail": tail, "tolerance": tolerance}
    if n_tail < 4:
        return out | {"verdict": "too short"}
    window = values[-n_tail:]
    first, second = float(window[: n_tail // 2].mean()), float(window[n_tail // 2:].mean())
    change = (second - first) / abs(first) if first else math.inf
    verdict = "plateau" if abs(change) < tolerance else ("falling" if change < 0 else "rising")
    return out | {"first_half_mean": first, "second_half_mean": second, "relative_change": change,
                  "verdict": verdict}


def _schedule_sentence(s: TrainSettings, total: int | None) -> str:
    steps = f"{s.warmup_steps} step" + ("" if s.warmup_steps == 1 else "s")
    warm = (f"rose linearly from 0 to {s.lr:g} over the first {steps}, then"
            if s.warmup_steps > 0 else f"started at {s.lr:g} (no warm-up) and")
    if s.lr_schedule == "constant":
        return (
            f"The learning rate {warm} stayed constant at {s.lr:g} (`train.lr_schedule: constant`, the "
            "paper's)."
        )
    end = f"step {total}" if total else "the last step"
    return (f"The learning rate {warm} followed a {s.lr_schedule} decay to 0 at {end} "
            f"(`train.lr_schedule: {s.lr_schedule}`; the paper keeps it constant after the warm-up).")


def _loss_sentence(s: TrainSettings, model: Mapping[str, Any]) -> str:
    rra = bool(model.get("rra", True))
    w = float(s.region_name_weight)
    if w == 1.0:
        text = (
            "The loss is plain next-token cross-entropy on the target tokens (`train.region_name_weight: 1`, "
            "as in the paper)."
        )
    elif rra:
        text = (
            f'The loss is next-token cross-entropy with the organ-name tokens of the "The region i is '
            f'<organ>:" prefixes weighted {w:g}x (`train.region_name_weight: {w:g}`; the paper: 1, plain '
            "cross-entropy), normalised by the number of target tokens."
        )
    else:
        text = (
            f"The loss is next-token cross-entropy; `train.region_name_weight: {w:g}` has no organ names to "
            'weigh here (without RRA the targets carry no "The region i is <organ>:" prefixes).'
        )
    if s.region_dropout and rra:
        text += (
            f" Region dropout: {s.region_dropout:.0%} of the training samples lose "
            f"1-{s.region_dropout_max} regions (not in the paper)."
        )
    if s.region_few and rra:
        text += (f" {s.region_few:.0%} of the samples keep only 1-{FEW_REGIONS} of their regions (not in the "
                 "paper).")
    if s.branch_dropout:
        text += (f" Branch dropout: each region's texture tokens are zeroed with probability "
                 f"{s.branch_dropout:g}, else its geometry token with {s.branch_dropout:g} (not in the "
                 "paper).")
    if s.geometry_dropout:
        text += (f" Geometry dropout: each region's geometry token is zeroed with probability "
                 f"{s.geometry_dropout:g} more, never its texture (not in the paper).")
    if s.label_weight:
        text += (f" Added to it, {s.label_weight:g} x a region label loss: a linear head on the LLM's last "
                 "state where each region's paragraph begins predicts that region's CT-RATE labels (binary "
                 "cross-entropy; `train.label_weight`, not in the paper; the reports are written without "
                 "it).")
    return text


def training_story(run_dir: str | os.PathLike[str], profile: str | Profile | None = None,
                   tail: float = PLATEAU_TAIL) -> str:
    """Notebook 03's account of a run, in Markdown: the schedule and the loss it actually used
    (run_config.json, else the profile), the logged learning rate and loss, and whether the loss plateaued
    over the last `tail` share of the steps (`loss_trend`)."""
    settings, model, origin = run_settings(run_dir, profile)
    log = read_train_log(run_dir) if RunFolder(run_dir).train_log.is_file() else []
    total = settings.max_steps or (int(log[-1]["step"]) if log else None)
    parts = [_schedule_sentence(settings, total), _loss_sentence(settings, model)]
    if not log:
        parts.append(f"(Settings from {origin}; `train_log.csv` has no steps yet.)")
        return " ".join(parts)
    steps, losses, lrs = ([r[k] for r in log] for k in ("step", "loss", "lr"))
    peak = int(np.argmax(lrs))
    parts.append(
        f"The log ({len(log)} steps, settings from {origin}) shows the learning rate at {lrs[peak]:.3g} "
        f"at its peak (step {steps[peak]:.0f}) and {lrs[-1]:.3g} at the last step ({steps[-1]:.0f}); the "
        f"loss went from {losses[0]:.4f} at step {steps[0]:.0f} to {losses[-1]:.4f}."
    )
    trend = loss_trend(losses, tail)
    if trend["verdict"] == "too short":
        parts.append(f"Too few steps ({len(log)}) to say whether the loss plateaued.")
    else:
        what = {"plateau": "it has plateaued", "falling": "it is still falling",
                "rising": "it is rising"}[trend["verdict"]]
        parts.append(
            f"Over the last {tail:.0%} of the steps ({trend['tail_steps']} steps) the mean loss went from "
            f"{trend['first_half_mean']:.4f} (first half) to {trend['second_half_mean']:.4f} (second "
            f"half), {trend['relative_change']:+.1%}: {what} (plateau: a change within "
            f"±{trend['tolerance']:.0%})."
        )
    return " ".join(parts)


def schedule_check(run_dir: str | os.PathLike[str], profile: str | Profile | None = None) -> Expectation:
    """Does the logged learning rate follow the schedule the run states (`train.loop.lr_multiplier`)? Step s
    of `train_log.csv` records the rate its update used, multiplier(s - 1) x lr."""
    settings, _, origin = run_settings(run_dir, profile)
    log = read_train_log(run_dir) if RunFolder(run_dir).train_log.is_file() else []
    text = f"the logged learning rate follows the stated schedule ({settings.lr_schedule}, from {origin})"
    if not log:
        return expectation(None, text, "no train_log.csv yet")
    if settings.max_steps is None and settings.lr_schedule != "constant":
        return expectation(None, text, "a decay over epochs: its length is not in the log")
    total = settings.max_steps or int(log[-1]["step"])
    mult = lr_multiplier(settings.lr_schedule, settings.warmup_steps, total)
    gaps = [abs(r["lr"] - settings.lr * mult(int(r["step"]) - 1)) for r in log]
    worst = int(np.argmax(gaps))
    return expectation(
        gaps[worst] <= 1e-6 * settings.lr + 1e-12,
        text,
        f"largest gap {gaps[worst]:.3g} at step {log[worst]['step']:.0f} over {len(log)} steps",
    )
