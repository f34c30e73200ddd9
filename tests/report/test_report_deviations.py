"""The deviations-from-the-paper table (`report.deviations`) is generated from the profiles and presets: a
changed demo setting changes the table, and the README's copy is the generated one."""

from __future__ import annotations

from pathlib import Path

import pytest

from reg2rg_lib.model.config import PRESETS
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.report.deviations import (
    ASPECTS,
    DEVIATIONS_END,
    DEVIATIONS_START,
    REASONS,
    deviations,
    deviations_markdown,
    readme_block,
    write_readme_deviations,
)

#: The departures the README promises to list (random ViT, latents, image size, LLM + fine-tuning,
#: instruction, schedule, region dropout, organ-name weight, decoding, labeler).
LISTED = {"vision encoder", "Perceiver resampler", "image size", "LLM", "LLM fine-tuning", "instruction",
          "learning-rate schedule", "region dropout", "organ-name loss weight", "decoding",
          "clinical-efficacy labeler"}


def _row(table, aspect: str) -> dict:
    rows = table[table["aspect"] == aspect].to_dict("records")
    return rows[0] if rows else {}


def test_every_listed_departure_is_compared_and_explained() -> None:
    assert LISTED <= {a.name for a in ASPECTS} and {a.name for a in ASPECTS} <= set(REASONS)
    table = deviations("demo")
    assert len(table) and not table["why"].str.contains("no reason recorded").any()
    cpu = deviations(
        load_profile("demo", overrides={"train.lr_schedule": "cosine", "train.region_dropout": 0.3})
    )
    row = _row(cpu, "Perceiver resampler")
    assert row["demo"].startswith(f"{PRESETS['cpu-tiny']['perceiver_latents']} latents") and row[
        "paper"
    ].startswith("32 latents")
    assert "then cosine" in _row(cpu, "learning-rate schedule")["demo"]
    assert "`smoke`" in _row(cpu, "region dropout")["restored by"]  # smoke trains without it


def test_changing_a_demo_setting_changes_the_table() -> None:
    weighted = load_profile("demo", overrides={"train.region_name_weight": 10.0})
    assert "10x" in _row(deviations(weighted), "organ-name loss weight")["demo"]
    same_weight = load_profile(
        "demo", overrides={"train.region_name_weight": 1.0, "train.lr_schedule": "constant"}
    )
    table = deviations(same_weight)
    assert not _row(table, "organ-name loss weight") and not _row(table, "learning-rate schedule")
    more_dropout = deviations(load_profile("demo", overrides={"train.region_dropout": 0.5}))
    assert _row(more_dropout, "region dropout")["demo"].startswith("50%")
    few = _row(deviations(load_profile("demo", overrides={"train.region_few": 0.25})), "region dropout")
    assert "25% keep only 1-3 regions" in few["demo"]
    branch = _row(deviations(load_profile("demo", overrides={"train.branch_dropout": 0.2})), "branch dropout")
    assert "texture tokens zeroed with probability 0.2" in branch["demo"] and branch["paper"] == "none"
    no_dropout = {"train.branch_dropout": 0.0, "train.geometry_dropout": 0.0}
    off = deviations(load_profile("demo", overrides=no_dropout))
    assert not _row(off, "branch dropout")
    geometry = _row(deviations(load_profile("demo")), "branch dropout")["demo"]  # the demo's 0.3
    assert geometry == ("each region's geometry token zeroed with probability 0.3 in training, never its "
                        "texture")
    standardised = deviations(load_profile("demo"))  # the demo standardises, without the patch LayerNorm
    assert "train split's mean and sd" in _row(standardised, "vision features into the Perceiver")["demo"]
    assert "no LayerNorm" in _row(standardised, "vision encoder: patch norm")["demo"]
    as_is = load_profile("demo", overrides={"model.vision_standardize": False,
                                            "model.vision_patch_norm": True})
    assert not _row(deviations(as_is), "vision features into the Perceiver")
    assert not _row(deviations(as_is), "vision encoder: patch norm")
    labelled = _row(deviations(load_profile("demo", overrides={"train.label_weight": 0.5})), "auxiliary loss")
    assert "0.5 x a region label loss" in labelled["demo"] and labelled["paper"] == "none: the LM loss alone"
    assert not _row(deviations(load_profile("demo", overrides={"train.label_weight": 0.0})), "auxiliary loss")
    heads_only = _row(deviations(load_profile("demo")), "prompt: region tokens")["demo"]
    assert "full stop" not in heads_only
    sentences = deviations(load_profile("demo", overrides={"model.rereference_sentences": True}))
    assert "after each full stop of its paragraph" in _row(sentences, "prompt: region tokens")["demo"]
    greedy = deviations(load_profile("demo", overrides={"generate.image_contrast": 0.0}))
    assert "contrastive" not in _row(greedy, "decoding")["demo"]
    assert "contrastive" in _row(deviations(load_profile("demo")), "decoding")["demo"]
    pretrained = deviations(load_profile("demo", overrides={"model.vision_checkpoint": "pretrained",
                                                            "model.vision_patch_norm": True}))
    assert "CPU-pretrained stand-in" in _row(pretrained, "vision encoder")["demo"]
    random_vit = deviations(load_profile("demo", overrides={"model.vision_checkpoint": None}))
    assert "random init" in _row(random_vit, "vision encoder")["demo"]
    bigger = deviations(load_profile("demo", overrides={"data.image_size": [128, 128, 32]}))
    assert _row(bigger, "image size")["demo"] == "128x128x32"
    assert "128x128x32" in deviations_markdown(
        load_profile("demo", overrides={"data.image_size": [128, 128, 32]})
    )


def test_a_changed_preset_changes_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRESETS, "cpu-tiny", dict(PRESETS["cpu-tiny"], perceiver_latents=32))
    assert _row(deviations("demo"), "Perceiver resampler")["demo"].startswith("32 latents")


def test_the_paper_profile_departs_only_in_the_labeler() -> None:
    assert list(deviations("paper")["aspect"]) == ["clinical-efficacy labeler"]


def test_readme_block_is_the_generated_table(repo_root: Path, tmp_path: Path) -> None:
    readme = repo_root / "README.md"
    assert readme_block(readme) == deviations_markdown("demo").strip(), (
        "README.md's deviations block is stale: run `python -m reg2rg_lib.report.deviations --readme "
        "README.md`"
    )
    copy = tmp_path / "README.md"
    copy.write_text(f"# kit\n\n{DEVIATIONS_START}\nstale table\n{DEVIATIONS_END}\n\n## next\n")
    write_readme_deviations(copy, "smoke")
    text = copy.read_text()
    assert "stale table" not in text and "profile `smoke` departs" in text and text.endswith("## next\n")
