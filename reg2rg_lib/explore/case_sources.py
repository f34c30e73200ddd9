"""What the explorer shows, loaded from disk: a case's CT, its region masks, the ground truth and predictions.

Two kinds of dataset are accepted (`open_dataset` tells them apart):
- a dataset in the RadGenome-ChestCT layout (the embedded benchmark by default), read through
  `reg2rg_lib.data.layout`: full-resolution volumes in HU with their affine, so slices are shown the right way
  up;
- a prepared cache (`reg2rg prepare`), read through `reg2rg_lib.data.prep.load_cache`: the model's own input
  at `image_size` (the whole CT "full" tensor and the "geometry" masks), to look at exactly what the model
  saw.
Predictions come from any number of CSVs in the released format (`AccNum, Question, GT_combined_report,
Pred_combined_report`; the authors' `GT_whole_report`/`Pred_whole_report` spelling is accepted too), and each
run's per-case NLG scores from the `metrics/nlg_per_sample.csv` beside its predictions when notebook 04 wrote
one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reg2rg_lib.data.layout import case_id
from reg2rg_lib.data.sources import VolumeSource
from reg2rg_lib.metrics.csv_inputs import ID_COLUMNS, read_report_pairs
from reg2rg_lib.metrics.nlg import SAMPLE_METRICS
from reg2rg_lib.paths import MetricsFolder, RunFolder


@dataclass
class ExploreCase:
    """Everything the explorer shows for one case.

    `volume` is (X, Y, Z) float32 in HU and RAS+ voxel order; `masks` maps region -> bool (X, Y, Z) in
    canonical region order; `spacing` is the voxel size in mm. `predictions` maps a source name (e.g. a run)
    to its report.
    """

    name: str
    volume: np.ndarray
    masks: dict[str, np.ndarray]
    spacing: tuple[float, float, float]
    gt_report: str = ""
    predictions: dict[str, str] = field(default_factory=dict)
    #: source -> this case's per-sample NLG scores, where the run's metrics folder has them
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def read_prediction_table(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Case id -> (ground-truth report, predicted report) from a predictions CSV (Evaluation's reader, which
    knows the kit's and the released column spellings and names the file when it is not a predictions CSV)."""
    pairs = read_report_pairs(path)
    return {case_id(i): (gt, pred) for i, gt, pred in zip(pairs.ids, pairs.references, pairs.predictions)}


def per_sample_scores(predictions_csv: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Case -> {metric: value} from the `metrics/nlg_per_sample.csv` next to a predictions CSV ({} if absent).

    That file is what notebook 04 (`metrics.evaluate_predictions`) writes for a run; scores are not recomputed
    here.
    """
    path = MetricsFolder(RunFolder(Path(predictions_csv).parent).metrics()).nlg_per_sample
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype={c: str for c in ID_COLUMNS})
    id_col = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_col is None:
        return {}
    shown = [c for c in SAMPLE_METRICS if c in frame.columns]
    return {case_id(row[id_col]): {c: float(row[c]) for c in shown} for _, row in frame.iterrows()}


def as_prediction_files(predictions: object) -> dict[str, Path]:
    """Accept None, one path, a list of paths or a {name: path} mapping; return {name: path}.

    A run's CSV (`runs/<name>/predictions.csv`) is named after its run folder; other files after their stem.
    """
    if predictions is None or predictions == "":
        return {}
    if isinstance(predictions, Mapping):
        return {str(k): Path(v) for k, v in predictions.items()}
    items = [predictions] if isinstance(predictions, (str, os.PathLike)) else list(predictions)  # type: ignore[arg-type]
    out: dict[str, Path] = {}
    for item in items:
        p = Path(item)
        name = p.parent.name if p.name == RunFolder(p.parent).predictions().name and p.parent.name else p.stem
        while name in out:
            name += "'"
        out[name] = p
    return out


class Explorable:
    """A dataset plus prediction files: the case list and fully assembled `ExploreCase` for the explorer.

    Only cases that are in the dataset are listed; when predictions are given, the cases they cover come first
    (those are the interesting ones) in the predictions' order.
    """

    def __init__(self, source: VolumeSource, predictions: object = None) -> None:
        self.source = source
        self.prediction_files = as_prediction_files(predictions)
        self.tables = {name: read_prediction_table(p) for name, p in self.prediction_files.items()}
        self.scores = {name: per_sample_scores(p) for name, p in self.prediction_files.items()}

    def describe(self) -> str:
        """What is being explored, in a few lines (for the notebook's log)."""
        lines = [f"{len(self.source.names())} cases in {getattr(self.source, 'root', 'memory')}"]
        for name, path in self.prediction_files.items():
            lines.append(f"predictions {name}: {len(self.tables[name])} cases from {path}")
        if not self.prediction_files:
            lines.append("no predictions found: showing the ground truth only (run notebooks 03-05 first)")
        return "\n".join(lines)

    def names(self) -> list[str]:
        available = self.source.names()
        have = set(available)
        predicted = [k for t in self.tables.values() for k in t if k in have]
        first = list(dict.fromkeys(predicted))
        return first + [n for n in available if n not in set(first)]

    def load(self, name: str) -> ExploreCase:
        volume, masks, spacing, gt = self.source.load(name)
        preds = {src: t[name][1] for src, t in self.tables.items() if name in t}
        for t in self.tables.values():  # the GT the metrics were computed on, when a predictions file has it
            if name in t and t[name][0].strip():
                gt = t[name][0]
                break
        scores = {src: s[name] for src, s in self.scores.items() if name in s}
        return ExploreCase(name, volume, masks, spacing, gt, preds, scores)
