"""Region accuracy against training step, from the checkpoints of a short smoke run."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.experiments.baselines import baseline_reports, canonical_order_accuracy
from reg2rg_lib.experiments.curves import (
    checkpoint_scorer,
    curve_story,
    read_step_table,
    region_accuracy_by_step,
)
from reg2rg_lib.infer.predictions import read_predictions
from reg2rg_lib.metrics.region import region_recognition, topic_consistency
from reg2rg_lib.model import Reg2RGConfig
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.report.kit_figures import kit_fig5_region_accuracy_by_step
from reg2rg_lib.train.run import train_run


@pytest.mark.slow  # ~30 s with the 4-step training fixture on a shared 2-core CPU
def test_every_checkpoint_gives_one_scored_point_and_a_rerun_only_scores(trained, smoke, tmp_path):
    curve = region_accuracy_by_step(trained, smoke.cache, "smoke", limit=2)
    assert list(curve["step"]) == [2, 4]  # the fixture's checkpoints
    assert (curve["split"] == "validation").all()  # a training-time look: never the test split
    assert (curve["n_cases"] == 2).all() and curve["region_accuracy"].between(0, 1).all()
    # topic consistency beside region accuracy at every step: that of the step's own reports (None: the
    # 4-step fixture numbers no paragraph)
    for row in curve.itertuples():
        written = [r["Pred_combined_report"] for r in read_predictions(trained / row.predictions)]
        assert row.topic_consistency == topic_consistency(written)["share"]
    first = trained / curve.loc[0, "predictions"]
    stamp = first.stat().st_mtime_ns
    again = region_accuracy_by_step(trained, smoke.cache, "smoke", limit=2)
    assert again.equals(curve) and first.stat().st_mtime_ns == stamp  # cached reports, not generated again
    files = kit_fig5_region_accuracy_by_step(curve, tmp_path, baseline=0.5)
    assert [p.name for p in files] == [
        "kit_fig5_region_accuracy_by_step.png",
        "kit_fig5_region_accuracy_by_step.pdf",
    ]
    assert all(os.path.getsize(p) > 0 for p in files)


@pytest.mark.slow  # one more 4-step smoke training (~15-30 s on a shared 2-core CPU)
def test_scoring_during_training_keeps_pruned_steps_and_leaves_training_unchanged(trained, smoke):
    run = smoke.run("scored_during_training")
    result = train_run("smoke", run, max_steps=4, save_every=2, progress=False,
                       on_checkpoint=checkpoint_scorer(run, smoke.cache, "smoke", limit=2, fresh=True))
    # the callback's generation draws no random number the training would have drawn: same weights as without
    # it
    assert result.weights_sha256 == json.loads((trained / "train_summary.json").read_text())["weights_sha256"]
    table = read_step_table(run)
    assert list(table["step"]) == [2, 4] and (table["split"] == "validation").all()
    assert (table["n_cases"] == 2).all() and table["region_accuracy"].between(0, 1).all()
    shutil.rmtree(run / "checkpoints" / "step-00000002")  # as the Training stage prunes an older checkpoint
    curve = region_accuracy_by_step(run, smoke.cache, "smoke", limit=2)
    assert list(curve["step"]) == [2, 4]  # step 2 from the table written while training
    assert curve.loc[0, "region_accuracy"] == pytest.approx(table.loc[0, "region_accuracy"])
    # step 4's reports reused, not regenerated
    assert curve.loc[1, "predictions"] == table.loc[1, "predictions"]
    # another number of cases: the pruned step's row does not match and is left out, the kept one is rescored
    assert list(region_accuracy_by_step(run, smoke.cache, "smoke", limit=1)["step"]) == [4]


def test_curve_story_follows_the_rows():
    curve = pd.DataFrame({"step": [500, 1000], "region_accuracy": [None, 0.9], "n_scored": [0, 160],
                          "n_cases": [16, 16], "split": ["validation"] * 2, "predictions": ["a", "b"]})
    story = curve_story(curve, baseline=0.8340)
    assert "16 validation cases at 2 checkpoint(s): step 500: n/a, step 1000: 0.9000." in story
    assert "scores 0.8340 on the same cases; the last checkpoint is above it (+0.0660)" in story
    lower = curve_story(curve.assign(region_accuracy=[0.1, 0.5]), baseline=0.8340)
    assert "step 1000: 0.5000" in lower and "below it (-0.3340)" in lower
    assert "No canonical-order baseline" in curve_story(curve)
    assert "One point is no curve" in curve_story(curve.iloc[1:])
    assert "No checkpoint was scored" in curve_story(curve.iloc[:0])
    topical = curve_story(curve.assign(topic_consistency=[None, 0.75]))
    assert "step 500: n/a, step 1000: 0.9000 (topic 0.7500)." in topical


def test_a_step_table_from_before_topic_consistency_still_reads(tmp_path):
    (tmp_path / "region_accuracy_by_step.csv").write_text(
        "step,region_accuracy,n_scored,n_cases,split,predictions\n500,0.9,160,16,validation,curve/a.csv\n")
    table = read_step_table(tmp_path)
    assert table.loc[0, "region_accuracy"] == 0.9 and pd.isna(table.loc[0, "topic_consistency"])
    files = kit_fig5_region_accuracy_by_step(table, tmp_path)  # drawn without the topic line
    assert all(os.path.getsize(p) > 0 for p in files)


@pytest.mark.slow  # reuses the training fixture; scores one constant report
def test_canonical_order_baseline_on_the_curves_cases(trained, smoke):
    curve = region_accuracy_by_step(trained, smoke.cache, "smoke", limit=2)
    ref = trained / curve["predictions"].iloc[-1]
    acc = canonical_order_accuracy(ref, smoke.cache, load_profile("smoke"))
    assert acc is not None and 0 <= acc <= 1
    # the same number region recognition gives the constant report written into the same cases' CSV
    rows = read_predictions(ref)
    train = load_cache(smoke.cache).cases("train")
    report = baseline_reports(train, Reg2RGConfig.from_profile(load_profile("smoke")))["baseline_normal"][
        "report"
    ]
    m = region_recognition([r["GT_combined_report"] for r in rows], [report] * len(rows))
    assert acc == pytest.approx(m["accuracy"])
    assert f"scores {acc:.4f} on the same cases" in curve_story(curve, acc)
