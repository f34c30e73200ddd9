"""Config presets, validation, serialisation; FLOP counting on the meta device."""

from __future__ import annotations

import pytest

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.model import LLM_ARCHS, Reg2RGConfig
from reg2rg_lib.model.flops import training_flops
from reg2rg_lib.profiles import PROFILE_NAMES, load_profile


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_each_profile_builds_its_preset_at_its_image_size(profile):
    p = load_profile(profile)
    cfg = Reg2RGConfig.preset(p.model.preset, image_size=p.data.image_size)
    assert cfg.image_size == tuple(p.data.image_size)
    assert cfg.vit_tokens == cfg.vit_grid[0] * cfg.vit_grid[1] * cfg.vit_grid[2] > 0


def test_paper_preset_sizes():
    cfg = Reg2RGConfig.preset("paper")
    assert cfg.image_size == (256, 256, 64) and cfg.vit_grid == (8, 8, 16) and cfg.vit_tokens == 1024
    assert cfg.region_tokens == 33 and cfg.global_tokens == 32 and cfg.mask_grid == (8, 8, 4)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets) == (
        8,
        32,
        0.1,
        ("q_proj", "v_proj"),
    )


def test_ablation_token_counts():
    cfg = Reg2RGConfig.preset("cpu-tiny")
    n = cfg.perceiver_latents
    assert cfg.replace(decoupled=False).region_tokens == n  # masked uncropped CT, no geometry token
    assert cfg.replace(use_geometry=False).region_tokens == n
    assert cfg.replace(use_texture=False).region_tokens == 1
    assert cfg.replace(use_global=False).global_tokens == 0
    assert cfg.with_llm("scratch-4x256").llm_hidden == LLM_ARCHS["scratch-4x256"]["llm_hidden"] == 256


def test_invalid_configs_are_clear_errors():
    with pytest.raises(KitError, match="does not divide image_size"):
        Reg2RGConfig.preset("cpu-tiny", image_size=(40, 32, 8))
    with pytest.raises(KitError, match="both off"):
        Reg2RGConfig.preset("cpu-tiny").replace(use_texture=False, use_geometry=False)
    with pytest.raises(KitError, match="unknown model preset"):
        Reg2RGConfig.preset("huge")
    with pytest.raises(KitError, match="llm_finetune"):
        Reg2RGConfig.preset("cpu-tiny", llm_finetune="some")


def test_json_round_trip_and_bad_file(tmp_path):
    cfg = Reg2RGConfig.preset("cpu-small", image_size=[32, 32, 8], rra=False)
    path = cfg.save(tmp_path / "config.json")
    assert Reg2RGConfig.load(path) == cfg
    (tmp_path / "bad.json").write_text('{"vit_dim": 96, "nonsense": 1}')
    with pytest.raises(BadInputError, match="bad.json: .*unknown fields nonsense"):
        Reg2RGConfig.load(tmp_path / "bad.json")


def test_training_flops_counted_on_meta():
    cfg = Reg2RGConfig.preset("cpu-tiny")
    raw = training_flops(cfg, n_regions=3, text_tokens=50)
    cached = training_flops(cfg, n_regions=3, text_tokens=50, cached_features=True)
    assert raw["seq_len"] == 1 + (cfg.perceiver_latents + 2) + 3 * (cfg.region_tokens + 2) + 50
    assert (
        raw["forward_by_component"]["vision_encoder"] > 0 == cached["forward_by_component"]["vision_encoder"]
    )
    assert raw["forward"] - cached["forward"] == raw["forward_by_component"]["vision_encoder"]
    # the LLM's matmuls alone cost at least 2 FLOPs per weight per token
    layer = 4 * cfg.llm_hidden**2 + 3 * cfg.llm_hidden * cfg.llm_intermediate
    assert raw["forward_by_component"]["llm"] >= 2 * cfg.llm_layers * layer * raw["seq_len"]
    assert raw["backward"] > raw["forward_by_component"]["llm"]  # the fully trained LLM: ~2x its forward


def test_vision_patch_norm_switch_from_the_profile():
    """`model.vision_patch_norm: false` reaches the config and the built ViT; a RadFM checkpoint, which has
    the patch LayerNorm, is refused with it off."""
    assert Reg2RGConfig.from_profile(load_profile("paper")).vit_patch_norm is True
    off = Reg2RGConfig.from_profile(load_profile("smoke", overrides={"model.vision_patch_norm": False}))
    assert off.vit_patch_norm is False
    with pytest.raises(KitError, match="RadFM_vit3d.pth is a RadFM ViT3D, which has the patch LayerNorm"):
        off.replace(vision_checkpoint="RadFM_vit3d.pth")
