"""`reg2rg generate`: batched generation from a trained tiny run into the released predictions CSV."""

from __future__ import annotations

from reg2rg_lib.cli import main as cli_main
from reg2rg_lib.infer.predictions import PRED_COLUMNS, read_predictions
from reg2rg_lib.profiles import load_profile


def test_generate_cli_writes_the_released_format_and_resumes(smoke, trained, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    args = ["generate", "--checkpoint", str(trained), "--out", str(out), "--max-new-tokens", "8"]
    assert cli_main([*args, "--limit", "2"]) == 0  # --data defaults to the run's profile folder cache
    rows = read_predictions(out)
    assert out.read_text().splitlines()[0] == ",".join(PRED_COLUMNS)
    assert len(rows) == 2
    first = out.read_text()
    assert rows[0]["GT_combined_report"].startswith("The region 0 is ")
    assert "<region0>" in rows[0]["Question"]
    assert cli_main([*args, "--data", str(smoke.root), "--batch-size", "1"]) == 0  # the rest, resumed
    rows = read_predictions(out)
    assert len(rows) == load_profile("smoke").data.cases_test == 3
    assert out.read_text().startswith(first)  # the first rows were kept, not regenerated
    assert "greedy" in capsys.readouterr().out
