"""`reg2rg bench generate` (bench.batch_generate): batching changes no report, the figures are the median
round's."""

from __future__ import annotations

from reg2rg_lib.cli import main as cli_main


def test_bench_generate_prints_json(smoke, trained, capsys):
    import json

    assert cli_main(["bench", "generate", "--json", "--profile", "smoke", "--out", str(smoke.root),
                     "--cases", "3", "--max-new-tokens", "6", "--repeat", "3"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["model"] != "untrained" and figures["single_batch_size"] == 1
    assert figures["engine"] == "kit" and figures["feature_cache"] is True  # as `reg2rg generate` runs
    assert figures["same_text_fraction"] == 1.0  # greedy: batching changes no report
    assert figures["speedup_batched"] == figures["single_seconds"] / figures["batched_seconds"]
    assert len(figures["speedup_rounds"]) == 3  # the figures are the median round's
    assert round(figures["speedup_batched"], 3) == sorted(figures["speedup_rounds"])[1]
    assert figures["cases"] == 3 and len(figures["load_avg_1min"]) == 2
