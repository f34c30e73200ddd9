"""Per-case numbers under the explorer: how each prediction scores on this case and which findings it states.

Two tables, as HTML with inline styles:
- metrics: region recognition (did "The region i is X" name the ground truth's organ i), region coverage, mean
  word overlap of the paired paragraphs, plus the NLG scores of this case from the run's `nlg_per_sample.csv`
  when notebook 04 wrote one;
- findings: the 18 CT-RATE abnormalities the rule labeler (Evaluation's `RuleLabeler`) reads in each report,
  with every prediction's agreement with the ground truth marked (hit, false alarm, miss).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

from reg2rg_lib.explore import paragraphs as rep
from reg2rg_lib.metrics.labeler import RuleLabeler
from reg2rg_lib.regions import region_sequence, strip_region_prefix

_OK, _FP, _FN = "#dcf5e3", "#fff1d6", "#fde2e1"  # cell backgrounds: agrees, false alarm, missed
_TABLE = 'style="border-collapse:collapse;font-size:12px;margin:4px 12px 4px 0"'
_TD = "padding:2px 8px;border:1px solid #ddd"


def recognition(gt_text: str, pred_text: str) -> dict[str, float]:
    """Region recognition and coverage of one prediction against its ground truth, and mean word overlap."""
    gt_seq, pred_seq = region_sequence(gt_text), region_sequence(pred_text)
    named = [i for i in pred_seq if i in gt_seq]
    gt_pars, pred_pars = rep.paragraphs(gt_text), rep.paragraphs(pred_text)
    rows = [r for r in rep.align(gt_pars, pred_pars).values() if r.gt is not None and r.pred is not None]
    return {
        "region recognition": sum(pred_seq[i] == gt_seq[i] for i in named) / len(named)
        if named
        else math.nan,
        "region coverage": len({p.region for p in pred_pars} & {p.region for p in gt_pars}) / len(gt_pars)
        if gt_pars
        else math.nan,
        "word overlap": sum(rep.word_overlap(r.gt.text, r.pred.text) for r in rows) / len(rows)
        if rows
        else math.nan,
    }


def _fmt(value: float) -> str:
    return "&ndash;" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def metrics_html(
    gt_text: str, predictions: Mapping[str, str], scores: Mapping[str, Mapping[str, float]]
) -> str:
    """Table: one row per prediction source, one column per metric (recognition metrics first, then NLG)."""
    if not predictions:
        return ""
    values = {src: {**recognition(gt_text, text), **scores.get(src, {})} for src, text in predictions.items()}
    columns = list(dict.fromkeys(k for v in values.values() for k in v))
    head = "".join(f'<th style="{_TD}">{html.escape(c)}</th>' for c in ["prediction", *columns])
    body = "".join(
        f'<tr><td style="{_TD}">{html.escape(src)}</td>'
        + "".join(f'<td style="{_TD};text-align:right">{_fmt(v.get(c, math.nan))}</td>' for c in columns)
        + "</tr>"
        for src, v in values.items()
    )
    return f"<table {_TABLE}><tr>{head}</tr>{body}</table>"


def findings_html(gt_text: str, predictions: Mapping[str, str]) -> str:
    """Table of the abnormalities the labeler finds in the ground truth or any prediction, agreement
    marked."""
    sources = {"ground truth": gt_text, **predictions}
    table = RuleLabeler().label([strip_region_prefix(t) for t in sources.values()])
    table.index = list(sources)
    positive = [c for c in table.columns if table[c].any()]
    if not positive:
        return (
            '<i style="font-size:12px">The labeler finds none of the 18 abnormalities in these reports.</i>'
        )
    head = "".join(f'<th style="{_TD}">{html.escape(s)}</th>' for s in ["finding", *sources])
    body = []
    for label in positive:
        truth = bool(table.at["ground truth", label])
        cells = [f'<td style="{_TD}">{"&#10003;" if truth else ""}</td>']
        for src in predictions:
            said = bool(table.at[src, label])
            bg, mark = {(True, True): (_OK, "&#10003; hit"), (False, True): (_FP, "+ false alarm"),
                        (True, False): (_FN, "&minus; missed"), (False, False): ("", "")}[(truth, said)]
            cells.append(f'<td style="{_TD};background:{bg}">{mark}</td>')
        body.append(f'<tr><td style="{_TD}">{html.escape(label)}</td>{"".join(cells)}</tr>')
    return f"<table {_TABLE}><tr>{head}</tr>{''.join(body)}</table>"


def case_summary_html(case: object) -> str:
    """Both tables for an `ExploreCase`, side by side, with titles."""
    gt, preds = case.gt_report, case.predictions  # type: ignore[attr-defined]
    scores = getattr(case, "scores", {})
    parts = []
    if preds:
        parts.append(f"<div><b>per-case metrics</b>{metrics_html(gt, preds, scores)}</div>")
    parts.append(f"<div><b>findings (rule labeler)</b>{findings_html(gt, preds)}</div>")
    return f'<div style="display:flex;flex-wrap:wrap;gap:8px">{"".join(parts)}</div>'
