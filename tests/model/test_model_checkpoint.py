"""Checkpoints: our save/load round trip (and peft / transformers loading its LLM alone), the older folder
layout, the official whole-model naming, RadFM's ViT3D / Perceiver files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.model import (
    Reg2RG,
    build_sample,
    collate,
    load_official_checkpoint,
    load_radfm_perceiver,
    load_radfm_vision,
    official_key_shapes,
)
from reg2rg_lib.model.tokenizer import save_tokenizer

REGIONS = ["lung", "heart"]
REPORTS = {"lung": "Clear lungs.", "heart": "Normal heart."}


def _logits(model, vis):
    batch = collate(
        [build_sample(REGIONS, REPORTS, model.tokenizer, model.config)], model.tokenizer.pad_token_id
    )
    with torch.no_grad():
        return model(**batch, **vis).logits


def test_save_and_load_round_trip(tiny_model, visual_batch, tmp_path):
    vis = visual_batch(tiny_model.config, 1, 2)
    tiny_model.save_pretrained(tmp_path / "ckpt")
    # a scratch LLM trained in full: a transformers folder of its own, no adapter
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {
        "config.json",
        "tokenizer",
        "embedding_layer",
        "llm",
    }
    loaded = Reg2RG.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == tiny_model.config
    assert len(loaded.tokenizer) == len(tiny_model.tokenizer)
    torch.testing.assert_close(_logits(loaded, vis), _logits(tiny_model, vis))


@pytest.fixture
def lora_model(tiny_cfg, tokenizer_factory):
    """A tiny model with LoRA on a scratch LLM, its adapters perturbed so that they change the logits."""
    model = Reg2RG(tiny_cfg.replace(llm_finetune="lora"), tokenizer_factory()).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # LoRA B starts at zero
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.embedding_layer.fc.bias.add_(0.01)
    return model


def test_lora_checkpoint_round_trip(lora_model, visual_batch, tmp_path):
    lora_model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "tokenizer", "embedding_layer", "llm",
                                                   "llm_adapter"}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp_path / "llm_adapter").iterdir()
    }
    loaded = Reg2RG.from_pretrained(tmp_path).eval()
    vis = visual_batch(lora_model.config, 1, 2)
    torch.testing.assert_close(_logits(loaded, vis), _logits(lora_model, vis), rtol=0, atol=0)
    # the LoRA changes the output: the round trip did not just compare two base models
    with lora_model.lang_model.disable_adapter():
        assert not torch.allclose(_logits(lora_model, vis), _logits(loaded, vis), atol=1e-3)


def test_peft_alone_loads_and_merges_the_adapter(lora_model, visual_batch, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    lora_model.save_pretrained(tmp_path)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")
    merged = PeftModel.from_pretrained(base, tmp_path / "llm_adapter").merge_and_unload().eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    batch = collate([build_sample(REGIONS, REPORTS, lora_model.tokenizer, lora_model.config)],
                    lora_model.tokenizer.pad_token_id)
    with torch.no_grad():
        embeds = lora_model.embed_inputs(batch["input_ids"], **visual_batch(lora_model.config, 1, 2))
        ours = lora_model.lang_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        theirs = merged(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    # the adapter names its base relative to the model folder, so peft finds it from there
    config = json.loads((tmp_path / "llm_adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "llm" and config["r"] == lora_model.config.lora_r
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # peft would look for a tokenizer of "llm_adapter" on the Hub
    auto = AutoPeftModelForCausalLM.from_pretrained("llm_adapter").eval()
    with torch.no_grad():
        again = auto(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(again, ours, rtol=0, atol=1e-5)


def test_older_folder_layout_still_loads(tiny_model, lora_model, visual_batch, tmp_path):
    for name, model in (("full", tiny_model), ("lora", lora_model)):
        # the layout before the peft/transformers folders: every parameter of a scratch model in
        # model.safetensors
        folder = tmp_path / name
        folder.mkdir()
        model.config.save(folder / "config.json")
        save_tokenizer(model.tokenizer, folder / "tokenizer")
        save_file(
            {n: p.detach().contiguous() for n, p in model.named_parameters()},
            str(folder / "model.safetensors"),
        )
        loaded = Reg2RG.from_pretrained(folder).eval()
        vis = visual_batch(model.config, 1, 2)
        torch.testing.assert_close(_logits(loaded, vis), _logits(model, vis), rtol=0, atol=0)
        # saved again, it is in the new layout only
        loaded.save_pretrained(folder)
        assert not (folder / "model.safetensors").exists() and (folder / "embedding_layer").is_dir()
        torch.testing.assert_close(_logits(Reg2RG.from_pretrained(folder).eval(), vis), _logits(model, vis))


def test_bad_checkpoint_folder_is_a_one_line_error(lora_model, tmp_path):
    with pytest.raises(BadInputError, match="config.json missing"):
        Reg2RG.from_pretrained(tmp_path)
    lora_model.save_pretrained(tmp_path)
    (tmp_path / "llm_adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(BadInputError, match=r"llm_adapter/adapter_model.safetensors missing\)$"):
        Reg2RG.from_pretrained(tmp_path)
    lora_model.save_pretrained(tmp_path)
    config = tmp_path / "llm_adapter" / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": 8', '"r": 4'))
    with pytest.raises(
        BadInputError, match="adapter_config.json: another LoRA than the model's: r=4 there, 8"
    ):
        Reg2RG.from_pretrained(tmp_path)


def _official_state(model, old_peft_naming: bool, base_vocab: int) -> dict[str, torch.Tensor]:
    """A state dict in the official layout with this model's (tiny) shapes and random values."""
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    state = {f"embedding_layer.{k}": torch.randn(*shape, generator=g)
             for k, shape in official_key_shapes(cfg, base_vocab, model.llm_dim).items()}
    for key, t in model.lang_model.state_dict().items():
        name = f"lang_model.{key}"
        if old_peft_naming:  # peft < 0.7 in-memory naming: no base_layer, and no adapter name
            name = name.replace(".base_layer", "").replace(".default", "")
        shape = list(t.shape)
        if key.endswith(("embed_tokens.weight", "lm_head.weight")):
            shape[0] = base_vocab  # the official LLM was never resized
        state[name] = torch.randn(*shape, generator=g)
    return state


@pytest.mark.parametrize("old_peft_naming", [False, True])
def test_official_names_with_tiny_shapes_load(tiny_cfg, tokenizer_factory, old_peft_naming):
    model = Reg2RG(tiny_cfg.replace(llm_finetune="lora"), tokenizer_factory())
    base = model.base_vocab
    state = _official_state(model, old_peft_naming, base)
    report = load_official_checkpoint(model, state, strict=True)
    assert not report.missing and not report.unexpected
    # embedding_layer.weight, embed_tokens and lm_head fill the first rows of our resized tables
    assert len(report.partial_rows) == 3
    el = model.embedding_layer
    assert torch.equal(el.fc.weight, state["embedding_layer.fc.weight"])
    assert torch.equal(el.image_token_weight, state["embedding_layer.image_token_weight"])
    assert torch.equal(el.vision_encoder.pos_embedding.dep_embed.weight,
                       state["embedding_layer.vision_encoder.pos_embedding.dep_embed.weight"])
    # the official input table is embedding_layer.weight (it wins over lang_model's copy)
    table = model.lang_model.get_input_embeddings().weight
    assert torch.equal(table[:base], state["embedding_layer.weight"])
    own = dict(model.named_parameters())
    own_key = next(k for k in own if "layers.0.self_attn.q_proj.lora_A" in k)
    official_key = next(k for k in state if "layers.0.self_attn.q_proj.lora_A" in k)
    assert torch.equal(own[own_key], state[official_key])


def test_official_shape_mismatch_names_the_key(tiny_model):
    bad = {"embedding_layer.fc.weight": torch.zeros(3, 3)}
    with pytest.raises(BadInputError, match=r"embedding_layer.fc.weight: shape \[3, 3\]"):
        load_official_checkpoint(tiny_model, bad)


def test_radfm_checkpoints_load_strictly(tiny_cfg, tokenizer_factory, tmp_path, monkeypatch):
    model = Reg2RG(tiny_cfg, tokenizer_factory())
    vit = {k: torch.full_like(v, 0.5) for k, v in model.embedding_layer.vision_encoder.state_dict().items()}
    torch.save(vit, tmp_path / "RadFM_vit3d.pth")
    perceiver = {k: torch.full_like(v, 0.25) for k, v in model.embedding_layer.perceiver.state_dict().items()}
    torch.save(
        {"perceiver": perceiver, "fc": {"weight": torch.zeros(5120, 768)}},
        tmp_path / "RadFM_perceiver_fc.pth",
    )
    load_radfm_vision(model, tmp_path / "RadFM_vit3d.pth")
    load_radfm_perceiver(model, tmp_path / "RadFM_perceiver_fc.pth")
    assert (model.embedding_layer.vision_encoder.to_patch_embedding[2].weight == 0.5).all()
    assert (model.embedding_layer.perceiver.latents == 0.25).all()
    # a ViT file for another architecture is refused with the file named
    torch.save({"to_patch_embedding.2.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(BadInputError, match="other.pth: does not fit the vision encoder"):
        load_radfm_vision(model, tmp_path / "other.pth")
    # the config can name them: they load at construction. A ViT of RadFM's size stays a reference to its file
    # (save_pretrained skips the frozen weights); a small one (the CPU presets' pretrained ViT) is carried in
    # the folder, so that pretraining again never changes a trained model
    from safetensors import safe_open

    import reg2rg_lib.model.weights as weights

    cfg = tiny_cfg.replace(vision_checkpoint=str(tmp_path / "RadFM_vit3d.pth"))
    built = Reg2RG(cfg, tokenizer_factory())
    assert (built.embedding_layer.vision_encoder.to_patch_embedding[2].weight == 0.5).all()
    for limit, carried in ((0, False), (weights.INLINE_VISION_MAX_PARAMS, True)):
        monkeypatch.setattr(weights, "INLINE_VISION_MAX_PARAMS", limit)
        folder = tmp_path / f"ckpt{limit}"
        built.save_pretrained(folder)
        with safe_open(folder / "embedding_layer" / "model.safetensors", "pt") as f:
            keys = list(f.keys())
        assert keys and any(k.startswith("vision_encoder.") for k in keys) == carried
        saved_cfg = json.loads((folder / "config.json").read_text())
        assert (saved_cfg["vision_checkpoint"] is None) == carried
        reloaded = Reg2RG.from_pretrained(folder)
        assert (reloaded.embedding_layer.vision_encoder.to_patch_embedding[2].weight == 0.5).all()
    (tmp_path / "RadFM_vit3d.pth").unlink()  # the carried copy does not need the file any more
    assert (
        Reg2RG.from_pretrained(folder).embedding_layer.vision_encoder.to_patch_embedding[2].weight == 0.5
    ).all()
