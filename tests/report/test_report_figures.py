"""Figures: the savefig helper (names, reproducible bytes) and each figure on small inputs written here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.plotting import new_figure, savefig, style
from reg2rg_lib.regions import LABELS
from reg2rg_lib.report.figures import (
    case_findings,
    fig2_report_length,
    fig3_case_study,
    fig4_region_report,
    fig5_training_curves,
    fig6_ablation_bars,
    pick_case,
    report_lengths,
    representative_slices,
    smooth,
)


def _pred_csv(path, rows):
    pd.DataFrame(rows, columns=["AccNum", "Question", "GT_combined_report", "Pred_combined_report"]).to_csv(
        path, index=False)
    return path


def test_savefig_names_and_identical_bytes(tmp_path):
    def draw(out):
        with style():
            fig = new_figure(3, 2)
            fig.add_subplot().plot([0, 1, 2], [1, 0, 1], label="ä")
            return savefig(fig, out, "fig9_demo")

    a, b = draw(tmp_path / "a"), draw(tmp_path / "b")
    assert [p.name for p in a] == ["fig9_demo.png", "fig9_demo.pdf"]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert b"CreationDate" not in a[1].read_bytes() and b"Software" not in a[0].read_bytes()
    assert not list((tmp_path / "a").glob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="fig<N>_<topic>"):
        savefig(new_figure(1, 1), tmp_path, "Figure 2")


def test_report_lengths_strip_prefixes_and_fig2_summary(tmp_path):
    csv = _pred_csv(tmp_path / "p.csv", [
        ("a", "q", "The region 0 is heart: one two three. The region 1 is lung: four.", "The region 0 is heart: x y"),
        ("b", "q", "The region 0 is lung: one two", "The region 0 is lung: one"),
    ])
    lengths = report_lengths({"kit": csv})
    assert lengths.groupby("source")["words"].apply(list).to_dict() == {"ground truth": [4, 2], "kit": [2, 1]}
    summary, files = fig2_report_length({"bench": {"kit": csv}}, tmp_path / "figs")
    assert summary.set_index("source").loc["ground truth", "mean"] == 3.0
    assert {p.name for p in files} == {"fig2_report_length.png", "fig2_report_length.pdf"}
    with pytest.raises(BadInputError, match="missing.csv"):
        report_lengths({"kit": tmp_path / "missing.csv"})


class KeywordLabeler:
    """A stand-in labeler: a label is 1 when its lower-cased name occurs in the text."""

    def label(self, texts):
        return pd.DataFrame([{lab: int(lab.lower() in t.lower()) for lab in LABELS} for t in texts])


def test_case_findings_tags_matched_missed_and_extra():
    gt = "The region 0 is lung: Emphysema is seen. A lung nodule is seen. The region 1 is heart: Normal heart."
    pred = "The region 0 is lung: Emphysema is seen. Pleural effusion on the right. The region 1 is heart: Fine."
    found = case_findings(gt, pred, KeywordLabeler())
    tags = {s: t for s, t, _ in found["gt"] + found["pred"]}
    assert tags["Emphysema is seen."] == "matched"
    assert tags["A lung nodule is seen."] == "missed"
    assert tags["Pleural effusion on the right."] == "extra"
    assert tags["Normal heart."] is None
    assert found["gt_labels"] == ["Emphysema", "Lung nodule"]


def test_pick_case_prefers_shared_findings(tmp_path):
    csv = _pred_csv(tmp_path / "p.csv", [
        ("a", "q", "Emphysema. Lung nodule.", "Nothing."),
        ("b", "q", "Emphysema.", "Emphysema."),
        ("c", "q", "Emphysema. Lung nodule.", "Emphysema."),
    ])
    assert pick_case(csv, KeywordLabeler()) == 2  # one shared finding and the most GT findings


def test_fig3_and_fig4_write_files(tmp_path):
    _, files = fig3_case_study("Emphysema is seen.", "No change.", tmp_path, labeler=KeywordLabeler())
    assert files[0].name == "fig3_case_study.png" and files[0].stat().st_size > 0
    vol = np.full((24, 20, 10), -1000.0, np.float32)
    lung = np.zeros(vol.shape, bool)
    lung[4:12, 5:15, 2:8] = True
    heart = np.zeros(vol.shape, bool)
    heart[14:20, 5:12, 3:6] = True
    vol[lung], vol[heart] = -800, 40
    masks = {"heart": heart, "lung": lung}
    assert representative_slices(masks, 3) == [3, 4, 6]
    report = "The region 0 is heart: Normal. The region 1 is lung: A nodule."
    a = fig4_region_report(vol, masks, report, tmp_path / "a", case_id="c1")
    b = fig4_region_report(vol, masks, report, tmp_path / "b", case_id="c1")
    assert [x.read_bytes() == y.read_bytes() for x, y in zip(a, b)] == [True, True]
    with pytest.raises(ValueError, match="same shape"):
        fig4_region_report(vol, {"heart": heart[:-1]}, report, tmp_path)


def test_fig5_reads_train_logs_and_fig6_checks_columns(tmp_path):
    run = tmp_path / "runs" / "full"
    run.mkdir(parents=True)
    (run / "train_log.csv").write_text("step,epoch,loss,lr,elapsed_s\n1,0,5.0,0.001,0.1\n2,0,4.0,0.001,0.2\n")
    assert fig5_training_curves({"full": run}, tmp_path)[0].name == "fig5_training_curves.png"
    assert list(smooth(np.array([2.0, 2.0, 2.0]))) == pytest.approx([2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="ci_low"):
        fig6_ablation_bars(pd.DataFrame({"run": ["full"], "metric": ["BLEU-4"], "value": [0.1]}), tmp_path)
