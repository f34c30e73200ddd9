"""`reg2rg bench metrics`: the kit's NLG metrics and the reference recipe run on the requested pairs."""

from __future__ import annotations

from reg2rg_lib.bench.metrics import run


def test_metrics_benchmark_runs_on_the_requested_pairs(nltk_ready):
    figures = run(n_pairs=20, reference_pairs=4)
    assert figures["pairs"] == 20 and figures["reference_pairs"] == 4
