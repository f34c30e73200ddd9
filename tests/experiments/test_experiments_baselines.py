"""Baselines, output diversity, Holm-corrected tests and the one-change-per-ablation rule."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from test_experiments_ablations import _fake_run  # the same fake evaluation folders

from reg2rg_lib.data.prep import CaseRecord
from reg2rg_lib.experiments.ablation_stats import ablation_stats, verdicts
from reg2rg_lib.experiments.baselines import (
    baseline_reports,
    baseline_table,
    is_near_constant,
    most_frequent_finding,
    normal_paragraphs,
    output_diversity,
    read_baselines,
    shuffled_story,
    write_constant_predictions,
)
from reg2rg_lib.experiments.grid import ABLATIONS, ablation, family, profile_for, same_model_as
from reg2rg_lib.experiments.summary import SUMMARY_METRICS, write_summary
from reg2rg_lib.infer.predictions import PRED_COLUMNS
from reg2rg_lib.io import write_csv_atomic
from reg2rg_lib.metrics.region import region_recognition
from reg2rg_lib.metrics.stats import format_p, holm_adjust
from reg2rg_lib.model import Reg2RGConfig, build_target
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.regions import LABELS, REGIONS, region_sequence


def _record(name: str, labels: dict[str, int], reports: dict[str, str], regions=None) -> CaseRecord:
    regions = list(regions or [r for r in REGIONS if r in reports])
    return CaseRecord(name, "train", regions, reports, {lab: labels.get(lab, 0) for lab in LABELS}, "")


def _predictions(path, reports: list[str]) -> None:
    rows = [{"AccNum": f"c{i}", "Question": "q", "GT_combined_report": "gt", "Pred_combined_report": r}
            for i, r in enumerate(reports)]
    write_csv_atomic(path, PRED_COLUMNS, rows, lineterminator="\n")


def test_output_diversity_counts_distinct_reports_and_flags_near_constant(tmp_path):
    _predictions(tmp_path / "one.csv", ["No finding.  "] * 9 + ["No finding."])  # whitespace does not count
    one = output_diversity(tmp_path / "one.csv")
    assert (one["n"], one["distinct_reports"], one["top_share"], one["near_constant"]) == (10, 1, 1.0, True)
    _predictions(tmp_path / "varied.csv", [f"report {i}" for i in range(10)])
    varied = output_diversity(tmp_path / "varied.csv")
    assert (varied["distinct_reports"], varied["near_constant"]) == (10, False)
    assert is_near_constant(9, 50) and not is_near_constant(20, 50)  # the rule: under 20% distinct
    assert is_near_constant(30, 50, top_share=0.6)  # or one report for most cases


def test_baselines_come_from_the_train_split():
    normal = {"heart": "Heart normal.", "lung": "Lungs clear."}
    train = [
        _record("n1", {}, normal),
        _record("n2", {}, {"heart": "Heart normal.", "lung": "Lungs are clear."}),
        _record("n3", {}, normal),
        _record("f1", {"Cardiomegaly": 1, "Emphysema": 1}, {"heart": "Big heart.", "lung": "Emphysema.",
                                                          "bone": "Bone intact."}),
        _record("f2", {"Cardiomegaly": 1}, {"heart": "Enlarged heart.", "lung": "Lungs clear."}),
    ]
    # the most frequent paragraph among the cases without findings; among all cases for an organ they lack
    assert normal_paragraphs(train) == {"bone": "Bone intact.", **normal}
    assert most_frequent_finding(train) == ("Cardiomegaly", 2)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    made = baseline_reports(train, cfg)
    assert made["baseline_normal"]["report"] == build_target(["bone", "heart", "lung"],
                                                             {"bone": "Bone intact.", **normal}, cfg)
    names = {k: list(region_sequence(v["report"]).values()) for k, v in made.items()}
    assert names["baseline_normal"] == names["baseline_frequent_finding"]  # the same canonical-order names
    finding = made["baseline_frequent_finding"]
    assert finding["train_case"] == "f2" and finding["finding"] == "Cardiomegaly"  # fewest other findings
    assert "Enlarged heart." in finding["report"] and "Lungs clear." in finding["report"]


def test_canonical_order_names_score_below_one_when_a_region_is_missing(tmp_path):
    """The canonical-order baseline: names by position alone are right only until the first missing region."""
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    paragraphs = {r: f"{r} normal." for r in REGIONS}
    constant = baseline_reports([_record("a", {}, paragraphs)], cfg)["baseline_normal"]["report"]
    complete = build_target(list(REGIONS), paragraphs, cfg)
    missing_first = build_target(list(REGIONS[1:]), paragraphs, cfg)  # every name shifts by one place
    scores = region_recognition([complete, missing_first], [constant, constant])["per_sample_accuracy"]
    assert scores[0] == 1.0 and scores[1] < 0.2
    ref = tmp_path / "full.csv"
    _predictions(ref, ["x", "y"])
    out = write_constant_predictions(ref, constant, tmp_path / "b" / "predictions.csv")
    table = pd.read_csv(out)
    assert list(table.columns) == list(PRED_COLUMNS) and set(table["Pred_combined_report"]) == {constant}


def test_holm_adjustment_and_p_value_text():
    adjusted = holm_adjust(np.array([0.01, 0.04, np.nan, 0.03]))
    assert adjusted[[0, 1, 3]] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[2])
    assert holm_adjust(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1
    assert format_p(0.0, 1000) == "< 0.001"  # no resample beat the observed difference
    assert format_p(0.0, 1000, tests=8) == "< 0.008"  # the bound after a Holm adjustment over 8 tests
    assert format_p(0.0123, 1000) == "0.012" and format_p(float("nan"), 1000) == "–"


def test_one_change_per_ablation():
    smoke, demo = load_profile("smoke"), load_profile("demo")
    assert ablation("no_rra").changes == {"rra": False} and not ablation("no_rra").train  # alignment only
    assert profile_for(demo, ablation("no_rra")) is demo
    assert profile_for(demo, ablation("no_region_dropout")).train.region_dropout == 0.0
    assert profile_for(demo, ablation("name_weight_1")).train.region_name_weight == 1.0
    # the demo trains with region dropout 0.3 and name weight 10: those rows are new models there ...
    assert not same_model_as(demo, ablation("no_region_dropout"), ablation("full"))
    assert not same_model_as(demo, ablation("name_weight_1"), ablation("full"))
    # ... while smoke has the paper's settings already, so they are full itself and get reused
    assert same_model_as(smoke, ablation("no_region_dropout"), ablation("full"))
    assert {family(r) for r in ("no_rra", "no_region_dropout", "name_weight_1")} == {"table6_rra"}
    assert family("llm_small") == "table7_llm_size" and family("no_lfd") == "table4_lfd"
    for ab in ABLATIONS.values():  # every run names one kind of change
        assert len(ab.changes) <= 2 and len(ab.train) <= 1 and not (ab.changes and ab.train)


def test_the_demos_vision_and_geometry_dropout_rows():
    """The demo's standardised features without the patch LayerNorm and its geometry dropout each have a row
    that puts the paper's setting back; under the paper's settings they are full itself; and the
    pretrained-ViT row still builds under the demo (a RadFM ViT3D has the LayerNorm)."""
    demo = load_profile("demo")
    as_paper = {"model.vision_patch_norm": True, "model.vision_standardize": False,
                "train.geometry_dropout": 0.0}
    papers = load_profile("smoke", overrides=as_paper)
    full = Reg2RGConfig.from_profile(demo)
    assert not full.vit_patch_norm and full.vision_standardize and demo.train.geometry_dropout == 0.3
    as_is = Reg2RGConfig.from_profile(demo, ablation("vision_as_is").changes)
    assert as_is.vit_patch_norm and not as_is.vision_standardize
    assert as_is.replace(vit_patch_norm=False, vision_standardize=True) == full  # nothing else moves
    no_geometry_dropout = profile_for(demo, ablation("no_geometry_dropout")).train
    assert no_geometry_dropout.geometry_dropout == 0.0
    assert dataclasses.replace(no_geometry_dropout, geometry_dropout=0.3) == demo.train  # nothing else moves
    for row in ("vision_as_is", "no_geometry_dropout"):
        assert not same_model_as(demo, ablation(row), ablation("full"))
        assert same_model_as(papers, ablation(row), ablation("full"))
        assert family(row) == "table5_region_features"
    pretrained = Reg2RGConfig.from_profile(demo, ablation("vit_pretrained").changes)  # no KitError
    assert pretrained.vit_patch_norm and pretrained.vision_standardize and pretrained.vision_checkpoint


def test_the_label_head_row_trains_the_lm_loss_alone_and_is_full_under_the_paper():
    """`no_label_head` puts the paper's LM loss alone back (label weight 0), nothing else; the paper's profile
    has no label head, so there the row is full itself."""
    demo, paper = load_profile("demo"), load_profile("paper")
    assert demo.train.label_weight == 1.0 and paper.train.label_weight == 0.0
    row = profile_for(demo, ablation("no_label_head")).train
    assert row.label_weight == 0.0 and dataclasses.replace(row, label_weight=1.0) == demo.train
    assert not same_model_as(demo, ablation("no_label_head"), ablation("full"))
    assert same_model_as(paper, ablation("no_label_head"), ablation("full"))
    assert Reg2RGConfig.from_profile(demo).label_head  # the head is part of the model the profile trains
    assert not Reg2RGConfig.from_profile(profile_for(demo, ablation("no_label_head"))).label_head
    assert family("no_label_head") == "table6_rra"


def test_stats_carry_holm_seeds_baselines_and_near_constant_notes(tmp_path):
    paths = RunPaths(tmp_path)
    rng = np.random.default_rng(0)
    n = 30
    good = list(rng.uniform(0.5, 0.7, n))
    labels = rng.integers(0, 2, (n, 3))
    _fake_run(paths, "full", good, [1.0] * n, labels)
    _fake_run(paths, "texture_only", [g - 0.3 for g in good], [1.0] * n, labels)
    _fake_run(paths, "texture_geometry", [g - 0.01 for g in good], [1.0] * n, labels)
    base = tmp_path / "baselines" / "baseline_normal"
    _fake_run(RunPaths(tmp_path / "b"), "x", [0.1] * n, [0.5] * n, labels)
    base.mkdir(parents=True)
    (tmp_path / "b" / "runs" / "x" / "metrics").rename(base / "metrics")
    (base / "metrics" / "summary.json").write_text(
        json.dumps({"headline": {m: 0.1 for m in SUMMARY_METRICS}})
    )
    _predictions(base / "predictions.csv", ["same"] * n)
    head = {m: 0.5 for m in SUMMARY_METRICS}
    write_summary(paths, "smoke", {
        "full": {**head, "BLEU-4": float(np.mean(good)), "distinct_reports": 25.0, "n_test_cases": float(n)},
        "texture_only": {**head, "BLEU-4": float(np.mean(good)) - 0.3, "distinct_reports": 1.0,
                         "n_test_cases": float(n)},
        "texture_geometry": {**head, "BLEU-4": float(np.mean(good)) - 0.01}})
    stats = ablation_stats(paths, ["full", "texture_only", "texture_geometry"], n_resamples=200,
                           baselines={"baseline_normal": base}, seeds=[0])
    row = stats.set_index(["run", "metric"])
    assert set(stats["seeds"]) == {1} and set(stats["n_resamples"]) == {200}
    assert row.loc[("baseline_normal", "BLEU-4"), "kind"] == "baseline"
    assert row.loc[("baseline_normal", "BLEU-4"), "distinct_reports"] == 1
    t5 = stats[(stats["family"] == "table5_region_features") & stats["p_vs_full"].notna()]
    assert set(t5["tests_in_family"]) == {len(t5)}
    assert (t5["p_holm"] >= t5["p_vs_full"]).all()
    assert row.loc[("texture_only", "BLEU-4"), "p_vs_full"] == 0.0  # no resample beats it: prints "< 1/B"
    v = verdicts(stats).set_index(["run", "metric"])
    assert "baseline_normal" not in set(v.index.get_level_values(0))
    assert v.loc[("texture_only", "BLEU-4"), "verdict"] == "full better"
    assert "texture_only output near-constant: 1 distinct report(s) for 30 cases" in v.loc[
        ("texture_only", "BLEU-4"), "note"]
    assert v.loc[("texture_geometry", "BLEU-4"), "note"] == ""


def test_baseline_table_and_shuffled_story_follow_the_files(tmp_path):
    result = {"baselines": {
        "baseline_normal": {"region_accuracy": 0.834, "BLEU-4": 0.3, "METEOR": 0.4, "ROUGE-L": 0.5,
                            "CE_micro_F1": 0.0, "distinct_reports": 1, "n": 50, "description": "normal"},
        "baseline_frequent_finding": {"region_accuracy": 0.834, "BLEU-4": 0.2, "CE_micro_F1": 0.1,
                                      "distinct_reports": 1, "n": 50, "description": "finding"}},
        "canonical_order_region_accuracy": 0.834}
    table = baseline_table(result)
    assert list(table.index) == ["baseline_normal", "baseline_frequent_finding"]
    assert table.loc["baseline_frequent_finding", "BLEU-4"] == 0.2
    assert pd.isna(table.loc["baseline_frequent_finding", "METEOR"])  # not in the file: not made up
    assert baseline_table(read_baselines(tmp_path / "absent.json")).empty

    reads = shuffled_story({"region_accuracy": 0.996, "region_accuracy_shuffled": 0.990}, 0.834)
    assert "canonical order: 0.9960; with each test case's regions shuffled: 0.9900 (-0.0060)" in reads
    assert "scores 0.8340" in reads and "from the region features" in reads
    position = shuffled_story({"region_accuracy": 0.996, "region_accuracy_shuffled": 0.40}, 0.834)
    assert "does no better than the position-only baseline" in position
    part = shuffled_story({"region_accuracy": 0.996, "region_accuracy_shuffled": 0.90}, 0.834)
    assert "in part" in part
    assert "did not run" in shuffled_story({"region_accuracy": None}, 0.834)
    assert "baselines.json is absent" in shuffled_story(
        {"region_accuracy": 0.9, "region_accuracy_shuffled": 0.9}, None
    )
