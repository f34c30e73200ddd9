"""`summary.json`: the headline metrics of every run of one profile
(`{"profile", "runs": {run: {metric: value}}}`).

`SUMMARY_METRICS` are the keys every run carries; runs from an earlier grid are kept when a new grid is merged
in. `EVALUATION_METRICS` every run carries too, null where not applicable (`topic_consistency` is null for a
run whose reports name no region, as `region_accuracy` is); `SHOWN_METRICS` are the columns of the README's
table.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import write_json_atomic
from reg2rg_lib.paths import RunPaths

#: The metrics summary.json must carry for every run (the tables, the README block and the seed files read
#: them); more keys may follow.
SUMMARY_METRICS: tuple[str, ...] = ("region_accuracy", "BLEU-4", "METEOR", "ROUGE-L", "CE_micro_F1")
#: Evaluation beyond the paper that every run also carries: null where not applicable (CRG without a
#: positive reference label, grounded findings off the embedded benchmark, attribute accuracy with nothing
#: checked).
EVALUATION_METRICS: tuple[str, ...] = (
    "CRG",
    "grounded_recall",
    "attribute_accuracy",
    "false_findings_per_case",
    "region_CE_macro_F1",
    "topic_consistency",
)
#: The columns a summary table shows (the README's demo block): the contract's metrics with topic consistency
#: (the share of generated paragraphs on the topic of the organ they name) beside region accuracy, which reads
#: the organ name only.
SHOWN_METRICS: tuple[str, ...] = ("region_accuracy", "topic_consistency",
                                  *(m for m in SUMMARY_METRICS if m != "region_accuracy"))
REFERENCE = "full"


def write_summary(paths: RunPaths, profile: str, results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Merge `results` into `out_dir/summary.json` (`{"profile", "runs": {run: {metric: value}}}`),
    atomically.

    Runs already in the file (e.g. from an earlier grid with other runs) are kept; this grid's runs come
    first.
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
            raise KitError(
                f"run {name}: evaluation gave no {', '.join(missing)}; cannot write {paths.summary}"
            )
    summary = {"profile": profile, "runs": runs, "environment": environment()}
    write_json_atomic(paths.summary, summary)
    return summary


def environment() -> dict[str, Any]:
    """What the numbers were computed with: Python, the platform, torch's CPU kernels and threads, and the
    version of every installed distribution (what `make setup` installed from constraints.txt)."""
    packages = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "packages": dict(sorted((k, v) for k, v in packages.items() if k)),
    }


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
