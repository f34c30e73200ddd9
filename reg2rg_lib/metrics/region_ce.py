"""Region-level clinical efficacy: CE of each region's own numbered paragraphs, in the authors' file formats.

`region_ce` scores it as the authors' `ce_evaluation_region.py` reports it: each region's numbered paragraphs
("The region i is <region>: ..."; paragraphs of one name joined, as their `parse_report_to_region.py` does)
are paired by name for the cases where both reports have that region, both are labelled with the 18 CT-RATE
labels, and CE is computed per region over all 18 labels (sklearn semantics, zero_division=0). Written as the
authors' `<region>_reports.csv` (AccNum, GT_combined_report, Pred_combined_report),
`all_regions_macro_avg_results.csv` and `all_regions_micro_avg_results.csv` (region, precision, recall,
f1-score, support). One difference: their regex let the last numbered paragraph swallow an "The other report
is: {...}" tail; here those blocks are left out of every region.
A release folder that holds `<region>_reports.csv` files is scored the same way (`region_ce_from_folder`).
The region names these paragraphs start with are scored apart, in `metrics.region`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.io import atomic_path
from reg2rg_lib.metrics.ce import ce_metrics
from reg2rg_lib.metrics.csv_inputs import read_report_pairs
from reg2rg_lib.metrics.labeler import Labeler, get_labeler
from reg2rg_lib.paths import MetricsFolder, region_ce_name, region_reports_file
from reg2rg_lib.regions import LABELS, REGIONS, split_regions

REGION_CE_COLUMNS: tuple[str, ...] = ("region", "precision", "recall", "f1-score", "support")
REGION_REPORT_COLUMNS: tuple[str, ...] = ("AccNum", "GT_combined_report", "Pred_combined_report")


def numbered_paragraphs(text: str) -> dict[str, str]:
    """{region: its numbered paragraphs joined by a space}, empty paragraphs left out."""
    out: dict[str, list[str]] = defaultdict(list)
    for p in split_regions(text):
        if p.index is not None and p.region in REGIONS and p.paragraph.strip():
            out[p.region].append(p.paragraph.strip())
    return {r: " ".join(v) for r, v in out.items()}


def region_report_tables(references: Sequence[str], predictions: Sequence[str], ids: Sequence[Any]
                         ) -> dict[str, pd.DataFrame]:
    """{region: AccNum/GT_combined_report/Pred_combined_report rows of the cases where both reports have
    it}."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sid, ref, hyp in zip(ids, references, predictions):
        gt, pred = numbered_paragraphs(ref or ""), numbered_paragraphs(hyp or "")
        for region in REGIONS:
            if region in gt and region in pred:
                rows[region].append({"AccNum": sid, "GT_combined_report": gt[region],
                                     "Pred_combined_report": pred[region]})
    return {r: pd.DataFrame(rows[r], columns=list(REGION_REPORT_COLUMNS)) for r in REGIONS if rows[r]}


def region_ce(
    tables: Mapping[str, pd.DataFrame], labeler: Labeler | str = "rules"
) -> dict[str, pd.DataFrame]:
    """{"macro": ..., "micro": ...}: one row per region (region, precision, recall, f1-score, support)."""
    lab = get_labeler(labeler)
    out: dict[str, list[dict[str, Any]]] = {"macro": [], "micro": []}
    for region, table in tables.items():
        gt_texts = table["GT_combined_report"].fillna("").astype(str).tolist()
        pred_texts = table["Pred_combined_report"].fillna("").astype(str).tolist()
        both = lab.label(gt_texts + pred_texts)[list(LABELS)].to_numpy(dtype=np.int64)  # (2n, 18)
        m = ce_metrics(both[: len(gt_texts)], both[len(gt_texts):])
        for avg in ("macro", "micro"):
            out[avg].append({"region": region, "precision": m[avg]["precision"], "recall": m[avg]["recall"],
                             "f1-score": m[avg]["f1"], "support": int(m[avg]["support"])})
    return {k: pd.DataFrame(v, columns=list(REGION_CE_COLUMNS)) for k, v in out.items()}


def region_ce_headline(result: Mapping[str, pd.DataFrame]) -> dict[str, float | None]:
    """The mean over regions of the per-region macro and micro F1 (None when no region was paired)."""
    return {f"region_CE_{avg}_F1": float(result[avg]["f1-score"].mean()) if len(result[avg]) else None
            for avg in ("macro", "micro")}


def write_region_ce_outputs(result: Mapping[str, pd.DataFrame], out_dir: str | Path,
                            tables: Mapping[str, pd.DataFrame] | None = None) -> dict[str, Path]:
    """DIR/all_regions_macro_avg_results.csv, DIR/all_regions_micro_avg_results.csv and, when `tables` are
    given, DIR/region_reports/<region>_reports.csv (the authors' formats)."""
    out = MetricsFolder(out_dir)
    paths = {avg: out.region_ce(avg) for avg in ("macro", "micro")}
    for avg, path in paths.items():
        with atomic_path(path) as tmp:
            result[avg].to_csv(tmp, index=False)
    for region, table in (tables or {}).items():
        path = region_reports_file(out.region_reports, region)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
        paths[region] = path
    return paths


def read_region_report_folder(folder: str | Path) -> dict[str, pd.DataFrame]:
    """The `<region>_reports.csv` files of a release folder (or of a kit run's `region_reports/`), checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(folder, "folder not found")
    tables = {}
    for region in REGIONS:
        path = region_reports_file(folder, region)
        if path.is_file():
            pairs = read_report_pairs(
                path, "GT_combined_report", "Pred_combined_report", allow_empty_predictions=True
            )
            tables[region] = pd.DataFrame({"AccNum": pairs.ids, "GT_combined_report": pairs.references,
                                           "Pred_combined_report": pairs.predictions})
    if not tables:
        raise BadInputError(
            folder,
            "holds no per-region report files (<region>_reports.csv, e.g. lung_reports.csv, "
            "as in the authors' results/Reg2RG_radgenome)",
        )
    return tables


def region_ce_from_folder(folder: str | Path, labeler: Labeler | str = "rules") -> dict[str, pd.DataFrame]:
    """Region-level CE of a folder of `<region>_reports.csv` files; a released
    `all_regions_macro_avg_results.csv` beside them is joined in as `released_*` columns (the authors' RadBERT
    labels, for comparison)."""
    result = region_ce(read_region_report_folder(folder), labeler)
    for avg in ("macro", "micro"):
        released = Path(folder) / region_ce_name(avg)
        if released.is_file():
            rel = pd.read_csv(released).rename(columns=lambda c: c if c == "region" else f"released_{c}")
            result[avg] = result[avg].merge(rel, on="region", how="left")
    return result
