"""The geometry (mask) encoder: where a region is and what shape it has, as one vector.

The region's binary mask, resized but not cropped (so its position in the body is kept), goes through a light 3D
ViT (paper: patch 32x32x16, dim 255, depth 3, 1 channel), and the tokens are mean-pooled into one 255-d vector,
which `mask_fc` projects to the LLM width: the region's single geometry token.
"""

from __future__ import annotations

import torch

from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.vit3d import ViT3D


#: Masks per chunk are chosen so that a chunk holds at most this many voxels (16 masks at the demo's 64x64x16).
#: One pass over a whole batch's masks (160 at batch 16) allocates and touches ~40 MB per intermediate and ran ~6x
#: slower per mask than chunks that stay in cache (`reg2rg bench generate`, benchmarks/RESULTS.md); every op of the
#: encoder is per mask, so chunking changes the tokens by float rounding at most (~1e-7; a test checks 1e-6).
MASK_CHUNK_VOXELS = 1 << 20


class MaskEncoder(ViT3D):
    """ViT3D over a 1-channel mask, mean-pooled: (B, 1, H, W, D) -> (B, mask_dim).

    The masks may come as bool or uint8 (a quarter of the float bytes to collate and move): each chunk is cast to
    the encoder's dtype just before it is encoded."""

    @classmethod
    def from_config(cls, cfg: Reg2RGConfig) -> MaskEncoder:
        return cls(cfg.image_size, cfg.mask_patch, cfg.mask_dim, cfg.mask_depth, cfg.mask_heads, cfg.mask_dim_head,
                   cfg.mask_mlp, channels=1, pos_rows=cfg.mask_pos_rows)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        dtype = self.to_patch_embedding[2].weight.dtype
        per_chunk = max(1, MASK_CHUNK_VOXELS // max(1, mask[0].numel()))
        out = [super(MaskEncoder, self).forward(chunk.to(dtype)).mean(dim=1)  # (b, tokens, dim) -> (b, dim)
               for chunk in mask.split(per_chunk)]
        return out[0] if len(out) == 1 else torch.cat(out)
