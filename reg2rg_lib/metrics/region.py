"""Region recognition: does the model name the organ of each prompt region correctly?

Reg2RG's region-report alignment makes the model start each paragraph with "The region i is <organ>:", where region
i is the i-th mask of the prompt. Comparing those names with the reference's gives:
- per-sample accuracy: share of the reference's numbered regions whose predicted name is right (mean±std over
  samples with at least one numbered region);
- per-region precision/recall/F1 over all (sample, index) slots: a slot whose reference is R counts as TP for R if
  the prediction says R, else FN for R and FP for the predicted name; predicted slots the reference lacks are FP;
- macro averages (mean±std over regions) over all 10 regions and, as the authors' script did, without lung and
  pleura. Multi-word names are read whole ("trachea and bronchie"; the original truncated it to "trachea").
Names outside the 10 regions are kept (as FPs under their own name) but not averaged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reg2rg_lib.io import write_json_atomic, write_text_atomic
from reg2rg_lib.regions import REGIONS, region_sequence

#: Regions the authors' script left out of its averages.
EXCLUDED_IN_ORIGINAL: tuple[str, ...] = ("lung", "pleura")


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def _macro(per_region: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"regions": list(names)}
    for k in ("precision", "recall", "f1"):
        vals = np.array([per_region[n][k] for n in names], dtype=np.float64)
        out[k] = float(vals.mean()) if vals.size else 0.0
        out[f"{k}_std"] = float(vals.std()) if vals.size else 0.0
    return out


def region_recognition(references: Sequence[str], predictions: Sequence[str],
                       ids: Sequence[Any] | None = None) -> dict[str, Any]:
    """Region-recognition metrics from the "The region i is X:" prefixes of reference and predicted reports."""
    ids = list(ids) if ids is not None else list(range(len(references)))
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    fp_ids: dict[str, list] = defaultdict(list)
    fn_ids: dict[str, list] = defaultdict(list)
    accuracy: list[float | None] = []
    for sid, ref, hyp in zip(ids, references, predictions):
        gt, pred = region_sequence(ref or ""), region_sequence(hyp or "")
        correct = 0
        for i, name in gt.items():
            got = pred.get(i)
            if got == name:
                tp[name] += 1
                correct += 1
                continue
            fn[name] += 1
            fn_ids[name].append(sid)
            if got is not None:
                fp[got] += 1
                fp_ids[got].append(sid)
        for i, got in pred.items():
            if i not in gt:
                fp[got] += 1
                fp_ids[got].append(sid)
        accuracy.append(correct / len(gt) if gt else None)
    names = list(REGIONS) + sorted(set(tp) | set(fp) | set(fn) - set(REGIONS))
    per_region = {n: {**_prf(tp[n], fp[n], fn[n]), "tp": tp[n], "fp": fp[n], "fn": fn[n],
                      "support": tp[n] + fn[n], "fp_ids": fp_ids[n], "fn_ids": fn_ids[n]} for n in names}
    scored = np.array([a for a in accuracy if a is not None], dtype=np.float64)
    return {
        "n": len(accuracy),
        "n_scored": int(scored.size),
        "accuracy": float(scored.mean()) if scored.size else 0.0,
        "accuracy_std": float(scored.std()) if scored.size else 0.0,
        "per_sample_accuracy": accuracy,
        "per_region": per_region,
        "macro_all": _macro(per_region, REGIONS),
        "macro_without_lung_pleura": _macro(per_region, [r for r in REGIONS if r not in EXCLUDED_IN_ORIGINAL]),
        "unknown_regions": [n for n in names if n not in REGIONS],
    }


def region_report_text(metrics: dict[str, Any]) -> str:
    """A plain-text report in the spirit of the authors' `region_classification_report.txt`."""
    lines = ["Accuracy for each sample:",
             f"Mean accuracy: {metrics['accuracy']}",
             f"Standard deviation: {metrics['accuracy_std']}",
             f"(samples with numbered regions: {metrics['n_scored']} of {metrics['n']})", "",
             "Precision, recall and F1 score for each region:"]
    for name, m in metrics["per_region"].items():
        lines += [f"{name}:", f"Precision: {m['precision']}", f"Recall: {m['recall']}", f"F1 score: {m['f1']}",
                  f"Support: {m['support']}", ""]
    for key, title in (("macro_all", "all 10 regions"),
                       ("macro_without_lung_pleura", "regions without lung and pleura (the original's average)")):
        m = metrics[key]
        lines.append(f"Macro average over {title}:")
        for k, label in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1 score")):
            lines.append(f"{label} of regions: {m[k]}±{m[k + '_std']}")
        lines.append("")
    return "\n".join(lines)


def write_region_outputs(metrics: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """DIR/region_metrics.json (full) and DIR/region_classification_report.txt."""
    out = Path(out_dir)
    paths = {"json": out / "region_metrics.json", "report": out / "region_classification_report.txt"}
    write_json_atomic(paths["json"], metrics)
    write_text_atomic(paths["report"], region_report_text(metrics))
    return paths
