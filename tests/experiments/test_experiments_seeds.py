"""The seed-spread benchmark's bookkeeping: rows from summaries, the CSV merge, mean/s.d., the kernels
check."""

from __future__ import annotations

import math

import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.experiments import seeds as sp
from reg2rg_lib.report.seed_spread import seed_spread_markdown


def _summary(kernels: str, **region: float) -> dict:
    return {"profile": "demo", "environment": {"torch_cpu_capability": kernels},
            "runs": {run: {"region_accuracy": acc, "BLEU-4": 0.3, "METEOR": 0.5, "ROUGE-L": 0.5,
                           "CE_micro_F1": 0.0 if run == "full" else 0.2, "distinct_reports": 5}
                     for run, acc in region.items()}}


def _rows(tmp_path):
    path = tmp_path / "demo.csv"
    rows = []
    for seed, (full, other) in enumerate([(0.99, 0.70), (0.97, 0.80), (0.95, 0.60)]):
        rows += sp.rows_from_summary(_summary("AVX512", full=full, no_lfd=other), seed, ["full", "no_lfd"])
    rows += sp.rows_from_summary(_summary("DEFAULT", full=0.96, no_lfd=0.20), 0, ["full", "no_lfd"])
    sp.merge_rows(path, rows)
    return path


def test_rows_keep_only_the_named_runs_with_seed_and_kernels():
    rows = sp.rows_from_summary(_summary("AVX2", full=0.9, no_rra=None), 3, ["full", "missing"])
    assert [(r["run"], r["seed"], r["cpu_capability"], r["region_accuracy"]) for r in rows] == \
        [("full", 3, "AVX2", 0.9)]


def test_merge_replaces_a_row_with_the_same_run_seed_and_kernels(tmp_path):
    path = _rows(tmp_path)
    sp.merge_rows(path, sp.rows_from_summary(_summary("AVX512", full=0.5), 1, ["full"]))
    rows = sp.read_rows(path)
    assert len(rows) == 8
    assert [r["region_accuracy"] for r in rows if r["run"] == "full" and r["cpu_capability"] == "AVX512"] == \
        [0.99, 0.5, 0.95]


def test_spread_is_over_the_main_kernels_with_the_sample_sd(tmp_path):
    cell = sp.spread(sp.read_rows(_rows(tmp_path)))["full"]["region_accuracy"]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(0.97)
    assert cell["sd"] == pytest.approx(math.sqrt(((0.02) ** 2 + 0 + (0.02) ** 2) / 2))
    assert (cell["min"], cell["max"]) == (0.95, 0.99)
    assert sp.spread(sp.read_rows(tmp_path / "demo.csv"), "DEFAULT")["full"]["region_accuracy"]["n"] == 1


def test_check_within_uses_the_95_percent_prediction_interval(tmp_path):
    rows = sp.read_rows(_rows(tmp_path))
    checks = {(c["run"], c["metric"]): c for c in sp.check_within(rows, "DEFAULT", "AVX512")}
    half = 4.302653 * 0.02 * math.sqrt(1 + 1 / 3)  # t(0.975, 2 d.f.) * s.d. * sqrt(1 + 1/n)
    assert checks[("full", "region_accuracy")]["low"] == pytest.approx(0.97 - half, abs=1e-6)
    assert checks[("full", "region_accuracy")]["within"] is True  # 0.96
    # 0.20: 0.70 +- 0.50 reaches down to 0.203
    assert checks[("no_lfd", "region_accuracy")]["within"] is False
    assert ("full", "CE_micro_F1") not in checks or checks[("full", "CE_micro_F1")]["within"]  # s.d. 0: equal
    assert sp.prediction_interval({"mean": 1.0, "sd": 0.0, "n": 1.0, "min": 1.0, "max": 1.0}) is None


def test_readme_spread_table_and_the_kernels_line(tmp_path):
    text = seed_spread_markdown(_rows(tmp_path), order=["no_lfd", "full"])
    assert "Spread over training seeds 0, 1, 2" in text and "AVX512 kernels" in text
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("|")]
    assert [r[0] for r in rows].index("no_lfd") < [r[0] for r in rows].index("full")  # columns are padded
    assert ["full", "3", "0.970 ± 0.020 [0.950, 0.990]"] == next(r for r in rows if r[0] == "full")[:3]
    assert "Trained with DEFAULT kernels (`ATEN_CPU_CAPABILITY=default`): 3 of 4" in text
    assert "`no_lfd` region_accuracy 0.200" in text


def test_a_file_that_is_not_a_spread_file_is_refused(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(BadInputError, match="not a seed-spread file"):
        sp.read_rows(bad)


def test_link_inputs_needs_a_prep_cache_and_refuses_a_real_folder(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    with pytest.raises(BadInputError, match="no prep cache"):
        sp.link_inputs(src, out)
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "manifest.json").write_text("{}")
    (src / "data").mkdir()
    sp.link_inputs(src, out)
    sp.link_inputs(src, out)  # again: the links are kept
    assert (out / "cache").is_symlink() and (out / "cache" / "manifest.json").is_file()
    assert not (out / "vision").exists()  # the source has none: no dangling link
    (out / "vision").mkdir()
    (src / "vision").mkdir()
    with pytest.raises(BadInputError, match="not a link"):
        sp.link_inputs(src, out)


def test_conclusions_are_the_directions_every_seed_agrees_on(tmp_path):
    rows = sp.read_rows(_rows(tmp_path))
    robust = sp.robust_conclusions(rows, "AVX512")
    assert robust[("no_lfd", "region_accuracy")] == "below"  # 0.70/0.80/0.60 against 0.99/0.97/0.95
    assert robust[("no_lfd", "CE_micro_F1")] == "above"
    sp.merge_rows(tmp_path / "demo.csv", sp.rows_from_summary(_summary("AVX512", full=0.5, no_lfd=0.9), 3,
                                                             ["full", "no_lfd"]))
    rows = sp.read_rows(tmp_path / "demo.csv")
    assert sp.robust_conclusions(rows, "AVX512")[("no_lfd", "region_accuracy")] is None  # seed 3 disagrees
    assert sp.directions(rows, "AVX512")[("no_lfd", "region_accuracy")] == [
        "below",
        "below",
        "below",
        "above",
    ]
    text = seed_spread_markdown(tmp_path / "demo.csv")
    assert "The seeds disagree" in text and "`no_lfd` region accuracy (below, below, below, above)" in text
    assert "Trained with DEFAULT kernels (`ATEN_CPU_CAPABILITY=default`): 1 of 1 of these hold." in text


def test_rows_of_another_thread_count_are_their_own_family():
    rows = sp.rows_from_summary(_summary("AVX512", full=0.9), 0, ["full"], threads=2)
    assert rows[0]["cpu_capability"] == "AVX512, 2 threads"


def test_a_seed_trains_the_runs_its_profile_imports_instead_of_reading_seed_0s(smoke, tmp_path, monkeypatch):
    # the demo imports llm_scratch-2x128 at seed 0; at another seed that row must be trained, not the import
    from reg2rg_lib.experiments import grid as grid_module
    from reg2rg_lib.profiles import load_profile

    monkeypatch.setattr(grid_module, "IMPORTED_DIR", str(tmp_path / "nothing_committed"))
    prof = load_profile("smoke", {"ablations.imported": ["no_rra"], "train.max_steps": 2})
    summary = sp.run_seed(prof, 1, smoke.root, tmp_path / "seed1", ["full", "no_rra"], parallel=1,
                          progress=False)
    run = tmp_path / "seed1" / "runs" / "no_rra"
    assert (run / "train_summary.json").is_file() and not (run / "PROVENANCE.md").exists()
    assert set(summary["runs"]) == {"full", "no_rra"}
