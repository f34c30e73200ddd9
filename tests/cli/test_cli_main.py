"""The `reg2rg` command line: help, `python -m reg2rg_lib.cli`, and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reg2rg_lib.cli import main


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("version", "doctor", "run-notebooks", "assets"):
        assert cmd in out


def test_cli_module_runs_and_doctor_reports_json():
    res = subprocess.run(
        [sys.executable, "-m", "reg2rg_lib.cli", "doctor", "--json"], capture_output=True, text=True
    )
    checks = {c["name"]: c for c in json.loads(res.stdout.strip().splitlines()[-1])}
    assert {"packages", "device", "embedded CT"} <= set(checks)
    assert checks["packages"]["ok"]
    assert res.returncode == (0 if all(c["ok"] or not c["required"] for c in checks.values()) else 1)


def test_cli_run_notebooks_fails_nonzero_with_the_notebook_name(tmp_path, capsys, write_notebook):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_notebook(nbdir / "05_fail.ipynb", "1/0")
    rc = main(
        ["run-notebooks", "--profile", "smoke", "--out", str(tmp_path / "o"), "--notebooks-dir", str(nbdir)]
    )
    assert rc == 1
    assert "05_fail.ipynb failed in cell 3" in capsys.readouterr().err


def test_ablate_train_imported_reaches_the_runner(monkeypatch, tmp_path, capsys):
    # `reg2rg ablate --train-imported` is how the committed imported rows (ablations.imported) are remade
    from reg2rg_lib.experiments import runner

    seen = {}

    def fake(profile, out, **kwargs):
        seen.update(kwargs, profile=profile)
        return {"runs": {"full": {}}}

    monkeypatch.setattr(runner, "run_ablations", fake)
    assert main(["ablate", "--profile", "demo", "--out", str(tmp_path), "--runs", "llm_scratch-2x128",
                 "--train-imported", "--quiet"]) in (0, None)
    assert seen["train_imported"] is True and seen["runs"] == ["llm_scratch-2x128"]
    assert seen["profile"] == "demo"
    main(["ablate", "--profile", "demo", "--out", str(tmp_path), "--quiet"])
    assert seen["train_imported"] is False
