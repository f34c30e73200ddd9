"""Reg2RG, assembled in our own code: frozen RadFM ViT3D -> shared Perceiver -> projections, a geometry ViT,
and an HF causal LM whose placeholder tokens are replaced by the visual tokens (`masked_scatter`).

Modules, top-down: `config` (dataclass + presets), `vit3d`, `perceiver`, `geometry` (building blocks),
`prompt` (templates, special tokens, samples, collate), `tokenizer`, `llm` (HF LLM, tiny LLaMA, LoRA),
`reg2rg` (the composed model + splice), `weights` (our safetensors folders, RadFM's files), `checkpoint` (the
official key mapping), `flops` (counts, FLOPs).

Each function's signature and docstring are its reference (`help(Reg2RG)`). The examples below are the API
other stages code against, run as tests (tests/model/test_model_examples.py), so they cannot drift:

>>> import random, torch
>>> from reg2rg_lib.model import Reg2RG, Reg2RGConfig, add_reg2rg_tokens, build_sample, train_tokenizer
>>> cfg = Reg2RGConfig.preset("cpu-tiny", image_size=(32, 32, 8))  # "cpu-tiny" | "cpu-small" | "paper"
>>> # an ablation; an LLM size (LLM_ARCHS)
>>> cfg.replace(rra=False).rra, cfg.with_llm("scratch-2x64").llm_layers
(False, 2)
>>> tok = train_tokenizer(["The heart is normal.", "No nodule in the lung."] * 20, vocab_size=300)
>>> # the prompt's special tokens (Reg2RG(cfg, tok) adds them too; idempotent)
>>> add_reg2rg_tokens(tok, cfg) > 0
True
>>> reports = {"heart": "The heart is normal.", "lung": "No nodule."}
>>> sample = build_sample(["heart", "lung"], reports, tok, cfg)  # no rng: the canonical order (test time)
>>> sample.target
'The region 0 is heart: The heart is normal. The region 1 is lung: No nodule.'
>>> build_sample(["heart", "lung"], reports, tok, cfg, rng=random.Random(1)).regions  # RRA shuffles the order
['lung', 'heart']
>>> _ = torch.manual_seed(0)
>>> model = Reg2RG(cfg, tok)  # device="meta" builds it without weights, for inspection
>>> tuple(model.encode_vision(torch.zeros(2, 1, *cfg.image_size)).shape)  # (N, latents, vit_dim)
(2, 8, 96)
>>> # labels: -100 over the prompt
>>> ids, labels = torch.tensor([sample.input_ids]), torch.tensor([sample.labels])
>>> regions = torch.zeros(2, 1, *cfg.image_size)  # one crop and one mask per region, in prompt order
>>> out = model(ids, labels=labels, global_images=torch.zeros(1, 1, *cfg.image_size), region_images=regions,
...             region_masks=regions)
>>> bool(out.loss.isfinite()), tuple(out.logits.shape[:2]) == tuple(ids.shape)
(True, True)
"""

from reg2rg_lib.model.checkpoint import LoadReport, load_official_checkpoint
from reg2rg_lib.model.config import (
    LLM_ARCH_ALIASES,
    LLM_ARCHS,
    PRESET_ALIASES,
    PRESETS,
    Reg2RGConfig,
    llm_arch_name,
)
from reg2rg_lib.model.prompt import Sample, build_prompt, build_sample, build_target, collate
from reg2rg_lib.model.reg2rg import Reg2RG, official_key_shapes
from reg2rg_lib.model.tokenizer import add_reg2rg_tokens, load_tokenizer, tokenizer_for_run, train_tokenizer
from reg2rg_lib.model.weights import load_radfm_perceiver, load_radfm_vision

__all__ = [
    "LLM_ARCHS",
    "LLM_ARCH_ALIASES",
    "LoadReport",
    "PRESETS",
    "PRESET_ALIASES",
    "Reg2RG",
    "Reg2RGConfig",
    "Sample",
    "add_reg2rg_tokens",
    "build_prompt",
    "build_sample",
    "build_target",
    "collate",
    "llm_arch_name",
    "load_official_checkpoint",
    "load_radfm_perceiver",
    "load_radfm_vision",
    "load_tokenizer",
    "official_key_shapes",
    "tokenizer_for_run",
    "train_tokenizer",
]
