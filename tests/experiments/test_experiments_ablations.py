"""The ablation grid's logic without training (experiments.grid, .summary, .ablation_stats): run names, reuse
of identical models, summary.json, paired stats."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.errors import KitError
from reg2rg_lib.experiments.ablation_stats import PerCase, ablation_stats, replicates, verdicts
from reg2rg_lib.experiments.grid import ablation, grid, run_folder, run_steps, same_model_as
from reg2rg_lib.experiments.summary import SUMMARY_METRICS, write_summary
from reg2rg_lib.metrics.stats import bootstrap_indices, mean_replicates, paired_test, percentile_ci
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.regions import LABELS


def test_ablation_names_and_grid_order():
    assert ablation("no_lfd").changes == {"decoupled": False}
    assert ablation("llm_scratch-4x256").llm_arch == "scratch-4x256"
    with pytest.raises(KitError, match="unknown LLM"):
        ablation("llm_huge")
    with pytest.raises(KitError, match="unknown ablation"):
        ablation("no_everything")
    runs = grid(load_profile("demo").ablations, ["no_rra", "llm_scratch-4x256", "no_rra"])
    assert [a.name for a in runs] == ["full", "no_rra", "llm_scratch-4x256"]  # full first, duplicates dropped


def test_llm_of_the_preset_is_the_full_model():
    prof = load_profile("smoke")
    assert same_model_as(prof, ablation("llm_scratch-2x128"), ablation("full"))
    assert not same_model_as(prof, ablation("llm_scratch-4x256"), ablation("full"))
    assert not same_model_as(prof, ablation("no_rra"), ablation("full"))
    demo = load_profile("demo")  # the demo swaps the preset's LLM for `scratch-2x64` (profile model.llm_arch)
    assert same_model_as(demo, ablation("llm_scratch-2x64"), ablation("full"))
    assert not same_model_as(demo, ablation("llm_scratch-2x128"), ablation("full"))
    assert same_model_as(load_profile("demo", {"model.llm_arch": None}), ablation("llm_scratch-2x128"),
                                ablation("full"))


def test_the_names_used_before_the_rename_still_build_the_same_models():
    # profiles, saved configs and run names from before 2026-12-03 say preset tiny/small and LLM
    # micro/tiny/small
    from reg2rg_lib.model import Reg2RGConfig

    assert Reg2RGConfig.preset("tiny") == Reg2RGConfig.preset("cpu-tiny")
    assert Reg2RGConfig.preset("small") == Reg2RGConfig.preset("cpu-small")
    cfg = Reg2RGConfig.preset("cpu-tiny")
    assert cfg.with_llm("micro") == cfg.with_llm("scratch-2x64") and cfg.with_llm("micro").llm_hidden == 64
    # the name says it
    assert cfg.llm_name == "scratch-2x128" and (cfg.llm_layers, cfg.llm_hidden) == (2, 128)
    assert (
        ablation("llm_micro").llm_arch == "scratch-2x64" and ablation("llm_tiny").llm_arch == "scratch-2x128"
    )
    old = load_profile("demo", {"model.preset": "tiny", "model.llm_arch": "micro"})
    assert Reg2RGConfig.from_profile(old) == Reg2RGConfig.from_profile(load_profile("demo"))
    with pytest.raises(KitError, match="unknown LLM architecture 'huge'"):
        ablation("llm_huge")


def test_run_steps_follow_training_unless_set():
    smoke = load_profile("smoke")
    assert run_steps(smoke) == smoke.train.max_steps
    assert run_steps(load_profile("smoke", {"ablations.max_steps": 7})) == 7
    assert run_folder(smoke, "full", smoke.train.max_steps) == "full"  # notebook 03's run is the grid's
    assert run_folder(smoke, "full", 7) == "full_s7"  # a shorter grid never overwrites it


def _fake_run(
    paths: RunPaths, name: str, bleu: list[float], acc: list[float | None], labels: np.ndarray
) -> None:
    """The files `evaluate_predictions` writes, with chosen per-case numbers."""
    out = paths.run(name) / "metrics"
    out.mkdir(parents=True)
    ids = [f"c{i}" for i in range(len(bleu))]
    pd.DataFrame({"id": ids, "BLEU-4": bleu, "METEOR": bleu, "ROUGE-L": bleu}).to_csv(
        out / "nlg_per_sample.csv", index=False
    )
    scored = [a for a in acc if a is not None]
    (out / "region_metrics.json").write_text(
        json.dumps(
            {
                "per_sample_accuracy": acc,
                "n_scored": len(scored),
                "accuracy": float(np.mean(scored)) if scored else 0.0,
            }
        )
    )
    table = pd.DataFrame({"AccNum": ids})
    for j, lab in enumerate(LABELS):
        table[f"GT_{lab}"] = labels[:, j] if j < labels.shape[1] else 0
        table[f"Pred_{lab}"] = labels[:, j] if j < labels.shape[1] else 0
    table.to_csv(out / "ce_labels.csv", index=False)


def test_summary_and_paired_stats(tmp_path):
    paths = RunPaths(tmp_path)
    rng = np.random.default_rng(0)
    n = 40
    good = list(rng.uniform(0.5, 0.7, n))
    labels = rng.integers(0, 2, (n, 3))
    _fake_run(paths, "full", good, [1.0] * n, labels)
    _fake_run(paths, "no_rra", [g - 0.2 for g in good], [None] * n, labels)
    _fake_run(paths, "no_lfd", [g + rng.normal(0, 0.01) for g in good], [1.0] * n, labels)
    headline = {m: 0.5 for m in SUMMARY_METRICS}
    results = {"full": {**headline, "BLEU-4": float(np.mean(good))},
               "no_rra": {**headline, "region_accuracy": None, "BLEU-4": float(np.mean(good)) - 0.2},
               "no_lfd": headline, "llm_tiny": {**headline, "BLEU-4": float(np.mean(good))}}
    summary = write_summary(paths, "smoke", results)
    on_disk = json.loads(paths.summary.read_text())
    assert on_disk == summary and on_disk["profile"] == "smoke"
    assert list(on_disk["runs"]) == ["full", "no_rra", "no_lfd", "llm_tiny"]
    assert on_disk["runs"]["no_rra"]["region_accuracy"] is None

    stats = ablation_stats(paths, ["full", "no_rra", "no_lfd", "llm_tiny"], {"llm_tiny": "full"},
                                  n_resamples=300)
    row = stats.set_index(["run", "metric"])
    assert row.loc[("no_rra", "BLEU-4"), "p_vs_full"] < 0.01
    assert row.loc[("no_rra", "BLEU-4"), "delta_vs_full"] == pytest.approx(-0.2)
    assert math.isnan(row.loc[("no_rra", "region_accuracy"), "value"])
    assert row.loc[("no_lfd", "BLEU-4"), "p_vs_full"] > 0.05
    full = row.loc[("full", "BLEU-4")]
    assert full["ci_low"] < full["value"] < full["ci_high"]
    verdict = verdicts(stats).set_index(["run", "metric"])["verdict"]
    assert verdict[("no_rra", "BLEU-4")] == "full better"
    assert verdict[("no_rra", "region_accuracy")] == "not applicable"
    assert verdict[("no_lfd", "BLEU-4")] == "no clear difference"
    assert verdict[("llm_tiny", "METEOR")] == "same model as full"
    # full's own outputs: not a test of the table
    assert math.isnan(row.loc[("llm_tiny", "BLEU-4"), "p_vs_full"])


def test_summary_merges_earlier_runs_and_refuses_incomplete_metrics(tmp_path):
    paths = RunPaths(tmp_path)
    full = {m: 0.1 for m in SUMMARY_METRICS}
    write_summary(paths, "demo", {"old": full})
    assert list(write_summary(paths, "demo", {"full": full})["runs"]) == ["full", "old"]
    assert list(write_summary(paths, "smoke", {"full": full})["runs"]) == ["full"]  # no mixing profiles
    with pytest.raises(KitError, match="BLEU-4"):
        write_summary(paths, "smoke", {"bad": {"region_accuracy": 1.0}})
    assert json.loads(paths.summary.read_text())["runs"] == {"full": full}  # unchanged after the refusal


def test_missing_cases_are_named(tmp_path):
    data = PerCase(["a", "b"], {"BLEU-4": np.array([0.1, 0.2])})
    assert list(data.take(["b", "a"], tmp_path).scores["BLEU-4"]) == [0.2, 0.1]
    with pytest.raises(Exception, match="e.g. c"):
        data.take(["a", "c"], tmp_path)


def test_ablation_stats_are_the_metrics_bootstrap(tmp_path):
    """The ablation CIs and paired tests are `metrics.stats` on the per-case scores: same seed, same
    indices."""
    paths = RunPaths(tmp_path)
    rng = np.random.default_rng(1)
    n = 25
    full, other = list(rng.uniform(0.2, 0.6, n)), list(rng.uniform(0.2, 0.6, n))
    labels = rng.integers(0, 2, (n, 3))
    _fake_run(paths, "full", full, [1.0] * n, labels)
    _fake_run(paths, "no_lfd", other, [1.0] * n, labels)
    headline = {m: 0.5 for m in SUMMARY_METRICS}
    write_summary(paths, "smoke", {"full": {**headline, "BLEU-4": float(np.mean(full))},
                                   "no_lfd": {**headline, "BLEU-4": float(np.mean(other))}})
    stats = ablation_stats(paths, ["full", "no_lfd"], n_resamples=200, seed=3).set_index(["run", "metric"])
    idx = bootstrap_indices(n, 200, 3)
    a, b = mean_replicates(np.array(full), idx), mean_replicates(np.array(other), idx)
    assert tuple(stats.loc[("no_lfd", "BLEU-4"), ["ci_low", "ci_high"]]) == percentile_ci(b)
    test = paired_test(a, b, float(np.mean(full)), float(np.mean(other)))
    assert stats.loc[("no_lfd", "BLEU-4"), "p_vs_full"] == test["p_value"]
    assert stats.loc[("no_lfd", "BLEU-4"), "delta_vs_full"] == test["delta"]


def test_topic_consistency_gets_a_pooled_bootstrap_ci_and_no_test():
    # per case [paragraphs, on topic]: the share is pooled over a resample's paragraphs, as the headline is
    counts = np.array([[10, 10], [2, 0], [4, 3]], dtype=float)
    data = PerCase(["a", "b", "c"], {}, topic=counts)
    identity = np.array([[0, 1, 2], [1, 1, 1], [0, 0, 2]])
    reps = replicates(data, identity)["topic_consistency"]
    assert reps == pytest.approx([13 / 16, 0.0, 23 / 24])  # not the mean of the per-case shares (0.583)
    assert replicates(data.take(["c", "a", "b"], None), np.array([[0, 1]]))["topic_consistency"] == (
        pytest.approx([13 / 14]))
    stats = pd.DataFrame([
        {"run": "full", "metric": "topic_consistency", "value": 0.9, "ci_low": 0.8, "ci_high": 1.0,
         "delta_vs_full": math.nan, "p_vs_full": math.nan, "kind": "run"},
        {"run": "no_lfd", "metric": "topic_consistency", "value": 0.5, "ci_low": 0.4, "ci_high": 0.6,
         "delta_vs_full": math.nan, "p_vs_full": math.nan, "kind": "run"},
        {"run": "no_lfd", "metric": "BLEU-4", "value": 0.3, "ci_low": 0.2, "ci_high": 0.4,
         "delta_vs_full": -0.1, "p_vs_full": 0.001, "kind": "run"},
    ])
    # a verdict per tested metric only: topic consistency is shown with its CI, never called "not applicable"
    assert verdicts(stats)[["run", "metric"]].values.tolist() == [["no_lfd", "BLEU-4"]]
