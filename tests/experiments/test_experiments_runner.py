"""The ablation runner: worker processes give the sequential grid's runs."""

from __future__ import annotations

import logging

import pytest

from reg2rg_lib.train.loop import read_train_log


def test_parallel_ablation_grid_matches_the_sequential_one(smoke, tmp_path, caplog):
    import shutil

    from reg2rg_lib.experiments.runner import run_ablations
    from reg2rg_lib.experiments.summary import STATS_FILE, SUMMARY_METRICS

    out = {}
    for parallel in (1, 2):
        root = tmp_path / f"p{parallel}"
        for sub in ("cache", "tokenizer", "data"):
            shutil.copytree(smoke.root / sub, root / sub)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="reg2rg_lib"):
            summary = run_ablations("smoke", root, runs=["full", "no_rra"], n_resamples=20, progress=False,
                                    parallel=parallel)
        logs = caplog.messages
        assert list(summary["runs"]) == ["full", "no_rra"]
        assert all(m in summary["runs"]["full"] for m in SUMMARY_METRICS)
        assert (root / STATS_FILE).is_file()
        assert any("worker processes" in line for line in logs) == (parallel == 2)
        out[parallel] = {run: read_train_log(root / "runs" / run) for run in ("full", "no_rra")}
    for run in ("full", "no_rra"):  # the same seeded runs, whether side by side or one after the other
        assert [r["step"] for r in out[1][run]] == [r["step"] for r in out[2][run]] == [1, 2, 3, 4]
        assert [r["loss"] for r in out[1][run]] == pytest.approx([r["loss"] for r in out[2][run]], rel=1e-3)
