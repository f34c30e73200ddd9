"""One cached case's tensors as the encoders' inputs: which prep-cache tensors a model config reads, and how.

The prep cache stores image (1,H,W,D), full (1,H,W,D), texture (R,H,W,D) and geometry (R,H,W,D) per case
(`data.prep`); the model takes global_images, region_images and region_masks (`Reg2RG.forward`). This module
is the one place that knows both sets of names.
"""

from __future__ import annotations

import torch

from reg2rg_lib.model import Reg2RGConfig


def vision_keys(cfg: Reg2RGConfig, images: bool = True) -> list[str]:
    """The prep-cache tensors `vision_inputs` reads for `cfg`; `images=False`: only the masks (the ViT's
    features come from a feature cache)."""
    keys = ["geometry"] if cfg.geometry_tokens else []
    if images and cfg.global_tokens:
        keys.append("image")
    if images and cfg.texture_tokens:
        keys += ["texture"] if cfg.decoupled else ["full", "geometry"]
    return list(dict.fromkeys(keys))


def vision_inputs(tensors: dict[str, torch.Tensor], cfg: Reg2RGConfig,
                  images: bool = True) -> dict[str, torch.Tensor | None]:
    """What one cached case feeds the encoders, per the config (regions in the case's canonical order).

    `tensors` is `cache.load(name)`: image (1,H,W,D), full (1,H,W,D), texture (R,H,W,D), geometry (R,H,W,D).
    Returns global_images (1,1,H,W,D), region_images (R,1,H,W,D): the texture crops with LFD, or the whole CT
    masked by the region (uncropped) without it, and region_masks (R,1,H,W,D); None for what the config skips.
    `images=False`: the masks only (the images' ViT features come from a feature cache); `tensors` then needs
    only what `vision_keys(cfg, images=False)` names.
    Permute the region tensors with `Sample.order` before batching.
    """
    glob = tensors["image"].unsqueeze(0) if cfg.global_tokens and images else None  # (1, 1, H, W, D)
    regions = None
    if cfg.texture_tokens and images:
        if cfg.decoupled:
            regions = tensors["texture"].unsqueeze(1)  # (R, 1, H, W, D)
        else:
            # (1,H,W,D)*(R,H,W,D) -> (R,1,H,W,D)
            regions = (tensors["full"] * tensors["geometry"]).unsqueeze(1)
    masks = tensors["geometry"].unsqueeze(1) if cfg.geometry_tokens else None  # (R, 1, H, W, D)
    return {"global_images": glob, "region_images": regions, "region_masks": masks}
