"""CRG (the VLM3D challenge's score): hand-computed cases, the undefined case, and `evaluate ce` writing
crg.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.cli import main
from reg2rg_lib.metrics.crg import CRG_KEYS, NoPositiveLabelError, crg_score
from reg2rg_lib.regions import LABELS

THREE = ("a", "b", "c")


def test_crg_hand_computed_one_of_each():
    # X = 2 exams x 3 labels = 6, A = 2; TP (0,a), FN (1,b), FP (0,b)
    # r = (6 - 2) / (2 * 2) = 1, U = (6 - 2) / 2 = 2, s = 1*1 - 1*1 - 1 = -1, CRG = 2 / (4 + 1) = 0.4
    t = np.array([[1, 0, 0], [0, 1, 0]])
    p = np.array([[1, 1, 0], [0, 0, 0]])
    res = crg_score(t, p, THREE)
    assert {k: res[k] for k in CRG_KEYS} == {"TP": 1, "FN": 1, "FP": 1, "X": 6, "A": 2, "r": 1.0, "U": 2.0,
                                              "score_s": -1.0, "CRG": 0.4}


def test_crg_hand_computed_fractional_weight():
    # X = 6, A = 3: r = 3 / 6 = 0.5, U = 1.5; TP 2, FN 1, FP 1: s = 1 - 0.5 - 1 = -0.5, CRG = 1.5 / 3.5 = 3/7
    t = np.array([[1, 1, 0], [1, 0, 0]])
    p = np.array([[1, 0, 1], [1, 0, 0]])
    res = crg_score(t, p, THREE)
    assert (res["TP"], res["FN"], res["FP"]) == (2, 1, 1)
    assert res["r"] == 0.5 and res["U"] == 1.5 and res["score_s"] == -0.5
    assert res["CRG"] == pytest.approx(3 / 7, abs=1e-15)


def test_crg_bounds_perfect_silent_and_all_positive():
    t = np.array([[1, 0, 0], [0, 1, 1]])
    assert crg_score(t, t, THREE)["CRG"] == 1.0  # s = r*A = U: U / U
    assert crg_score(t, np.zeros_like(t), THREE)["CRG"] == pytest.approx(1 / 3)  # s = -U: U / 3U
    # predicting every label: s = r*A - (X - A) = U - 2U = -U, the same 1/3 as predicting none
    noisy = crg_score(t, np.ones_like(t), THREE)
    assert (noisy["TP"], noisy["FP"], noisy["score_s"]) == (3, 3, -1.5) and noisy["CRG"] == pytest.approx(
        1 / 3
    )
    worse = crg_score(t, np.array([[0, 1, 1], [1, 0, 0]]), THREE)  # every cell wrong: s = -rA - FP = -4.5
    assert worse["score_s"] == -4.5 and worse["CRG"] == pytest.approx(1.5 / 7.5)
    ones = np.ones((2, 3), dtype=int)  # X = A: U = 0 and 2U - s = 0; the challenge's script reports 0
    assert crg_score(ones, ones, THREE)["CRG"] == 0.0


def test_crg_without_positive_ground_truth_is_a_clear_error():
    with pytest.raises(
        NoPositiveLabelError, match="labels.csv: the ground truth has no positive label in 2 case"
    ):
        crg_score(np.zeros((2, 3)), np.ones((2, 3)), THREE, source="labels.csv")
    with pytest.raises(ValueError, match="must both be"):
        crg_score(np.zeros((2, 3)), np.zeros((2, 4)), THREE)


def _label_table(path, y_true, y_pred):
    cols = {f"GT_{lab}": y_true[:, i] for i, lab in enumerate(LABELS)}
    cols.update({f"Pred_{lab}": y_pred[:, i] for i, lab in enumerate(LABELS)})
    pd.DataFrame(cols).to_csv(path, index=False)


def test_cli_evaluate_ce_writes_crg_json(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, (7, 18)), rng.integers(0, 2, (7, 18))
    _label_table(tmp_path / "labels.csv", t, p)
    assert main(["evaluate", "ce", "--labels", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "o"),
                 "--bootstrap", "0"]) == 0
    got = json.loads((tmp_path / "o" / "crg.json").read_text())
    tp, fn, fp = int((t & p).sum()), int((t & (1 - p)).sum()), int(((1 - t) & p).sum())
    x, a = t.size, int(t.sum())
    r = (x - a) / (2 * a)
    s = r * tp - r * fn - fp
    assert (got["TP"], got["FN"], got["FP"], got["X"], got["A"]) == (tp, fn, fp, 126, a)
    assert got["CRG"] == pytest.approx(((x - a) / 2) / (x - a - s), abs=1e-12)
    assert f"CRG {got['CRG']:.4f}" in capsys.readouterr().out


def test_cli_evaluate_ce_no_positive_label_exits_2(tmp_path, capsys):
    _label_table(tmp_path / "none.csv", np.zeros((3, 18), int), np.ones((3, 18), int))
    assert main(["evaluate", "ce", "--labels", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'none.csv'}: the ground truth has no positive label")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "crg.json").exists()
