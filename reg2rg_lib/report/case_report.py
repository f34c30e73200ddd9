"""One case's report files (`reg2rg report`, notebook 08), from what `infer.report.generate_case` wrote.

    OUT/report.json    {"case": NAME,
                        "regions": [{"region", "slot", "named", "paragraph", "missing", "note", "volume_ml",
                                     "bbox_mm", "findings"}, ...],
                        "absent": [regions without a mask],
                        "unplaced": [{"slot", "named", "paragraph", "why"}, ...],
                        "warnings": [sentences]}                    (the format is a contract: keys as listed)
    OUT/report.md      the warnings, then one paragraph per present region, the region name first, its
                       findings after it, then the text tied to no region of this CT
    OUT/report.png     Fig. 4 style: per region, the axial slice where its mask is largest (the mask in its
                       colour, outlined) beside its paragraph
    OUT/predictions.csv, OUT/report_inputs.json
                       the report in the released predictions format and the CT / mask paths, so the explorer
                       (notebook 07, `report_dir`) can open the folder

`findings` are the CT-RATE abnormality labels the labeler (the rule labeler by default, as in Evaluation)
reads in the region's paragraph; `volume_ml` is the mask's volume and `bbox_mm` its bounding box in world RAS+
millimetres ([[x, y, z] min, [x, y, z] max], outer voxel faces). Every file is written under a temporary name,
then renamed.

A region's paragraph is the one under its prompt slot's heading ("The region <slot> is <named>:", slot = the
region's place in the prompt, 0-based as the prompt numbers it; `infer.report.assign_paragraphs`), whatever
organ the model named there: `named` is that name (null without a heading), and `note` says in words when it
differs from the region ("slot 0 (bone): the model named it lung", and whether that organ is in this CT at
all). When the model wrote no paragraph for a present region (no heading for its slot, or only whitespace
under it), `paragraph` is null, `missing` is true and `note` says so; report.md and report.png write
NO_PARAGRAPH in its place. `unplaced` is the text no present slot takes (a slot the prompt does not have, a
second paragraph for a slot, text under no heading), each with `why`; report.md lists it under UNPLACED_TITLE.
`warnings` are one sentence per kind of trouble (missing paragraphs, organ names that differ from their slot's
region, unplaced text); `reg2rg report` prints each on stderr with the case's name and still exits 0.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from nibabel.orientations import apply_orientation, io_orientation

from reg2rg_lib.data.layout import mask_filename
from reg2rg_lib.data.nifti import check_aligned, read_nifti
from reg2rg_lib.data.segmentation import region_geometry
from reg2rg_lib.data.slices import ViewState, best_slice, render_slice
from reg2rg_lib.infer.predictions import PRED_COLUMNS
from reg2rg_lib.infer.report import CaseGeneration
from reg2rg_lib.io import atomic_path, write_csv_atomic, write_json_atomic, write_text_atomic
from reg2rg_lib.metrics.labeler import Labeler, get_labeler
from reg2rg_lib.paths import ReportFolder
from reg2rg_lib.plotting import DPI, new_figure, style
from reg2rg_lib.regions import REGION_COLORS

#: the reference column of predictions.csv: a user's CT comes without a report (readers refuse empty cells)
NO_REFERENCE = "(no reference report: a CT brought by the user)"
#: what stands in a region's place when the model wrote no paragraph for it (report.md, report.png)
NO_PARAGRAPH = "(the model wrote no paragraph for this region)"
#: report.md's heading over the text tied to no region of this CT
UNPLACED_TITLE = "Paragraphs not tied to a region of this CT"
#: the reading window each region's slice is shown in (others: mediastinum)
REGION_WINDOWS: dict[str, str] = {
    "lung": "lung",
    "pleura": "lung",
    "trachea and bronchie": "lung",
    "bone": "bone",
}


def ras_view(data: np.ndarray, affine: np.ndarray, spacing: tuple[float, ...]
             ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """`data` in RAS+ voxel order as a view (flips and transposes, no copy: the figure reads a few slices of
    full-resolution volumes) and its spacing in that order; `data.sources.to_ras` makes the contiguous
    copy."""
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


def _same_organ(named: str, region: str) -> bool:
    return " ".join(named.lower().split()) == region


def slot_remarks(region: str, slot: int, named: str, missing: bool, regions: list[str]) -> list[str]:
    """What a reader must be told about slot `slot` (holding `region`) beyond its text, as clauses: why it has
    no paragraph, and the organ the model named there when that is not `region` (`regions`: the case's, prompt
    order). Empty when the model wrote a paragraph under a heading that names the slot's own region."""
    def where(organ: str) -> str:
        other = next((j for j, r in enumerate(regions) if _same_organ(organ, r)), None)
        return f"{organ} is slot {other}" if other is not None else f"{organ} is not among this CT's regions"

    differs = bool(named) and not _same_organ(named, region)
    if missing:
        if not named:
            return [f'no heading "The region {slot} is ...:" for this slot']
        if differs:
            return [f"its heading names {named} and has no text ({where(named)})"]
        return ["its heading has no text"]
    return [f"the model named it {named} ({where(named)})"] if differs else []


def build_report(gen: CaseGeneration, masks: dict[str, np.ndarray], affine: np.ndarray,
                 labeler: Labeler) -> dict[str, Any]:
    """The report.json object (see the module docstring for its format)."""
    paragraphs = {r: (gen.paragraphs.get(r) or "").strip() for r in gen.regions}
    findings = region_findings(paragraphs, labeler)
    regions = []
    for slot, region in enumerate(gen.regions):
        geo = region_geometry(masks[region], affine)
        named = (gen.named.get(region) or "").strip()
        missing = not paragraphs[region]
        remarks = slot_remarks(region, slot, named, missing, list(gen.regions))
        if missing:
            remarks = [f"the model wrote no paragraph for this region ({'; '.join(remarks)})"]
        regions.append({"region": region, "slot": slot, "named": named or None,
                        "paragraph": None if missing else paragraphs[region], "missing": missing,
                        "note": f"slot {slot} ({region}): {'; '.join(remarks)}" if remarks else None,
                        "volume_ml": geo["volume_ml"], "bbox_mm": geo["bbox_mm"],
                        "findings": [] if missing else findings.get(region, [])})
    unplaced = [{"slot": u.get("slot"), "named": u.get("named") or None, "paragraph": u["paragraph"].strip(),
                 "why": u.get("why", "")} for u in gen.unplaced if (u.get("paragraph") or "").strip()]
    report = {"case": gen.case, "regions": regions, "absent": list(gen.absent), "unplaced": unplaced}
    report["warnings"] = report_warnings(report)
    return report


def report_warnings(report: dict[str, Any]) -> list[str]:
    """One sentence per kind of trouble in `report` (a report.json object): regions without a paragraph,
    headings that name another organ than their slot's region, text tied to no region. `reg2rg report` prints
    each on stderr after the case's name; report.md opens with them."""
    out = []
    missing = [f"{r['region']} (slot {r['slot']})" for r in report["regions"] if r["missing"]]
    if missing:
        out.append(f"the model wrote no paragraph for {', '.join(missing)}; the report says so in its place")
    present = [r["region"] for r in report["regions"]]
    renamed = [f"slot {r['slot']} ({r['region']}) named {r['named']}"
               + ("" if any(_same_organ(r["named"], p) for p in present) else " (not in this CT)")
               for r in report["regions"] if r["named"] and not _same_organ(r["named"], r["region"])]
    if renamed:
        out.append("the model's heading names another organ than the slot's region: " + ", ".join(renamed)
                   + "; each paragraph is shown under its slot's region")
    if report.get("unplaced"):
        n = len(report["unplaced"])
        out.append(f"{n} paragraph{'s' if n > 1 else ''} tied to no region of this CT, listed under "
                   f"\"{UNPLACED_TITLE}\" in report.md")
    return out


def report_markdown(report: dict[str, Any], decoding: str = "", raw: str = "") -> str:
    """report.md: a title, one line on the absent regions, the warnings, then one paragraph per region, its
    name first (with its slot and what went wrong there, when something did: NO_PARAGRAPH in place of a
    missing paragraph, the organ the model named when it is not the region), then the text tied to no region
    (and the model's raw text, quoted, when none of it could be tied to anything)."""
    lines = [f"# Report: {report['case']}", ""]
    note = f"Generated ({decoding})." if decoding else "Generated."
    if report["absent"]:
        note += f" Regions without a mask (not reported): {', '.join(report['absent'])}."
    lines += [f"_{note}_", ""]
    for warning in report.get("warnings", []):
        lines += [f"_Warning: {warning}._", ""]
    names = [r["region"] for r in report["regions"]]
    for slot, r in enumerate(report["regions"]):
        text = (r["paragraph"] or "").strip()
        missing = bool(r.get("missing")) or not text
        remarks = slot_remarks(r["region"], r.get("slot", slot), r.get("named") or "", missing, names)
        tag = f" _(slot {r.get('slot', slot)}: {'; '.join(remarks)})_" if remarks else ""
        text = NO_PARAGRAPH if missing else text
        found = f" _Findings: {', '.join(r['findings'])}._" if r["findings"] else ""
        lines += [f"**{r['region']}**{tag}: {text}{found}", ""]
    unplaced = report.get("unplaced", [])
    if unplaced:
        lines += [f"## {UNPLACED_TITLE}", ""]
        for u in unplaced:
            named = ""
            if u.get("named"):
                inside = any(_same_organ(u["named"], n) for n in names)
                named = f"; the model named it {u['named']}" + (
                    "" if inside else ", not among this CT's regions"
                )
            lines += [f"- _{u['why']}{named}_: {u['paragraph']}", ""]
    if raw and not unplaced and not any((r["paragraph"] or "").strip() for r in report["regions"]):
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
            state = ViewState(
                plane="axial",
                index={"axial": k},
                window=REGION_WINDOWS.get(region, "mediastinum"),
                visible=frozenset(masks),
                selected=region,
            )
            ax = fig.add_subplot(grid[i, 0])
            ax.imshow(
                render_slice(volume, masks, state, spacing=spacing, longest=192), interpolation="nearest"
            )
            ax.set_title(f"axial {k + 1}/{volume.shape[2]}", fontsize=7)
            ax.axis("off")
            ax = fig.add_subplot(grid[i, 1])
            ax.axis("off")
            ax.text(0, 0.97, region, fontweight="bold", fontsize=8, va="top",
                    bbox={"facecolor": REGION_COLORS.get(region, "#bbbbbb"), "edgecolor": "none", "pad": 1.5,
                          "alpha": 0.6}, transform=ax.transAxes)
            top = 0.74
            if r.get("note"):  # what went wrong in this slot, in words, above the text
                ax.text(0, 0.76, textwrap.shorten(r["note"], width_chars + 10), fontsize=6.5, va="top",
                        style="italic", color="#8b0000", transform=ax.transAxes)
                top = 0.6
            body = textwrap.wrap((r["paragraph"] or "").strip() or NO_PARAGRAPH, width_chars)[
                : 6 if top > 0.7 else 5
            ]
            if r["findings"]:
                body.append("findings: " + ", ".join(r["findings"]))
            ax.text(0, top, "\n".join(body), fontsize=7, va="top", transform=ax.transAxes)
        absent = f"; absent: {', '.join(report['absent'])}" if report["absent"] else ""
        n = len(report.get("unplaced", []))
        unplaced = (
            f"\n+ {n} paragraph{'s' if n > 1 else ''} tied to no region of this CT (see report.md)"
            if n
            else ""
        )
        fig.suptitle(f"Region-grounded report, case {report['case']}{absent}{unplaced}", fontsize=9)
    return fig


def write_case_report(gen: CaseGeneration, out_dir: str | os.PathLike[str], labeler: str | Labeler = "rules",
                      inputs: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write report.json, report.md, report.png (+ predictions.csv, report_inputs.json) into `out_dir`."""
    out = ReportFolder(Path(out_dir).expanduser().resolve())
    volume, masks = load_masks(gen)
    report = build_report(gen, masks, volume.affine, get_labeler(labeler))
    files = {"json": write_json_atomic(out.json, report),
             "md": write_text_atomic(out.markdown, report_markdown(report, gen.decoding, gen.text))}
    ras, spacing = ras_view(volume.data, volume.affine, volume.spacing)
    ras_masks = {r: ras_view(m, volume.affine, volume.spacing)[0] for r, m in masks.items()}
    fig = report_figure(ras, ras_masks, spacing, report)
    with style(), atomic_path(out.png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    files["png"] = out.png
    row = {"AccNum": gen.case, "Question": gen.question, "GT_combined_report": NO_REFERENCE,
           "Pred_combined_report": gen.text}
    files["predictions"] = write_csv_atomic(out.predictions, PRED_COLUMNS, [row], lineterminator="\n")
    record = {
        "case": gen.case,
        "ct": str(gen.ct),
        "regions_dir": str(gen.regions_dir),
        "decoding": gen.decoding,
        "skipped": gen.skipped,
        **(inputs or {}),
    }
    files["inputs"] = write_json_atomic(out.inputs, record)
    return files
