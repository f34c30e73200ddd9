"""The geometry (mask) encoder: where a region is and what shape it has, as one vector.

The region's binary mask, resized but not cropped (so its position in the body is kept), goes through a light 3D
ViT (paper: patch 32x32x16, dim 255, depth 3, 1 channel), and the tokens are mean-pooled into one 255-d vector,
which `mask_fc` projects to the LLM width: the region's single geometry token.
"""

from __future__ import annotations

import torch

from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.vit3d import ViT3D


class MaskEncoder(ViT3D):
    """ViT3D over a 1-channel mask, mean-pooled: (B, 1, H, W, D) -> (B, mask_dim)."""

    @classmethod
    def from_config(cls, cfg: Reg2RGConfig) -> MaskEncoder:
        return cls(cfg.image_size, cfg.mask_patch, cfg.mask_dim, cfg.mask_depth, cfg.mask_heads, cfg.mask_dim_head,
                   cfg.mask_mlp, channels=1, pos_rows=cfg.mask_pos_rows)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(mask).mean(dim=1)  # (B, tokens, dim) -> (B, dim)
