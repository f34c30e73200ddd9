"""Profiles: `smoke` (CI), `demo` (the main job on a CPU), `paper` (the published configuration).

Every size, budget and default path lives in `profiles.yaml` next to this file: a `base` block, and per
profile only what differs from it. `load_profile` resolves a profile once into a frozen, typed `Profile` (one
dataclass per section) and validates it: an unknown, missing or mistyped setting is a `ProfileError` naming
the profile and the key. A notebook names a profile in its `parameters` cell and reads everything else from
it; overrides are explicit dotted keys, validated the same way.

    >>> p = load_profile("smoke", overrides={"train.max_steps": 2})
    >>> p.train.max_steps
    2
    >>> p.data.image_size
    (32, 32, 8)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from reg2rg_lib.errors import KitError

# demo_smollm2: Table 7's pretrained LLM
PROFILE_NAMES: tuple[str, ...] = ("smoke", "demo", "paper", "demo_smollm2")
BASE = "base"  # the block of profiles.yaml that every profile starts from

Size3 = tuple[int, int, int]  # (H, W, D) voxels


class ProfileError(KitError, ValueError):
    """A profile that does not resolve: unknown name, or an unknown, missing or mistyped setting. A
    `KitError`, so the CLI prints it as one line; a `ValueError`, as it was before profiles were typed."""


# ---- the sections ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSection:
    """What data the pipeline makes or reads, and at which sizes."""

    cases_train: int | None  # embedded benchmark cases in the train split; None: every case of a real dataset
    # ... and in the validation split (carved from train); None: the dataset's list
    cases_validation: int | None
    cases_test: int | None  # ... and in the test split
    synth_seed: int  # same seed, same bytes
    synth_shape: Size3  # grid the embedded volumes are written at (the source CT is 512x512x133)
    image_size: Size3  # model input: global image, texture crops, geometry masks (the paper: 256x256x64)
    workers: int  # processes for synthesis and preparation


@dataclass(frozen=True)
class ModelSection:
    """Which Reg2RG: a preset of `model.config` and the LLM."""

    preset: str  # a key of model.config.PRESETS: "cpu-tiny" | "cpu-small" | "paper" (or an old alias)
    llm_path: str | None  # HF name or local folder; None: a random LLaMA built from the preset
    # None: the preset's LLM size; or a key of model.config.LLM_ARCHS (scratch-2x64, ...)
    llm_arch: str | None
    # RadFM_vit3d.pth path; "pretrained": this run's `reg2rg pretrain-vision`
    vision_checkpoint: str | None = None
    #                                       output (OUT/vision/RadFM_vit3d.pth); None: a random frozen ViT
    rereference: bool = False  # region i's tokens again after "The region i is <organ>:" (the paper: false)
    rereference_sentences: bool = False  # ... and after each sentence of its paragraph (the paper: false)
    # the geometry encoder reads the masks' area-resized coverage, not binarised masks
    mask_coverage: bool = False
    # the frozen ViT's LayerNorm over each patch's raw values (RadFM's, the paper's); false drops it
    vision_patch_norm: bool = True
    # the frozen ViT's features standardised with the train split's statistics (not the paper's)
    vision_standardize: bool = False


@dataclass(frozen=True)
class TrainSection:
    """The optimisation recipe (`train.loop.TrainSettings.from_profile`) and how training runs."""

    seed: int
    max_steps: int | None  # optimizer steps; None: `epochs` decides
    batch_size: int  # per process
    grad_accum: int
    lr: float
    warmup_steps: int  # linear warm-up from 0, then `lr_schedule`
    lr_schedule: str  # "constant" (the paper) | "cosine" (decays to 0 at the last step)
    save_every: int  # optimizer steps between checkpoints (the last step is always saved)
    precision: str  # "no" | "bf16" | "fp16" (GPU)
    feature_cache: bool | None  # cache the frozen ViT's outputs per case; None: on when the ViT is frozen
    gradient_checkpointing: bool  # recompute LLM activations in backward (GPU memory for time)
    compile_layers: bool  # torch.compile each LLM decoder layer (GPU throughput)
    threads: int | None  # torch CPU threads while training; None: torch's default; 1: same numbers anywhere
    region_dropout: float  # P(a training sample loses 1 to `region_dropout_max` regions); the paper: 0
    region_name_weight: float  # loss weight of the organ names in RRA targets (the paper: 1)
    epochs: int | None = None  # passes over the train split when `max_steps` is None
    region_dropout_max: int = 3  # the most regions a dropped sample loses (at least one is always kept)
    region_few: float = 0.0  # P(a training sample keeps only 1-3 of its regions); the paper: 0
    branch_dropout: float = 0.0  # P(a region's texture tokens are zeroed), else P(its geometry token's); 0
    geometry_dropout: float = 0.0  # P(a region's geometry token is zeroed) on top of branch_dropout's; 0
    label_weight: float = 0.0  # the region label head's auxiliary loss weight (not the paper's: 0)
    fast_path: bool = True  # the fast training path (train.fast) where it applies; False: the plain loop


@dataclass(frozen=True)
class PretrainSection:
    """Vision pretraining, the CPU stand-in for RadFM's (`train.pretrain_vision`,
    `reg2rg pretrain-vision`)."""

    objective: str  # "findings" | "findings+organ" | "simmim" (chosen on validation: benchmarks/RESULTS.md)
    epochs: int  # passes over the train split's region crops and global images
    batch_size: int
    lr: float
    seed: int


@dataclass(frozen=True)
class GenerateSection:
    """How reports are decoded (`infer.generate.DecodeSettings.from_profile`)."""

    batch_size: int  # reports per batch
    max_new_tokens: int
    do_sample: bool  # False: greedy; True: sampling (temperature, top_p: the Llama-2-chat generation config)
    top_k: int | None = None  # sampling only; None: the generation config's
    num_beams: int = 1  # > 1: beam search (`infer.beam`), the most probable report among num_beams hypotheses
    image_contrast: float = 0.0  # > 0: image-contrastive greedy search (`samples.reference`); the paper: 0
    contrast_plausible: float = 0.3  # its candidates: tokens with >= this share of the top probability


@dataclass(frozen=True)
class AblationsSection:
    """The ablation grid (`experiments`)."""

    runs: tuple[str, ...]  # names of experiments.grid.ABLATIONS or llm_<arch>; `full` always runs first
    max_steps: int | None  # steps per run; None: train.max_steps, so notebook 03's `full` is reused
    resamples: int  # bootstrap resamples for CIs and paired tests
    parallel: int  # runs trained at once in worker processes (sharing the cores); 1: in this process
    #: runs of `runs` this profile's job does not train: their committed predictions
    #: (benchmarks/imported/<profile>_<run>/, made by `reg2rg ablate --train-imported`) are evaluated instead
    imported: tuple[str, ...] = ()
    #: runs of `runs` that notebook 03 trains in a second process while `full` trains, on the core its one
    #: thread leaves idle; notebook 05's grid reuses them (`experiments.beside`)
    beside_full: tuple[str, ...] = ()


@dataclass(frozen=True)
class FiguresSection:
    """Where the tables and figures take the authors' released outputs from (`report.regenerate.Inputs`)."""

    release_dir: str  # authors' released CTRG outputs, repo-relative; used when neither a parameter nor
    #                   $REG2RG_RELEASE names one (report.release.find_release); "": left out, and tables say
    #                   so
    recompute_release: bool  # Table 1: also recompute NLG from the released predictions (needs WordNet)


@dataclass(frozen=True)
class NotebooksSection:
    """How the papermill runner executes the notebooks."""

    cell_timeout_s: int  # seconds one cell may run


@dataclass(frozen=True)
class Profile:
    """A named configuration, resolved from `profiles.yaml` (`base` + the profile's block) and validated."""

    name: str  # its key in profiles.yaml
    description: str
    data: DataSection
    model: ModelSection
    pretrain: PretrainSection
    train: TrainSection
    generate: GenerateSection
    ablations: AblationsSection
    figures: FiguresSection
    notebooks: NotebooksSection

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Profile:
        """The profile `name` from its resolved settings (`{"description": ..., "data": {...}, ...}`),
        validated; sizes become tuples, and numbers of float settings floats."""
        unknown = [k for k in data if k not in SECTIONS and k != "description"]
        if unknown:
            raise ProfileError(f"profile {name!r}: unknown section {unknown[0]!r}; expected description, "
                               + ", ".join(SECTIONS))
        if "description" not in data:
            raise ProfileError(f"profile {name!r}: missing setting description")
        description = _check(name, "description", data["description"], str)
        sections = {key: _section(name, key, data.get(key), section) for key, section in SECTIONS.items()}
        ablations = sections["ablations"]
        for key in ("imported", "beside_full"):
            stray = [r for r in getattr(ablations, key) if r not in ablations.runs]
            if stray:
                raise ProfileError(f"profile {name!r}: ablations.{key} names {stray[0]!r}, which is not "
                                   "one of ablations.runs")
        return cls(name, description, **sections)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain YAML/JSON values (tuples as lists), without the name: `from_dict`'s input."""
        return {"description": self.description,
                **{key: _plain(dataclasses.asdict(getattr(self, key))) for key in SECTIONS}}


#: The sections of a profile, in the order of profiles.yaml.
SECTIONS: dict[str, type] = {
    "data": DataSection,
    "model": ModelSection,
    "pretrain": PretrainSection,
    "train": TrainSection,
    "generate": GenerateSection,
    "ablations": AblationsSection,
    "figures": FiguresSection,
    "notebooks": NotebooksSection,
}


# ---- loading -----------------------------------------------------------------------------------------------
def load_profile(name: str | Profile, overrides: Mapping[str, Any] | None = None) -> Profile:
    """Profile `name` (or the `Profile` itself), with `overrides` given as dotted keys (`{"train.lr": 1e-4}`).

    A `Profile` without overrides is returned as it is. An unknown profile, an override of a setting that no
    profile has, or a value of the wrong type raises a `ProfileError` that names the profile and the key.
    """
    if isinstance(name, Profile):
        if not overrides:
            return name
        settings, name = name.to_dict(), name.name
    else:
        settings = resolve(name)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key or "." in key:
            raise ProfileError(f"profile {name!r}: override {dotted!r} must name a setting as "
                               f"<section>.<key>, with a section among {', '.join(SECTIONS)}")
        if key not in _field_types(SECTIONS[section]):
            raise ProfileError(f"profile {name!r} has no setting {dotted!r}; known: "
                               + ", ".join(_field_types(SECTIONS[section])))
        settings[section] = {**(settings.get(section) or {}), key: value}
    return Profile.from_dict(name, settings)


def resolve(name: str) -> dict[str, Any]:
    """Profile `name`'s settings as plain values: the `base` block, then the profile's own block over it."""
    blocks = _read_yaml()
    if name not in blocks or name == BASE:
        known = ", ".join(k for k in blocks if k != BASE)
        raise ProfileError(f"unknown profile {name!r}; expected one of {known}")
    return _merge(blocks.get(BASE) or {}, blocks[name] or {}, name)


def _read_yaml() -> dict[str, Any]:
    return yaml.safe_load(resources.files("reg2rg_lib").joinpath("profiles.yaml").read_text())


def _merge(base: Mapping[str, Any], own: Mapping[str, Any], name: str, where: str = "") -> dict[str, Any]:
    """`own` over a copy of `base`: nested mappings merge key by key, any other value replaces base's."""
    out = {k: _merge(v, {}, name, f"{where}{k}.") if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in own.items():
        if isinstance(value, Mapping):
            if not isinstance(out.get(key, {}), Mapping):
                raise ProfileError(f"profile {name!r}: {where}{key} is a setting in {BASE}, not a section")
            out[key] = _merge(out.get(key, {}), value, name, f"{where}{key}.")
        else:
            out[key] = value
    return out


# ---- validation --------------------------------------------------------------------------------------------
def _section(profile: str, key: str, values: Any, cls: type) -> Any:
    """Section `key` of `profile` as a `cls`: every field present (or defaulted), no other key, all typed."""
    if values is None:
        raise ProfileError(f"profile {profile!r}: missing section {key}")
    if not isinstance(values, Mapping):
        raise ProfileError(f"profile {profile!r}: {key} must be a section of settings, got {values!r}")
    types_ = _field_types(cls)
    unknown = [k for k in values if k not in types_]
    if unknown:
        raise ProfileError(f"profile {profile!r}: unknown setting {key}.{unknown[0]}; "
                           f"known: {', '.join(types_)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise ProfileError(f"profile {profile!r}: missing setting {key}.{missing[0]}")
    return cls(**{k: _check(profile, f"{key}.{k}", v, types_[k]) for k, v in values.items()})


def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> its type (annotations are strings under `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check(profile: str, where: str, value: Any, hint: Any) -> Any:
    """`value` as type `hint` (lists become tuples, ints of float settings floats), or a ProfileError."""
    ok, converted = _convert(value, hint)
    if not ok:
        raise ProfileError(f"profile {profile!r}: {where} must be {_describe(hint)}, got {value!r}")
    return converted


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, converted = _convert(value, arg)
                if ok:
                    return True, converted
        return False, None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, None
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            return False, None
        items = [_convert(v, t) for v, t in zip(value, item_types)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is float:  # a YAML "1" is a fine learning rate; the setting stays a float
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if args[-1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, str(hint))


def _plain(value: Any) -> Any:
    """Tuples (sizes, run lists) as lists, recursively: what YAML and JSON hold."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_assignments(items: list[str] | tuple[str, ...], flag: str = "--set") -> dict[str, Any]:
    """`["FIELD=VALUE", ...]` (a command line's repeated `flag`) -> {FIELD: VALUE parsed as YAML}; a KitError
    naming the flag for an item without "="."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise KitError(f"{flag} expects FIELD=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out
