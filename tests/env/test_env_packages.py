"""The pinned environment: pyproject.toml and environment.yml name the same packages."""

from __future__ import annotations

import tomllib
import yaml


def test_pyproject_and_environment_yml_agree(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    deps = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {d for d in pip_section if not d.startswith("-e")}
    assert conda_pins == deps
    assert "torch==2.13.0" in deps, "torch must stay pinned to the CPU wheel on the build machines"


def _name(requirement: str) -> str:
    import re

    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_setup_installs_exact_versions_from_the_lock_file(repo_root):
    """`make setup` installs with `-c constraints.txt`, and that file pins every dependency to one version."""
    makefile = (repo_root / "Makefile").read_text()
    assert "pip install" in makefile and "-c constraints.txt" in makefile
    lines = [ln.strip() for ln in (repo_root / "constraints.txt").read_text().splitlines()]
    pins = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in version, f"constraints.txt: {line!r} is not an exact pin"
        pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    required = {_name(d) for d in project["dependencies"] + project["optional-dependencies"]["dev"]}
    missing = sorted(required - set(pins))
    assert not missing, f"constraints.txt does not pin {missing}: run `make lock`"
    assert pins["torch"] == "2.13.0"
    local = sorted(f"{n}=={v}" for n, v in pins.items() if "+" in v)
    assert not local, f"constraints.txt pins local version labels {local} that only the build machines have"
