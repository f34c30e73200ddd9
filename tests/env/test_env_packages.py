"""The pinned environment: requirements.lock serves pyproject.toml, and constraints.txt and environment.yml
agree."""

from __future__ import annotations

import re
import shutil
import tomllib

import pytest
import yaml

from reg2rg_lib.env import lockfile as lf
from reg2rg_lib.errors import BadInputError


def test_lock_constraints_and_environment_yml_agree(repo_root):
    assert lf.problems(repo_root) == []
    pins = lf.read_lock(repo_root / lf.LOCK)
    torch = [p for p in pins if p.key == "torch"]
    assert [p.version for p in torch] == ["2.13.0"] and not torch[0].marker
    assert all(p.hashes and all(h.startswith("sha256:") for h in p.hashes) for p in pins)


def test_make_setup_and_make_lock_use_the_same_extras(repo_root):
    """`make setup` installs with `-c constraints.txt` and the extras the lock was resolved with."""
    makefile = (repo_root / "Makefile").read_text()
    extras = re.search(r"^EXTRAS\s*:?=\s*(\S+)", makefile, re.M)
    assert extras and tuple(extras.group(1).split(",")) == lf.SETUP_EXTRAS
    assert "-c constraints.txt -e '.[$(EXTRAS)]'" in makefile
    assert (
        "--extra $(e)" in makefile and "--generate-hashes" in makefile and "-o requirements.lock" in makefile
    )
    optional = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(lf.SETUP_EXTRAS) <= set(optional)


@pytest.fixture
def repo_copy(repo_root, tmp_path):
    for name in (lf.PYPROJECT, lf.LOCK, lf.CONSTRAINTS, lf.ENVIRONMENT):
        shutil.copyfile(repo_root / name, tmp_path / name)
    return tmp_path


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, (path.name, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    # pyproject.toml moves on without `make lock`
    (lf.PYPROJECT, '"nltk>=3.9",', '"nltk>=3.9", "colorlog>=6",', "does not pin colorlog"),
    (lf.PYPROJECT, '"pandas>=2.1",', '"pandas>=3.2",', "pandas==3.1.1 is outside"),
    (lf.PYPROJECT, '"numpy>=2.0",', '"numpy>=2.0", "rich>=15",', "leaves out rich"),
    # a pin only the build machines can install
    (lf.LOCK, "\ntorch==2.13.0 \\", "\ntorch==2.13.0+cpu \\", "local version label"),
    # constraints.txt edited by hand
    (lf.CONSTRAINTS, "\nscipy==1.17.1\n", "\nscipy==1.17.0\n", "constraints.txt: not requirements.lock"),
    # environment.yml drifts from the lock or pyproject.toml
    (lf.ENVIRONMENT, "- scipy==1.17.1", "- scipy==1.16.0", "scipy==1.16.0 but requirements.lock pins 1.17.1"),
    (lf.ENVIRONMENT, "      - bert-score==0.3.13\n", "", "leaves out bert-score"),
    (lf.ENVIRONMENT, "- SimpleITK==2.5.7", "- SimpleITK==2.5.7\n      - rich==15.0.0", "lists rich"),
    (lf.ENVIRONMENT, "- -e .[dev,io,bertscore]", "- -e .[dev]", "lacks '-e .[dev,io,bertscore]'"),
    (lf.ENVIRONMENT, "      - -c constraints.txt\n", "", "lacks '-c constraints.txt'"),
    (lf.ENVIRONMENT, "- scipy==1.17.1", "- scipy>=1.11", "'scipy>=1.11' is not an exact pin"),
    (lf.ENVIRONMENT, "python=3.11", "python=3.10", "python=3.10 is outside"),
])
def test_a_disagreement_is_reported(repo_copy, file, old, new, expected):
    _edit(repo_copy / file, old, new)
    found = lf.problems(repo_copy)
    assert any(expected in msg for msg in found), found


def test_sync_writes_constraints_and_environment_yml_from_the_lock(repo_copy):
    lock = repo_copy / lf.LOCK
    _edit(lock, "\nscipy==1.17.1 \\", "\nscipy==1.17.2 \\")  # as if `make lock` had moved scipy on
    (repo_copy / lf.CONSTRAINTS).unlink()
    before = (repo_copy / lf.ENVIRONMENT).read_text()
    lf.sync(repo_copy)
    assert lf.problems(repo_copy) == []
    constraints = (repo_copy / lf.CONSTRAINTS).read_text()
    assert "\nscipy==1.17.2\n" in constraints and "--hash" not in constraints
    assert "soupsieve==2.10 ; python_full_version < '3.11.5'" in constraints  # markers kept
    after = (repo_copy / lf.ENVIRONMENT).read_text()
    assert "- scipy==1.17.2" in after and after.split("name:")[0] == before.split("name:")[0]  # header kept
    pip_list = next(d["pip"] for d in yaml.safe_load(after)["dependencies"] if isinstance(d, dict))
    assert pip_list[-2:] == ["-c constraints.txt", "-e .[dev,io,bertscore]"]


def test_a_bad_lock_line_names_the_file(tmp_path):
    with pytest.raises(BadInputError, match=r"requirements.lock: line 2: .torch>=2. is not an exact"):
        lf.parse_lock("numpy==2.4.6 --hash=sha256:00\ntorch>=2\n", tmp_path / "requirements.lock")
    with pytest.raises(BadInputError, match="not found"):
        lf.read_lock(tmp_path / "requirements.lock")
    assert lf.main(["check", "--root", str(tmp_path)]) == 2
