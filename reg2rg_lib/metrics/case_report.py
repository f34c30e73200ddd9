"""One case's report files (`reg2rg report`, notebook 08), from what `infer.report.generate_case` wrote.

    OUT/report.json    {"case": NAME, "regions": [{"region", "paragraph", "volume_ml", "bbox_mm", "findings"}, ...],
                        "absent": [regions without a mask]}          (the format is a contract: keys as listed)
    OUT/report.md      one paragraph per present region, the region name first, its findings after it
    OUT/report.png     Fig. 4 style: per region, the axial slice where its mask is largest (the mask in its colour,
                       outlined) beside its paragraph
    OUT/predictions.csv, OUT/report_inputs.json
                       the report in the released predictions format and the CT / mask paths, so the explorer
                       (notebook 07, `report_dir`) can open the folder

`findings` are the CT-RATE abnormality labels the labeler (the rule labeler by default, as in Evaluation) reads in
the region's paragraph; `volume_ml` is the mask's volume and `bbox_mm` its bounding box in world RAS+ millimetres
([[x, y, z] min, [x, y, z] max], outer voxel faces). Every file is written under a temporary name, then renamed.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from nibabel.orientations import apply_orientation, io_orientation

from reg2rg_lib.data.layout import check_aligned, mask_filename, read_nifti
from reg2rg_lib.data.segmentation import region_geometry
from reg2rg_lib.data.slices import ViewState, best_slice, render_slice
from reg2rg_lib.infer.predictions import PRED_COLUMNS
from reg2rg_lib.infer.report import CaseGeneration
from reg2rg_lib.io import atomic_path, write_csv_atomic, write_json_atomic, write_text_atomic
from reg2rg_lib.metrics.labeler import Labeler, get_labeler
from reg2rg_lib.plotting import DPI, new_figure, style
from reg2rg_lib.regions import REGION_COLORS

#: the reference column of predictions.csv: a user's CT comes without a report (readers refuse empty cells)
NO_REFERENCE = "(no reference report: a CT brought by the user)"
#: the reading window each region's slice is shown in (others: mediastinum)
REGION_WINDOWS: dict[str, str] = {"lung": "lung", "pleura": "lung", "trachea and bronchie": "lung", "bone": "bone"}


def ras_view(data: np.ndarray, affine: np.ndarray, spacing: tuple[float, ...]
             ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """`data` in RAS+ voxel order as a view (flips and transposes, no copy: the figure reads a few slices of
    full-resolution volumes) and its spacing in that order; `data.sources.to_ras` makes the contiguous copy."""
    ornt = io_orientation(affine)
    out = [0.0, 0.0, 0.0]
    for axis, (target, _flip) in enumerate(ornt):
        out[int(target)] = float(spacing[axis])
    return apply_orientation(data, ornt), (out[0], out[1], out[2])


def region_findings(paragraphs: dict[str, str], labeler: Labeler) -> dict[str, list[str]]:
    """region -> the labels the labeler finds positive in that region's paragraph (labeler column order)."""
    regions = list(paragraphs)
    if not regions:
        return {}
    table = labeler.label([paragraphs[r] for r in regions])
    return {r: [lab for lab in table.columns if int(table.iloc[i][lab]) == 1] for i, r in enumerate(regions)}


def load_masks(gen: CaseGeneration) -> tuple[Any, dict[str, np.ndarray]]:
    """The CT (`Nifti`) and the masks of the regions the report covers, checked to lie on its grid."""
    volume = read_nifti(gen.ct)
    masks = {}
    for region in gen.regions:
        path = gen.regions_dir / mask_filename(region)
        m = read_nifti(path, kind="mask")
        check_aligned(m, volume, path)
        masks[region] = m.data
    return volume, masks


def build_report(gen: CaseGeneration, masks: dict[str, np.ndarray], affine: np.ndarray,
                 labeler: Labeler) -> dict[str, Any]:
    """The report.json object (see the module docstring for its format)."""
    findings = region_findings(gen.paragraphs, labeler)
    regions = []
    for region in gen.regions:
        geo = region_geometry(masks[region], affine)
        regions.append({"region": region, "paragraph": gen.paragraphs[region], "volume_ml": geo["volume_ml"],
                        "bbox_mm": geo["bbox_mm"], "findings": findings.get(region, [])})
    return {"case": gen.case, "regions": regions, "absent": list(gen.absent)}


def report_markdown(report: dict[str, Any], decoding: str = "", raw: str = "") -> str:
    """report.md: a title, one line on the absent regions, then one paragraph per region, its name first (and
    the model's raw text, quoted, when none of it could be tied to a region, e.g. from a model trained without
    region-report alignment)."""
    lines = [f"# Report: {report['case']}", ""]
    note = f"Generated ({decoding})." if decoding else "Generated."
    if report["absent"]:
        note += f" Regions without a mask (not reported): {', '.join(report['absent'])}."
    lines += [f"_{note}_", ""]
    for r in report["regions"]:
        text = r["paragraph"].strip() or "(the model wrote no paragraph for this region)"
        found = f" _Findings: {', '.join(r['findings'])}._" if r["findings"] else ""
        lines += [f"**{r['region']}**: {text}{found}", ""]
    if raw and not any(r["paragraph"].strip() for r in report["regions"]):
        lines += ["No paragraph could be tied to a region; the model wrote:", "", f"> {raw}", ""]
    return "\n".join(lines)


def report_figure(volume: np.ndarray, masks: dict[str, np.ndarray], spacing: tuple[float, float, float],
                  report: dict[str, Any], width_chars: int = 90) -> Figure:
    """Per region one row: its largest axial slice (RAS+ arrays, the region outlined) and its paragraph."""
    rows = report["regions"]
    with style():
        fig = new_figure(10.0, 1.55 * max(1, len(rows)) + 0.5)
        grid = fig.add_gridspec(max(1, len(rows)), 2, width_ratios=[1, 4.2])
        for i, r in enumerate(rows):
            region = r["region"]
            k = best_slice(masks[region], "axial")
            state = ViewState(plane="axial", index={"axial": k}, window=REGION_WINDOWS.get(region, "mediastinum"),
                              visible=frozenset(masks), selected=region)
            ax = fig.add_subplot(grid[i, 0])
            ax.imshow(render_slice(volume, masks, state, spacing=spacing, longest=192), interpolation="nearest")
            ax.set_title(f"axial {k + 1}/{volume.shape[2]}", fontsize=7)
            ax.axis("off")
            ax = fig.add_subplot(grid[i, 1])
            ax.axis("off")
            ax.text(0, 0.97, region, fontweight="bold", fontsize=8, va="top",
                    bbox={"facecolor": REGION_COLORS.get(region, "#bbbbbb"), "edgecolor": "none", "pad": 1.5,
                          "alpha": 0.6}, transform=ax.transAxes)
            body = textwrap.wrap(r["paragraph"] or "(no paragraph)", width_chars)[:6]
            if r["findings"]:
                body.append("findings: " + ", ".join(r["findings"]))
            ax.text(0, 0.74, "\n".join(body), fontsize=7, va="top", transform=ax.transAxes)
        absent = f"; absent: {', '.join(report['absent'])}" if report["absent"] else ""
        fig.suptitle(f"Region-grounded report, case {report['case']}{absent}", fontsize=9)
    return fig


def write_case_report(gen: CaseGeneration, out_dir: str | os.PathLike[str], labeler: str | Labeler = "rules",
                      inputs: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write report.json, report.md, report.png (+ predictions.csv, report_inputs.json) into `out_dir`."""
    out = Path(out_dir).expanduser().resolve()
    volume, masks = load_masks(gen)
    report = build_report(gen, masks, volume.affine, get_labeler(labeler))
    files = {"json": write_json_atomic(out / "report.json", report),
             "md": write_text_atomic(out / "report.md", report_markdown(report, gen.decoding, gen.text))}
    ras, spacing = ras_view(volume.data, volume.affine, volume.spacing)
    ras_masks = {r: ras_view(m, volume.affine, volume.spacing)[0] for r, m in masks.items()}
    fig = report_figure(ras, ras_masks, spacing, report)
    with style(), atomic_path(out / "report.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    files["png"] = out / "report.png"
    row = {"AccNum": gen.case, "Question": gen.question, "GT_combined_report": NO_REFERENCE,
           "Pred_combined_report": gen.text}
    files["predictions"] = write_csv_atomic(out / "predictions.csv", PRED_COLUMNS, [row], lineterminator="\n")
    record = {"case": gen.case, "ct": str(gen.ct), "regions_dir": str(gen.regions_dir), "decoding": gen.decoding,
              "skipped": gen.skipped, **(inputs or {})}
    files["inputs"] = write_json_atomic(out / "report_inputs.json", record)
    return files
