"""The dependency lock: `requirements.lock` and the two files written from it, and the checks that they agree.

    requirements.lock   every package `make setup` installs (the kit's dependencies with the extras it
                        installs, and theirs), one exact version each, with PyPI's sha256 of every wheel and
                        sdist; resolved from pyproject.toml by uv against PyPI alone, for every platform and
                        Python >= 3.11 (`make lock`; a version differs by platform or Python only where a
                        marker says so)
    constraints.txt     the same pins without hashes: what `make setup` installs with (`pip install -c`)
    environment.yml     conda: the direct dependencies at the lock's versions, `-c constraints.txt` for the
                        rest

Why `make setup` reads the hash-free copy: a hash names one file, and a torch build is a different file on
every index (PyPI's CUDA wheel, download.pytorch.org's CPU wheel `2.13.0+cpu`, a machine's local wheel
folder). A pip constraint `torch==2.13.0` accepts each of them; `--require-hashes` would accept PyPI's wheel
only. The hashes serve `pip install --require-hashes -r requirements.lock` (an install from PyPI that checks
every file) and `make check-lock`, which resolves the lock against PyPI without this machine's pip
configuration.

    python -m reg2rg_lib.env.lockfile sync   # after uv: write constraints.txt and environment.yml, then check
    python -m reg2rg_lib.env.lockfile check  # check only (exit 1 and list the problems)
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reg2rg_lib.errors import BadInputError

LOCK, CONSTRAINTS, ENVIRONMENT, PYPROJECT = (
    "requirements.lock",
    "constraints.txt",
    "environment.yml",
    "pyproject.toml",
)
#: the extras `make setup` installs (and `make lock` resolves)
SETUP_EXTRAS: tuple[str, ...] = ("dev", "io", "bertscore")
CONSTRAINTS_HEADER = (
    "# Exact versions `make setup` installs (pip -c): requirements.lock without its hashes, written by "
    "`make lock`.\n"
    "# pyproject.toml keeps the ranges; a pin with a marker applies only where the marker holds.\n"
)
PIP_SECTION = "  - pip:"  # environment.yml: everything below this line is written by `make lock`
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)\s*(?:;\s*(?P<marker>.+))?$")


def normalize(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503): lower case, runs of `-_.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    """One line of the lock: `name==version`, an optional environment marker, the allowed sha256 hashes."""

    name: str
    version: str
    marker: str = ""
    hashes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return normalize(self.name)

    def requirement(self) -> str:
        return f"{self.name}=={self.version}" + (f" ; {self.marker}" if self.marker else "")


def parse_lock(text: str, path: str | Path = LOCK) -> list[Pin]:
    """The pins of a requirements file with hashes (uv's or pip-compile's output); BadInputError on any other
    line."""
    pins: list[Pin] = []
    for number, entry in _entries(text):
        words = entry.split(" --hash=")
        match = _PIN.match(words[0].strip())
        if not match:
            raise BadInputError(
                path, f"line {number}: {words[0].strip()!r} is not an exact `name==version` pin"
            )
        hashes = tuple(h.strip() for h in words[1:])
        pins.append(Pin(match["name"], match["version"], (match["marker"] or "").strip(), hashes))
    if not pins:
        raise BadInputError(path, "no pins (run `make lock`)")
    return pins


def _entries(text: str) -> list[tuple[int, str]]:
    """(first line number, the entry with its backslash continuations joined), comments dropped."""
    entries: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    backslash = "\\"
    for number, raw in enumerate(text.splitlines(), 1):
        line = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].strip()
        if pending is None and not line:
            continue
        start, so_far = pending or (number, "")
        continued = line.endswith(backslash)
        joined = f"{so_far} {line.removesuffix(backslash).strip()}".strip()
        pending = (start, joined) if continued else None
        if pending is None:
            entries.append((start, joined))
    if pending is not None:
        entries.append(pending)
    return entries


def _read(path: Path) -> str:
    if not path.is_file():
        raise BadInputError(path, "not found" + (" (run `make lock`)" if path.name != PYPROJECT else ""))
    return path.read_text(encoding="utf-8")


def read_lock(path: Path) -> list[Pin]:
    return parse_lock(_read(path), path)


def constraints_text(pins: Iterable[Pin]) -> str:
    """constraints.txt: the lock's pins, hashes dropped, in the lock's order."""
    return CONSTRAINTS_HEADER + "".join(f"{p.requirement()}\n" for p in pins)


def setup_requirements(pyproject: dict[str, Any], extras: Sequence[str] = SETUP_EXTRAS) -> list[Any]:
    """What `make setup` asks for: the project's dependencies and those of the extras it installs."""
    # packaging comes with transformers and huggingface_hub; only this tool needs it
    from packaging.requirements import Requirement

    project = pyproject["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(s) for s in specs]


def environment_pip_section(requirements: Sequence[Any], pins: Sequence[Pin],
                            extras: Sequence[str] = SETUP_EXTRAS) -> str:
    """environment.yml's pip list: each direct dependency at the lock's version, then the lock and the kit."""
    versions = _unconditional_versions(pins)
    lines = [PIP_SECTION]
    for req in requirements:
        lines.append(f"      - {req.name}=={versions.get(normalize(req.name), '?')}")
    lines += [f"      - -c {CONSTRAINTS}", f"      - -e .[{','.join(extras)}]"]
    return "\n".join(lines) + "\n"


def write_environment_yml(text: str, section: str, path: str | Path = ENVIRONMENT) -> str:
    """`text` with everything from its ` - pip:` line on replaced by `section` (the header stays as
    written)."""
    head, sep, _ = text.partition(PIP_SECTION + "\n")
    if not sep:
        raise BadInputError(path, f"no {PIP_SECTION.strip()!r} section under dependencies")
    return head + section


def _unconditional_versions(pins: Sequence[Pin]) -> dict[str, str]:
    """name -> version for packages the lock pins once, without a marker (the same version everywhere)."""
    counts: dict[str, int] = {}
    for p in pins:
        counts[p.key] = counts.get(p.key, 0) + 1
    return {p.key: p.version for p in pins if not p.marker and counts[p.key] == 1}


def lock_problems(requirements: Sequence[Any], pins: Sequence[Pin]) -> list[str]:
    """Where the lock does not serve pyproject.toml: a dependency without a pin or outside its range, a pin
    only some machines can install (a local version label such as `+cpu`), a pin without hashes."""
    found = []
    by_name: dict[str, list[Pin]] = {}
    for p in pins:
        by_name.setdefault(p.key, []).append(p)
        if "+" in p.version:
            found.append(
                f"{LOCK}: {p.name}=={p.version} has a local version label that no public index serves"
            )
        if not p.hashes:
            found.append(f"{LOCK}: {p.name}=={p.version} has no --hash (run `make lock`)")
    for req in requirements:
        candidates = by_name.get(normalize(req.name), [])
        if not candidates:
            found.append(f"{LOCK}: does not pin {req.name}, which {PYPROJECT} asks for (run `make lock`)")
        for p in candidates:
            if not req.specifier.contains(p.version, prereleases=True):
                found.append(
                    f"{LOCK}: {p.name}=={p.version} is outside {PYPROJECT}'s {req} (run `make lock`)"
                )
    return found


def environment_problems(env: dict[str, Any], requirements: Sequence[Any], pins: Sequence[Pin],
                         requires_python: str, extras: Sequence[str] = SETUP_EXTRAS) -> list[str]:
    """Where environment.yml departs from pyproject.toml and the lock: another package set, another version,
    the lock or the extras left out, a Python that pyproject.toml does not allow."""
    # packaging comes with transformers and huggingface_hub; only this tool needs it
    from packaging.specifiers import SpecifierSet

    found = []
    deps = env.get("dependencies") or []
    pip_lists = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    if len(pip_lists) != 1:
        return [f"{ENVIRONMENT}: needs exactly one pip list under dependencies"]
    pip_lines = [str(x) for x in pip_lists[0]]
    listed: dict[str, str] = {}
    for line in pip_lines:
        match = _PIN.match(line)
        if match:
            listed[normalize(match["name"])] = match["version"]
        elif not line.startswith("-"):
            found.append(f"{ENVIRONMENT}: {line!r} is not an exact pin")
    wanted = {normalize(r.name) for r in requirements}
    for name in sorted(wanted - set(listed)):
        found.append(f"{ENVIRONMENT}: leaves out {name}, which {PYPROJECT} asks for")
    for name in sorted(set(listed) - wanted):
        found.append(f"{ENVIRONMENT}: lists {name}, which {PYPROJECT} does not ask for")
    locked = _unconditional_versions(pins)
    for name in sorted(set(listed) & wanted):
        if locked.get(name) != listed[name]:
            found.append(
                f"{ENVIRONMENT}: {name}=={listed[name]} but {LOCK} pins "
                f"{locked.get(name, 'no single version')}"
            )
    for line in (f"-c {CONSTRAINTS}", f"-e .[{','.join(extras)}]"):
        if line not in pip_lines:
            found.append(f"{ENVIRONMENT}: the pip list lacks {line!r}")
    pythons = [str(d).split("=", 1)[1].lstrip("=") for d in deps if str(d).startswith("python=")]
    if len(pythons) != 1 or not SpecifierSet(requires_python).contains(pythons[0]):
        found.append(f"{ENVIRONMENT}: python={pythons[0] if pythons else '?'} is outside {PYPROJECT}'s "
                     f"requires-python {requires_python}")
    return found


def problems(root: Path) -> list[str]:
    """Every disagreement between pyproject.toml, requirements.lock, constraints.txt and environment.yml."""
    import yaml

    pyproject = tomllib.loads(_read(root / PYPROJECT))
    pins = read_lock(root / LOCK)
    requirements = setup_requirements(pyproject)
    found = lock_problems(requirements, pins)
    constraints = root / CONSTRAINTS
    if not constraints.is_file() or constraints.read_text(encoding="utf-8") != constraints_text(pins):
        found.append(f"{CONSTRAINTS}: not {LOCK} without its hashes (run `make lock`)")
    env = yaml.safe_load(_read(root / ENVIRONMENT)) or {}
    found += environment_problems(env, requirements, pins, pyproject["project"]["requires-python"])
    return found


def sync(root: Path) -> None:
    """Write constraints.txt and environment.yml's pip list from requirements.lock and pyproject.toml."""
    pyproject = tomllib.loads(_read(root / PYPROJECT))
    pins = read_lock(root / LOCK)
    (root / CONSTRAINTS).write_text(constraints_text(pins), encoding="utf-8")
    env_path = root / ENVIRONMENT
    section = environment_pip_section(setup_requirements(pyproject), pins)
    env_path.write_text(write_environment_yml(_read(env_path), section, env_path),
                        encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["sync", "check"])
    ap.add_argument(
        "--root", type=Path, default=Path("."), help="the repository (default: the current folder)"
    )
    args = ap.parse_args(argv)
    try:
        if args.action == "sync":
            sync(args.root)
        found = problems(args.root)
    except BadInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(found) if found else f"{LOCK}, {CONSTRAINTS} and {ENVIRONMENT} agree with {PYPROJECT}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
