"""The ablation grid (Tables 4-7): which runs exist and what each changes in the model or its LLM.

| run | model change | paper |
|---|---|---|
| `full` | texture + geometry + global tokens, LFD, RRA (notebook 03's run, reused) | every table's reference |
| `no_lfd` | `decoupled=False`: the region's masked, uncropped CT through ViT+Perceiver, no geometry token | Table 4 |
| `texture_only` | `use_geometry=False, use_global=False` | Table 5 |
| `texture_geometry` | `use_global=False` | Table 5 |
| `no_rra` | `rra=False`: paragraphs in canonical order without "The region i is X:" (no region dropout either) | Table 6 |
| `llm_<arch>` | the LLM swapped for `LLM_ARCHS[arch]` (`tiny`, `small`, ...), everything else as `full` | Table 7 |

`grid` lists a profile's runs (`full` first); `same_model_as` tells when an `llm_<arch>` run is `full` itself, so
its outputs are reused; `run_folder` names a run's folder (`runs/<name>_s<steps>/` for a shorter grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reg2rg_lib.errors import KitError
from reg2rg_lib.experiments.summary import REFERENCE
from reg2rg_lib.model import LLM_ARCHS
from reg2rg_lib.profiles import AblationsSection, Profile
from reg2rg_lib.train.run import model_config


@dataclass(frozen=True)
class Ablation:
    """One run of the grid: its name, what it changes, and in words what it tests."""

    name: str
    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)  # Reg2RGConfig fields
    llm_arch: str | None = None  # a key of LLM_ARCHS, or None for the profile's LLM


#: The component ablations (the LLM-size runs are made by `ablation("llm_<arch>")`).
ABLATIONS: dict[str, Ablation] = {a.name: a for a in (
    Ablation("full", "texture + geometry + global, LFD, RRA"),
    Ablation("no_lfd", "LFD off: masked uncropped CT per region, no geometry token", {"decoupled": False}),
    Ablation("texture_only", "texture tokens only (no geometry, no global)",
             {"use_geometry": False, "use_global": False}),
    Ablation("texture_geometry", "texture + geometry (no global)", {"use_global": False}),
    Ablation("no_rra", "RRA off: canonical order, no region prefixes (and no region dropout)", {"rra": False}),
)}


def ablation(name: str) -> Ablation:
    """The ablation called `name`: one of `ABLATIONS` or `llm_<arch>` with arch in `LLM_ARCHS`."""
    if name in ABLATIONS:
        return ABLATIONS[name]
    if name.startswith("llm_"):
        arch = name[len("llm_"):]
        if arch not in LLM_ARCHS:
            raise KitError(f"ablation {name!r}: unknown LLM {arch!r}; expected one of {', '.join(LLM_ARCHS)}")
        return Ablation(name, f"LLM {arch} ({_llm_size(LLM_ARCHS[arch])})", llm_arch=arch)
    known = ", ".join([*ABLATIONS, "llm_<arch>"])
    raise KitError(f"unknown ablation {name!r}; expected one of {known}")


def _llm_size(arch: Mapping[str, Any]) -> str:
    return f"{arch['llm_layers']} layers x {arch['llm_hidden']} wide"


def same_model_as(profile: Profile, a: Ablation, b: Ablation) -> bool:
    """True when two ablations build the same model config (e.g. `llm_tiny` and `full` under the tiny preset)."""
    return model_config(profile, a.changes, a.llm_arch) == model_config(profile, b.changes, b.llm_arch)


# ----------------------------------------------------------------------------------------------------------------
# One run


def run_folder(profile: Profile, name: str, steps: int | None) -> str:
    """The folder name under `runs/` of ablation `name` trained for `steps`: the plain name when `steps` is the
    profile's training length (so notebook 03's `full` is the grid's `full`), else `<name>_s<steps>`, so that a
    shorter grid never overwrites notebook 03's run."""
    return name if steps == profile.train.max_steps else f"{name}_s{steps}"


def run_steps(profile: Profile) -> int | None:
    """Optimizer steps of every ablation run: `ablations.max_steps`, else the profile's `train.max_steps`."""
    steps = profile.ablations.max_steps
    return steps if steps is not None else profile.train.max_steps


# ----------------------------------------------------------------------------------------------------------------
# The grid


def grid(ablations: AblationsSection, runs: Sequence[str] | None = None) -> list[Ablation]:
    """The runs to do, `full` first (the reference of every paired test), from `runs` or the profile's
    `ablations.runs`."""
    names = list(runs or ablations.runs)
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    names.sort(key=lambda n: n != REFERENCE)  # stable: the profile's order otherwise
    return [ablation(n) for n in dict.fromkeys(names)]
