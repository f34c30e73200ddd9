"""Profiles: `smoke` (CI), `demo` (the main job on a CPU), `paper` (the published configuration).

Every size, budget and default path lives in `profiles.yaml` next to this file. A notebook names a profile in its
`parameters` cell and reads everything else from it; overrides are explicit dotted keys, and a typo is an error.

    >>> p = load_profile("smoke", overrides={"train.max_steps": 2})
    >>> p.train.max_steps
    2
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import yaml

PROFILE_NAMES: tuple[str, ...] = ("smoke", "demo", "paper")


class Section(Mapping):
    """Read-only nested mapping with attribute access (`profile.data.image_size`)."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self._data = dict(data)
        self._path = path

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            where = self._path or "profile"
            raise AttributeError(f"{where} has no setting {key!r}; known: {', '.join(self._data)}") from None

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, Mapping):
            return Section(value, f"{self._path}.{key}" if self._path else key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._data else default

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"Section({self._path or 'profile'}: {json.dumps(self._data, default=str)})"


class Profile(Section):
    """A named configuration; `name` is its key in `profiles.yaml`."""

    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self.__dict__["name"] = name

    def __repr__(self) -> str:
        return f"Profile({self.name!r})"


def _all_profiles() -> dict[str, dict[str, Any]]:
    text = resources.files("reg2rg_lib").joinpath("profiles.yaml").read_text()
    return yaml.safe_load(text)


def load_profile(name: str | Profile, overrides: Mapping[str, Any] | None = None) -> Profile:
    """Load profile `name`, applying `overrides` given as dotted keys (`{"train.lr": 1e-4}`).

    An unknown profile or an override of a key the profile does not have raises a ValueError that names it.
    """
    if isinstance(name, Profile):
        if not overrides:
            return name
        base, name = name.to_dict(), name.name
    else:
        profiles = _all_profiles()
        if name not in profiles:
            raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(profiles)}")
        base = copy.deepcopy(profiles[name])
    for dotted, value in (overrides or {}).items():
        node = base
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"profile {name!r} has no section {part!r} (override {dotted!r})")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"profile {name!r} has no setting {dotted!r}")
        node[leaf] = value
    return Profile(name, base)
