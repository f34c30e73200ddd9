"""Which parameters exist and train: the paper preset against the official layout, and every preset's
freezing."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from reg2rg_lib.cli import main
from reg2rg_lib.model import Reg2RG, Reg2RGConfig
from reg2rg_lib.model.checkpoint import (
    PAPER_OFFICIAL_KEY_COUNT,
    PAPER_OFFICIAL_KEYS_SHA256,
    PAPER_PARAMETER_COUNTS,
)
from reg2rg_lib.model.reg2rg import official_key_shapes

#: Trainable parameter names per the paper: LoRA, Perceiver, projections, geometry encoder, new token
#: embeddings.
INTENDED_TRAINABLE = re.compile(
    r"^(embedding_layer\.(image_token_weight|region_token_weight|perceiver\..*|fc\..*|mask_fc\..*|mask_encoder\..*)"
    r"|lang_model\..*\.lora_[AB]\..*)$"
)


@pytest.fixture(scope="module")
def paper_meta():
    return Reg2RG(Reg2RGConfig.preset("paper"), None, device="meta")


def test_paper_counts_and_official_keys(paper_meta):
    summary = paper_meta.parameter_summary()
    comps = summary["components"]
    for name, n in PAPER_PARAMETER_COUNTS.items():
        assert comps[name] == n, name
    keys = summary["official_keys"]
    assert len(keys) == PAPER_OFFICIAL_KEY_COUNT
    assert hashlib.sha256(json.dumps(keys).encode()).hexdigest() == PAPER_OFFICIAL_KEYS_SHA256
    # LLaMA-2-7B (6,738,415,616) + its token table resized for the 366 Reg2RG tokens (input + output rows)
    assert comps["llm"] == 6_738_415_616 + 2 * 366 * 4096
    assert summary["total"] == sum(comps.values()) + 4 * 4096  # + image/region_token_weight
    assert summary["trainable"] == sum(PAPER_PARAMETER_COUNTS.values()) - comps["vision_encoder"] + 4 * 4096


def test_paper_matches_reference_layout_file(paper_meta, release_dir):
    layout = json.loads((release_dir.parent / "reg2rg_checkpoint_layout.json").read_text())
    summary = paper_meta.parameter_summary()
    assert summary["official_keys"] == layout["keys"]
    assert list(summary["official_keys"]) == list(layout["keys"])  # same order too
    facts = layout["facts"]["parameter_counts"]
    for name in ("vision_encoder", "mask_encoder", "perceiver", "fc", "mask_fc"):
        assert summary["components"][name] == facts[name]
    assert summary["components"]["lora"] == facts["lora_trainable_llama2_7b_r8_qv"]


def _trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_paper_trains_exactly_the_intended_parameters(paper_meta):
    names = dict(paper_meta.named_parameters())
    trainable = _trainable_names(paper_meta)
    wrong = sorted(n for n in trainable if not INTENDED_TRAINABLE.match(n))
    frozen_but_intended = sorted(n for n in names if INTENDED_TRAINABLE.match(n) and n not in trainable)
    assert not wrong and not frozen_but_intended, (wrong[:5], frozen_but_intended[:5])
    assert not any(n.startswith("embedding_layer.vision_encoder.") for n in trainable)
    assert sum(1 for n in trainable if "lora_" in n) == 32 * 2 * 2  # 32 layers x (q, v) x (A, B)


def test_tiny_lora_trains_the_same_parameter_groups(tiny_cfg, tokenizer_factory):
    model = Reg2RG(tiny_cfg.replace(llm_finetune="lora"), tokenizer_factory())
    trainable = _trainable_names(model)
    assert trainable and all(INTENDED_TRAINABLE.match(n) for n in trainable)
    assert {n for n, _ in model.named_parameters() if INTENDED_TRAINABLE.match(n)} == trainable


def test_tiny_full_finetune_trains_llm_but_not_vit(tiny_model):
    trainable = _trainable_names(tiny_model)
    assert any(n.startswith("lang_model.model.layers.0.mlp") for n in trainable)
    assert not any(n.startswith("embedding_layer.vision_encoder.") for n in trainable)
    assert not any("lora_" in n for n, _ in tiny_model.named_parameters())


@pytest.mark.parametrize("changes,absent", [
    (dict(decoupled=False), {"mask_encoder", "mask_fc"}),
    (dict(use_geometry=False), {"mask_encoder", "mask_fc"}),
    (dict(use_texture=False, use_global=False), {"vision_encoder", "perceiver", "fc"}),
])
def test_ablations_build_only_what_they_use(tiny_cfg, changes, absent):
    summary = Reg2RG(tiny_cfg.replace(**changes), None, device="meta").parameter_summary()
    assert {k for k, v in summary["components"].items() if v == 0} - {"lora"} == absent


def test_official_key_shapes_follow_the_config(tiny_cfg):
    shapes = official_key_shapes(tiny_cfg, base_vocab=500, llm_dim=128)
    assert shapes["weight"] == [500, 128]
    assert shapes["fc.weight"] == [128, tiny_cfg.vit_dim]
    assert shapes["mask_fc.weight"] == [128, tiny_cfg.mask_dim]
    assert shapes["perceiver.latents"] == [tiny_cfg.perceiver_latents, tiny_cfg.vit_dim]
    assert f"vision_encoder.transformer.layers.{tiny_cfg.vit_depth - 1}.1.fn.net.3.bias" in shapes
    assert f"vision_encoder.transformer.layers.{tiny_cfg.vit_depth}.0.norm.weight" not in shapes


def test_model_summary_cli_json(capsys):
    assert main(["model", "summary", "--preset", "paper", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert list(out) == ["components", "trainable", "total", "official_keys"]
    assert list(out["components"]) == [
        "vision_encoder",
        "mask_encoder",
        "perceiver",
        "fc",
        "mask_fc",
        "llm",
        "lora",
    ]
    assert out["components"]["perceiver"] == PAPER_PARAMETER_COUNTS["perceiver"]
    assert out["official_keys"]["weight"] == [32000, 4096]


def test_model_summary_cli_bad_image_size(capsys):
    assert main(["model", "summary", "--preset", "cpu-tiny", "--image-size", "30", "32", "8"]) == 2
    assert "does not divide image_size" in capsys.readouterr().err
