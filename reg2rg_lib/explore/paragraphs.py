"""The text half of the explorer: a report split into region paragraphs, aligned across sources, with
differences.

Reg2RG writes one paragraph per region ("The region i is heart: ..."). To compare a prediction with the ground
truth a reader wants the two paragraphs about the same organ next to each other, the words that differ marked,
and a flag where the model named the wrong organ for region i (the region-recognition error that the paper's
region-report alignment targets). The HTML here uses inline styles only, so it looks the same in a live
notebook and in the kernel-less HTML export.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from reg2rg_lib.regions import REGION_COLORS, REGIONS, split_regions

#: Region name for report text outside any "The region i is X:" paragraph (a whole report without prefixes).
WHOLE_REPORT = "(no region)"


@dataclass(frozen=True)
class Paragraph:
    """One region paragraph of a report: its position i in "The region i is X", the region X, the text."""

    index: int
    region: str
    text: str


@dataclass(frozen=True)
class Row:
    """One region across the ground truth and one prediction: what each says and whether the organ was
    right."""

    region: str
    gt: Paragraph | None
    pred: Paragraph | None
    #: for a predicted paragraph, the organ the ground truth has at the same index when it differs (else None)
    expected_region: str | None = None
    #: shown instead of "(missing from the prediction)" when the prediction has no region paragraphs at all
    note: str | None = None


def paragraphs(text: str) -> list[Paragraph]:
    """A report's region paragraphs (Evaluation's `split_regions`), one per region, in reading order.

    A report without region prefixes is one `WHOLE_REPORT` paragraph.
    """
    text = text if isinstance(text, str) else ""
    merged: dict[str, Paragraph] = {}
    for index, region, par in split_regions(text):
        region = region or WHOLE_REPORT  # text outside any region paragraph
        # "The other report is: {organ: ...}" blocks have no index
        index = -1 if index is None else int(index)
        if region in merged:  # CTRG reports may repeat an organ in their "other report" blocks: keep one row
            first = merged[region]
            merged[region] = Paragraph(
                first.index if first.index >= 0 else index, region, f"{first.text} {par}"
            )
        else:
            merged[region] = Paragraph(index, region, str(par).strip())
    return list(merged.values())


def region_order(*reports: Sequence[Paragraph]) -> list[str]:
    """Regions mentioned by any of `reports`: the canonical `REGIONS` first, in order, then any others."""
    seen = {p.region for rep in reports for p in rep}
    known = [r for r in REGIONS if r in seen]
    return known + sorted(seen - set(known))


#: The note of a region row when the prediction is one whole report (a model without region prefixes).
WHOLE_NOTE = f"written as one whole report, without region prefixes: see the {WHOLE_REPORT} row"
#: The ground truth's cell in that row: its region paragraphs, the rows above, are what the prediction is
#: diffed with.
GT_WHOLE_NOTE = "the ground truth's region paragraphs above, as one report"


def is_whole_report(pars: Sequence[Paragraph]) -> bool:
    """True when a report has text but no region paragraph (e.g. the `no_rra` ablation's reports)."""
    return bool(pars) and all(p.region == WHOLE_REPORT for p in pars)


def whole_report(pars: Sequence[Paragraph]) -> Paragraph:
    """A report's paragraphs joined into one `WHOLE_REPORT` paragraph, in reading order (prefixes dropped)."""
    return Paragraph(-1, WHOLE_REPORT, " ".join(p.text for p in pars if p.text))


def align(gt: Sequence[Paragraph], pred: Sequence[Paragraph]) -> dict[str, Row]:
    """Pair the ground-truth and predicted paragraphs about the same region.

    Regions are matched by name (the model may list them in any order). A predicted paragraph whose index
    names a different organ in the ground truth is a region-recognition error; its `expected_region` says
    which organ. A prediction without any region paragraph (a model trained without region prefixes) is
    compared as one whole report with the whole ground truth, in one `WHOLE_REPORT` row; the region rows then
    carry `WHOLE_NOTE` instead of reading as regions missing from the prediction.
    """
    if is_whole_report(pred) and not is_whole_report(gt):
        rows = {r: Row(r, next(p for p in gt if p.region == r), None, note=WHOLE_NOTE)
                for r in region_order(gt) if r != WHOLE_REPORT}
        rows[WHOLE_REPORT] = Row(WHOLE_REPORT, whole_report(gt), whole_report(pred))
        return rows
    gt_by_region = {p.region: p for p in gt}
    pred_by_region = {p.region: p for p in pred}
    gt_by_index = {p.index: p.region for p in gt if p.index >= 0}
    rows = {}
    for region in region_order(gt, pred):
        p = pred_by_region.get(region)
        expected = gt_by_index.get(p.index) if p is not None else None
        rows[region] = Row(region, gt_by_region.get(region), p, expected if expected != region else None)
    return rows


_TOKEN = re.compile(r"\S+")
_DEL_STYLE = "background:#fde2e1;color:#a3262b;text-decoration:line-through"
_INS_STYLE = "background:#dcf5e3;color:#17692f;text-decoration:underline"


def diff_html(reference: str, hypothesis: str) -> str:
    """Word-level diff of `hypothesis` against `reference` as HTML: words only in the reference struck through
    in red, words only in the hypothesis underlined in green, shared words plain."""
    ref, hyp = _TOKEN.findall(reference), _TOKEN.findall(hypothesis)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ref, hyp, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(hyp[j1:j2])))
            continue
        if i2 > i1:
            out.append(f'<del style="{_DEL_STYLE}">{html.escape(" ".join(ref[i1:i2]))}</del>')
        if j2 > j1:
            out.append(f'<ins style="{_INS_STYLE}">{html.escape(" ".join(hyp[j1:j2]))}</ins>')
    return " ".join(out)


def word_overlap(reference: str, hypothesis: str) -> float:
    """Share of matching words (difflib ratio over word tokens, 0..1): a quick per-paragraph similarity."""
    ref, hyp = _TOKEN.findall(reference), _TOKEN.findall(hypothesis)
    if not ref and not hyp:
        return 1.0
    return difflib.SequenceMatcher(None, ref, hyp, autojunk=False).ratio()


def tint(color: str, amount: float = 0.82) -> str:
    """A light version of a hex colour (mixed with white), for a highlighted paragraph's background."""
    c = color.lstrip("#")
    rgb = [int(c[i : i + 2], 16) for i in (0, 2, 4)]
    return "#" + "".join(f"{round(v + (255 - v) * amount):02x}" for v in rgb)


def cell_html(row: Row, source: str, selected: bool) -> str:
    """One paragraph cell: the ground truth (`source == "gt"`) or a prediction diffed against the ground
    truth.

    A selected cell gets its region's colour as a left border and a tinted background; the `data-selected`
    attribute makes the highlight easy to find in tests and in the HTML export.
    """
    color = REGION_COLORS.get(row.region, "#888888")
    box = "padding:4px 8px;margin:1px 0;border-radius:3px;line-height:1.35;font-size:13px"
    box += f";border-left:5px solid {color if selected else '#dddddd'}"
    if selected:
        box += f";background:{tint(color)}"
    attrs = f'data-region="{html.escape(row.region)}" data-selected="{str(selected).lower()}"'
    if source == "gt" and row.gt is None and row.note:
        body = f'<i style="color:#666">({html.escape(row.note)})</i>'
    elif source == "gt":
        body = (
            html.escape(row.gt.text)
            if row.gt
            else '<i style="color:#888">(no paragraph in the ground truth)</i>'
        )
    elif row.pred is None and row.note:
        body = f'<i style="color:#666">({html.escape(row.note)})</i>'
    elif row.pred is None:
        body = '<i style="color:#a3262b">(missing from the prediction)</i>'
    else:
        body = diff_html(row.gt.text, row.pred.text) if row.gt else html.escape(row.pred.text)
        notes = []
        if row.gt is None:
            notes.append("not in the ground truth")
        if row.expected_region:
            notes.append(f"region {row.pred.index} named {row.region}; ground truth: {row.expected_region}")
        if notes:
            body = f'<b style="color:#a3262b">&#9888; {html.escape("; ".join(notes))}</b><br>{body}'
    return f'<div {attrs} style="{box}">{body}</div>'
