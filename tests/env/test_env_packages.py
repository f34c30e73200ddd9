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
