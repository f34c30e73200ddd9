"""The region-grounded report explorer (notebook 07): look at a case's CT, its region masks and its reports.

Modules: `paragraphs` (region paragraphs, alignment, word diffs as HTML), `case_scores` (per-case metrics,
labeler findings), `locate` (the slice of a finding), `case_sources` (prediction files beside a dataset from
`data.sources`; slices are drawn by `data.slices`), `widgets` (the ipywidgets `Explorer`), `snapshot` (a
static PNG of the current view), `export` (HTML export of an executed notebook with its widget state, and the
`make screenshot` check in headless Chromium).

    from reg2rg_lib.explore import open_explorer
    ex = open_explorer("outputs/demo")          # the run's benchmark + runs/full predictions
    ex.show_finding()                           # focus a ground-truth finding, at its slice
    ex.widget                                   # display it; ex.select_region("lung"); ex.snapshot(path)
    open_explorer("outputs/demo", runs=["full", "no_rra"])   # a second prediction column
    open_explorer("outputs/demo", report_dir="outputs/demo/own_ct/report")   # a `reg2rg report` folder
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from reg2rg_lib.data.layout import mask_filename
from reg2rg_lib.data.nifti import read_nifti
from reg2rg_lib.data.sources import ArraySource, CacheSource, LayoutSource, to_ras
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.explore.case_sources import Explorable
from reg2rg_lib.explore.widgets import Explorer
from reg2rg_lib.paths import ReportFolder, RunFolder, RunPaths
from reg2rg_lib.regions import REGIONS

if TYPE_CHECKING:
    from reg2rg_lib.data.sources import VolumeSource
    from reg2rg_lib.explore.widgets import Explorer

#: Runs whose predictions the explorer shows by default, when present: the full model only. An ablation such
#: as `no_rra` writes no region prefixes, so beside the ground truth every row of its column reads "missing".
DEFAULT_RUNS: tuple[str, ...] = ("full",)


def open_dataset(path: str | os.PathLike[str]) -> VolumeSource:
    """A dataset folder for the explorer: a prepared cache (`cases/*.safetensors`) or the RadGenome layout."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInputError(path, "dataset folder not found (run notebook 01, or pass data_dir)")
    if (path / "cases").is_dir() and any((path / "cases").glob("*.safetensors")):
        return CacheSource(path)
    return LayoutSource(path)


def run_predictions(out_dir: str | os.PathLike[str], runs: Iterable[str] = DEFAULT_RUNS) -> dict[str, Path]:
    """{run: predictions.csv} for the runs of `out_dir` that have written one (missing runs are left out)."""
    paths = RunPaths(out_dir)
    found = {name: RunFolder(paths.run(name)).predictions() for name in runs}
    return {name: p for name, p in found.items() if p.is_file()}


def open_report(report_dir: str | os.PathLike[str]) -> tuple[ArraySource, dict[str, Path], str]:
    """A folder `reg2rg report` wrote (notebook 08): its CT and region masks (RAS+), its predictions, its
    case."""
    report_dir = Path(report_dir).expanduser()
    inputs = ReportFolder(report_dir).inputs
    if not inputs.is_file():
        raise BadInputError(
            report_dir, "not a report folder (no report_inputs.json); write one with `reg2rg report`"
        )
    record = json.loads(inputs.read_text())
    ct = read_nifti(record["ct"])
    volume, spacing = to_ras(ct.data, ct.affine, ct.spacing)
    masks = {}
    for region in REGIONS:
        path = Path(record["regions_dir"]) / mask_filename(region)
        if path.is_file():
            masks[region] = to_ras(read_nifti(path, kind="mask").data, ct.affine, ct.spacing)[0]
    source = ArraySource({record["case"]: (volume, masks, spacing, "")})
    return source, {"report": ReportFolder(report_dir).predictions}, record["case"]


def open_explorer(
    out_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    predictions: str | os.PathLike[str] | Iterable[str] | Mapping[str, str] | None = None,
    case: str | None = None,
    runs: Iterable[str] = DEFAULT_RUNS,
    report_dir: str | os.PathLike[str] | None = None,
) -> Explorer:
    """An `Explorer` on `data_dir` (default: the run's embedded benchmark) with `predictions` (default: the
    predictions CSVs of `runs` in `out_dir`; none found means ground truth only, which the explorer says).
    `report_dir`: a report folder of `reg2rg report` instead (its CT, masks and report; notebook 08)."""
    if report_dir is not None:
        source, files, name = open_report(report_dir)
        return Explorer(Explorable(source, files), case=case or name)
    source = open_dataset(data_dir if data_dir is not None else RunPaths(out_dir).data)
    if predictions is None:
        predictions = run_predictions(out_dir, runs)
    return Explorer(Explorable(source, predictions), case=case)
