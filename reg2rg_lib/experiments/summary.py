"""The ablation grid (Tables 4-7): train, generate and evaluate each variant of Reg2RG on the embedded benchmark.

| run | model change | paper |
|---|---|---|
| `full` | texture + geometry + global tokens, LFD, RRA (notebook 03's run, reused) | every table's reference |
| `no_lfd` | `decoupled=False`: the region's masked, uncropped CT through ViT+Perceiver, no geometry token | Table 4 |
| `texture_only` | `use_geometry=False, use_global=False` | Table 5 |
| `texture_geometry` | `use_global=False` | Table 5 |
| `no_rra` | `rra=False`: paragraphs in canonical order without "The region i is X:" (no region dropout either) | Table 6 |
| `llm_<arch>` | the LLM swapped for `LLM_ARCHS[arch]` (`tiny`, `small`, ...), everything else as `full` | Table 7 |

Every run uses the profile's seeds, data and step count (`ablations.max_steps`, default `train.max_steps`), the
Training stage's `train_run` (frozen-ViT outputs cached once per case and shared by every run with the same
encoder) and `generate_run` (greedy decoding), and the Evaluation stage's `evaluate_predictions` against the
benchmark's exact test labels. A run whose predictions and metrics are complete is reused, so an interrupted grid
resumes and notebook 03's `full` is not trained again; `llm_<arch>` with the profile's own LLM is the `full` model
and reuses its outputs. A grid with a shorter step count than training (to fit a time budget) keeps its runs, its
own `full` included, in `runs/<name>_s<steps>/`, so that every comparison is at equal steps and notebook 03's run
is never overwritten.

Uncertainty (`ablation_stats`): for every headline metric, a bootstrap 95% CI over test cases and a paired
bootstrap test against `full` with the same resample indices for all runs (`reg2rg_lib.metrics.stats`).
Outputs: `out_dir/summary.json` (`{"profile", "runs": {run: {metric: value}}}`) and `out_dir/ablation_stats.csv`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import write_json_atomic
from reg2rg_lib.paths import RunPaths

#: The metrics summary.json must carry for every run (the issue's contract); more keys may follow.
SUMMARY_METRICS: tuple[str, ...] = ("region_accuracy", "BLEU-4", "METEOR", "ROUGE-L", "CE_micro_F1")
REFERENCE = "full"
STATS_FILE = "ablation_stats.csv"


def write_summary(paths: RunPaths, profile: str, results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Merge `results` into `out_dir/summary.json` (`{"profile", "runs": {run: {metric: value}}}`), atomically.

    Runs already in the file (e.g. from an earlier grid with other runs) are kept; this grid's runs come first.
    """
    old: dict[str, Any] = {}
    if paths.summary.is_file():
        try:
            old = json.loads(paths.summary.read_text())
        except json.JSONDecodeError:
            old = {}
    if old.get("profile") not in (None, profile):
        old = {}  # another profile's summary in this folder: do not mix
    runs = {name: dict(metrics) for name, metrics in results.items()}
    for name, metrics in (old.get("runs") or {}).items():
        runs.setdefault(name, metrics)
    for name, metrics in runs.items():
        missing = [m for m in SUMMARY_METRICS if m not in metrics]
        if missing:
            raise KitError(f"run {name}: evaluation gave no {', '.join(missing)}; cannot write {paths.summary}")
    summary = {"profile": profile, "runs": runs}
    write_json_atomic(paths.summary, summary)
    return summary


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A `summary.json`, checked: a profile and, for every run, the headline metrics."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "summary not found; run the ablations (`reg2rg ablate`, notebook 05) first")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadInputError(path, f"not valid JSON ({err})") from None
    if not isinstance(summary.get("runs"), dict) or "profile" not in summary:
        raise BadInputError(path, 'expected {"profile": ..., "runs": {run: {metric: value}}}')
    return summary
