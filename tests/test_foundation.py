"""Foundation: profiles, the notebook runner, notebook hygiene, packaging consistency, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml

from reg2rg_lib.cli import main
from reg2rg_lib.nbtools import hygiene as nbhygiene
from reg2rg_lib.nbtools.runner import NotebookFailed, discover, run_notebooks, select
from reg2rg_lib.profiles import PROFILE_NAMES, load_profile


def test_profiles_load_with_the_same_sections():
    sections = None
    for name in PROFILE_NAMES:
        p = load_profile(name)
        assert p.name == name
        keys = {k: set(p[k]) for k in p if isinstance(p.get(k), dict) or hasattr(p[k], "keys")}
        sections = sections or set(keys)
        assert set(keys) == sections, f"{name} has sections {set(keys)} instead of {sections}"
    assert load_profile("paper").data.image_size == [256, 256, 64]


def test_profile_overrides_and_errors():
    p = load_profile("smoke", overrides={"train.max_steps": 7})
    assert p.train.max_steps == 7
    assert load_profile("smoke").train.max_steps != 7, "overrides must not leak into the stored profile"
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        load_profile("nope")
    with pytest.raises(ValueError, match="train.max_stepz"):
        load_profile("smoke", overrides={"train.max_stepz": 1})
    with pytest.raises(AttributeError, match="data has no setting 'imagesize'"):
        _ = load_profile("smoke").data.imagesize


def test_notebooks_are_numbered_clean_and_parameterised(repo_root):
    nbs = discover(repo_root / "notebooks")
    assert nbs[0].name == "00_environment.ipynb"
    numbers = [p.name[:2] for p in nbs]
    assert numbers == sorted(set(numbers)), "notebook numbers must be unique"
    for p in nbs:
        assert nbhygiene.problems(p) == []
        nb = nbformat.read(p, as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        for name in ("profile", "out_dir", "figures_dir"):
            assert re.search(rf"^{name}\s*=", params.source, re.M), f"{p.name}: parameters cell lacks {name}"


def test_hygiene_detects_outputs_and_strips_them(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# intro"), nbformat.v4.new_code_cell("x = 1")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1")]
    nb.cells[1].execution_count = 3
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    assert any("committed outputs" in m for m in nbhygiene.problems(path))
    assert nbhygiene.main([str(tmp_path)]) == 1
    assert nbhygiene.main(["--strip", str(tmp_path)]) == 0
    assert nbhygiene.problems(path) == []


def test_select_by_number():
    nbs = [Path("00_a.ipynb"), Path("01_b.ipynb"), Path("03_c.ipynb")]
    assert select(nbs, ["1", "03"]) == [nbs[1], nbs[2]]
    assert select(nbs, None) == nbs
    with pytest.raises(ValueError, match="no notebook numbered 02"):
        select(nbs, ["02"])


def _write_nb(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "demo"\nout_dir = "x"\nfigures_dir = "y"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_runner_injects_parameters_and_names_the_failing_cell(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _write_nb(nbdir / "00_ok.ipynb", "from pathlib import Path\nPath(out_dir, 'seen.txt').write_text(profile)")
    _write_nb(nbdir / "01_bad.ipynb", "raise ValueError('boom in the pipeline')")
    out = tmp_path / "out"
    res = run_notebooks("smoke", out, notebook_dir=nbdir, only=["0"], progress=False, kernel="python3")
    assert (out / "seen.txt").read_text() == "smoke"
    assert res[0].executed == out / "notebooks" / "00_ok.ipynb"
    with pytest.raises(NotebookFailed) as err:
        run_notebooks("smoke", out, notebook_dir=nbdir, progress=False, kernel="python3")
    msg = str(err.value)
    assert "01_bad.ipynb" in msg and "cell 3" in msg and "boom in the pipeline" in msg


def test_pyproject_and_environment_yml_agree(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    deps = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {d for d in pip_section if not d.startswith("-e")}
    assert conda_pins == deps
    assert "torch==2.13.0" in deps, "torch must stay pinned to the CPU wheel on the build machines"


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("version", "doctor", "run-notebooks", "assets"):
        assert cmd in out


def test_cli_module_runs_and_doctor_reports_json():
    res = subprocess.run([sys.executable, "-m", "reg2rg_lib.cli", "doctor", "--json"], capture_output=True, text=True)
    checks = {c["name"]: c for c in json.loads(res.stdout.strip().splitlines()[-1])}
    assert {"packages", "device", "embedded CT"} <= set(checks)
    assert checks["packages"]["ok"]
    assert res.returncode == (0 if all(c["ok"] or not c["required"] for c in checks.values()) else 1)


def test_cli_run_notebooks_fails_nonzero_with_the_notebook_name(tmp_path, capsys):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _write_nb(nbdir / "05_fail.ipynb", "1/0")
    rc = main(["run-notebooks", "--profile", "smoke", "--out", str(tmp_path / "o"), "--notebooks-dir", str(nbdir)])
    assert rc == 1
    assert "05_fail.ipynb failed in cell 3" in capsys.readouterr().err
