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

    The masks may come as bool or uint8 (a quarter of the float bytes to collate and move; encoded by
    `binary_patch_embedding`) or as floats (the plain ViT3D path)."""

    @classmethod
    def from_config(cls, cfg: Reg2RGConfig) -> MaskEncoder:
        return cls(cfg.image_size, cfg.mask_patch, cfg.mask_dim, cfg.mask_depth, cfg.mask_heads, cfg.mask_dim_head,
                   cfg.mask_mlp, channels=1, pos_rows=cfg.mask_pos_rows)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        per_chunk = max(1, MASK_CHUNK_VOXELS // max(1, mask[0].numel()))
        out = [self._encode(chunk).mean(dim=1)  # (b, tokens, dim) -> (b, dim)
               for chunk in mask.split(per_chunk)]
        return out[0] if len(out) == 1 else torch.cat(out)

    def _encode(self, mask: torch.Tensor) -> torch.Tensor:
        """Tokens (b, h*w*d, dim) of one chunk; bool/uint8 masks through `binary_patch_embedding`."""
        if mask.dtype in (torch.bool, torch.uint8):
            return self.encode_patches(self.binary_patch_embedding(mask), mask.shape[2:])
        return super().forward(mask.to(self.to_patch_embedding[2].weight.dtype))

    def binary_patch_embedding(self, mask: torch.Tensor) -> torch.Tensor:
        """`to_patch_embedding` of a binary (B, 1, H, W, D) mask, computed on the patches that hold both values.

        A patch that is all 0 or all 1 (~70% of a demo case's patches: outside the organ or inside it) always
        embeds to the same vector, so the LayerNorm and Linear run on two such patches and on the boundary ones,
        which are cut from the 1-byte mask (the mask encoder ~30% faster on the demo's masks). The result equals
        the float path up to float rounding (the Linear sees other row counts; a test checks 1e-6), and it is
        differentiable in the weights as that path is."""
        patchify, norm_in, linear, norm_out = self.to_patch_embedding
        dtype = linear.weight.dtype
        patches = patchify(mask)  # (B, n, patch_dim), bool or uint8: a quarter of the bytes of a float copy
        counts = patches.sum(-1, dtype=torch.int32)  # (B, n): voxels inside the region
        size = patches.shape[-1]
        edge = (counts > 0) & (counts < size)
        ends = torch.stack([patches.new_zeros(size), patches.new_ones(size)]).to(dtype)  # all 0, all 1
        out = linear(norm_in(ends))[(counts == size).long()]  # (B, n, dim): each patch as if uniform
        if bool(edge.any()):
            out[edge] = linear(norm_in(patches[edge].to(dtype)))
        return norm_out(out)
