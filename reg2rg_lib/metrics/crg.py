"""CRG, the score by which the VLM3D challenge ranks CT report generation: arithmetic over the 18-label table.

With X = labels x exams cells, A = the ground truth's positive cells, and TP / FN / FP counted over all cells:

    r = (X - A) / (2A)        weight of a positive cell, so that positives and negatives count alike
    U = (X - A) / 2           (= A * r)
    s = r*TP - r*FN - FP      the score
    CRG = U / (2U - s)

A perfect table gives s = U and CRG = 1; predicting nothing gives s = -U and CRG = 1/3; more false positives
push it towards 0. The definition is the challenge's (forithmus/VLM3D-Dockers,
`ct_challenges/reportgen_evaluation/src/crg_score.py`), written anew here. It is undefined without a positive
ground-truth cell (A = 0): a BadInputError / KitError says so. Where 2U - s = 0 (every cell positive, so U = 0
and no FP is possible), the challenge's script reports 0; so does this one.

Output: DIR/crg.json with `TP, FN, FP, X, A, r, U, score_s, CRG` (the challenge's keys) plus `n` and `labels`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reg2rg_lib.errors import KitError
from reg2rg_lib.io import write_json_atomic
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import LABELS

CRG_KEYS: tuple[str, ...] = ("TP", "FN", "FP", "X", "A", "r", "U", "score_s", "CRG")


class NoPositiveLabelError(KitError):
    """The ground truth has no positive label, so CRG (which weighs positives by 1/A) is undefined."""


def crg_score(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = LABELS,
              source: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """CRG and its intermediate values from (N, L) 0/1 matrices; `source` names the input in the error."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(labels):
        raise ValueError(f"label matrices must both be (N, {len(labels)}); got {t.shape} and {p.shape}")
    tp = int(((t == 1) & (p == 1)).sum())
    fn = int(((t == 1) & (p == 0)).sum())
    fp = int(((t == 0) & (p == 1)).sum())
    x = int(t.size)
    a = int(t.sum())
    if a == 0:
        where = f"{os.fspath(source)}: " if source is not None else ""
        raise NoPositiveLabelError(f"{where}the ground truth has no positive label in {t.shape[0]} case(s) x "
                                   f"{len(labels)} labels; CRG is undefined (it weighs positives by 1/A)")
    r = (x - a) / (2 * a)
    u = (x - a) / 2
    s = r * tp - r * fn - fp
    denom = 2 * u - s
    crg = u / denom if denom != 0 else 0.0
    return {"TP": tp, "FN": fn, "FP": fp, "X": x, "A": a, "r": float(r), "U": float(u), "score_s": float(s),
            "CRG": float(crg), "n": int(t.shape[0]), "labels": list(labels)}


def write_crg(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """DIR/crg.json (atomically)."""
    return write_json_atomic(MetricsFolder(out_dir).crg, result)
