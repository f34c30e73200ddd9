"""Parameter tables and training FLOPs per sample, counted (not estimated by formula) on a meta-device model:
no weights, no memory.

`torch.utils.flop_counter.FlopCounterMode` records the FLOPs of every matmul/attention kernel the forward and
the backward pass dispatch, per module. On the meta device nothing is computed, so the paper preset
(LLaMA-2-7B, a 256x256x64 CT with 10 regions) is counted in seconds on a laptop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.reg2rg import Reg2RG

#: Rough plain-text token counts of one paper training sample with the LLaMA tokenizer (assumptions,
#: adjustable): the prompt's words (~10 for the global phrase, ~6 per "The region i is ." and ~100 for the
#: instruction) and a RadGenome-ChestCT report over 10 regions (~250 words).
PAPER_PROMPT_TEXT_TOKENS = 170
PAPER_TARGET_TOKENS = 350


def parameter_table(models: Mapping[str, Any]):
    """A DataFrame with one row per component and `<name> trainable` / `<name> frozen` columns per model, plus
    a total row; `models` maps a display name to a `Reg2RG` (meta-device models are fine)."""
    frames = []
    for name, model in models.items():
        rows = pd.DataFrame(model.component_table()).set_index("component")
        frames.append(rows.rename(columns={"trainable": f"{name} trainable", "frozen": f"{name} frozen"}))
    table = pd.concat(frames, axis=1).fillna(0).astype("int64")
    table.loc["total"] = table.sum()
    return table


def layout_ids(model, n_regions: int, text_tokens: int) -> torch.Tensor:
    """(1, L) ids with the config's placeholder layout for `n_regions` regions plus `text_tokens` plain
    tokens.

    The order of text and placeholders does not change FLOPs, so text tokens are simply appended.
    """
    cfg, vocab = model.config, model.tokenizer.get_vocab()
    ids = [model.tokenizer.bos_token_id or 0]
    if cfg.use_global:
        ids += (
            [vocab["<image>"]]
            + [vocab[f"<image{k}>"] for k in range(cfg.perceiver_latents)]
            + [vocab["</image>"]]
        )
    per = cfg.region_tokens
    for i in range(n_regions):
        ids += (
            [vocab["<region>"]] + [vocab[f"<region{i * per + k}>"] for k in range(per)] + [vocab["</region>"]]
        )
    filler = 100  # any ordinary token id
    ids += [filler] * text_tokens
    return torch.tensor([ids], dtype=torch.long)


def _by_component(counts: dict[str, dict[Any, int]]) -> dict[str, int]:
    out = {}
    for name in ("vision_encoder", "mask_encoder", "perceiver", "fc", "mask_fc"):
        out[name] = sum(counts.get(f"Reg2RG.embedding_layer.{name}", {}).values())
    out["llm"] = sum(counts.get("Reg2RG.lang_model", {}).values())
    return out


def training_flops(cfg: Reg2RGConfig, n_regions: int = 10, text_tokens: int | None = None,
                   cached_features: bool = False) -> dict[str, Any]:
    """FLOPs of one training step on one sample (forward + backward), counted on the meta device.

    Args:
        cfg: the model config (e.g. `Reg2RGConfig.preset("paper")`).
        n_regions: regions in the prompt (10 in RadGenome-ChestCT).
        text_tokens: plain-text tokens (prompt words + target); default the paper estimate
            `PAPER_PROMPT_TEXT_TOKENS + PAPER_TARGET_TOKENS`.
        cached_features: skip the frozen ViT (its outputs precomputed), as the CPU training loop does.

    Returns a dict: seq_len, forward, backward, total (FLOPs) and forward_by_component.
    """
    text_tokens = PAPER_PROMPT_TEXT_TOKENS + PAPER_TARGET_TOKENS if text_tokens is None else text_tokens
    model = Reg2RG(cfg, None, device="meta")
    ids = layout_ids(model, n_regions, text_tokens).to("meta")
    H, W, D = cfg.image_size
    meta = dict(device="meta")
    visual: dict[str, torch.Tensor] = {}
    if cfg.global_tokens:
        visual["global_feats" if cached_features else "global_images"] = (
            torch.zeros(1, cfg.vit_tokens, cfg.vit_dim, **meta) if cached_features
            else torch.zeros(1, 1, H, W, D, **meta))
    if cfg.texture_tokens:
        visual["region_feats" if cached_features else "region_images"] = (
            torch.zeros(n_regions, cfg.vit_tokens, cfg.vit_dim, **meta) if cached_features
            else torch.zeros(n_regions, 1, H, W, D, **meta))
    if cfg.geometry_tokens:
        visual["region_masks"] = torch.zeros(n_regions, 1, H, W, D, **meta)
    with FlopCounterMode(display=False) as fwd_counter:
        # use_cache: with no mask and no cache, transformers probes position ids for packing (data-dependent:
        # no meta)
        loss = model(ids, labels=ids, use_cache=True, **visual).loss
    with FlopCounterMode(display=False) as bwd_counter:
        loss.backward()
    forward, backward = fwd_counter.get_total_flops(), bwd_counter.get_total_flops()
    return {"seq_len": int(ids.shape[1]), "n_regions": n_regions, "text_tokens": text_tokens,
            "placeholders": cfg.global_tokens + n_regions * cfg.region_tokens,
            "forward": forward, "backward": backward, "total": forward + backward,
            "forward_by_component": _by_component(fwd_counter.get_flop_counts())}
