"""The geometry (mask) encoder: where a region is and what shape it has, as one vector.

The region's binary mask, resized but not cropped (so its position in the body is kept), goes through a light
3D ViT (paper: patch 32x32x16, dim 255, depth 3, 1 channel), and the tokens are mean-pooled into one 255-d
vector, which `mask_fc` projects to the LLM width: the region's single geometry token.

The patch embedding is LayerNorm(patch) -> Linear -> LayerNorm, so a uniform patch (all outside or all inside
the region) normalises to zero whatever its value: all-0 and all-1 patches embed to the same vector, and only
patches on the region's boundary (and, with `mask_coverage`, their fractions) tell the encoder the region's
shape, with the position embedding saying where. The official checkpoint has the same layers
(`mask_encoder.to_patch_embedding.1` is a LayerNorm over the 32x32x16 = 16384 patch values,
../shared/reference/reg2rg_checkpoint_layout.json), so the kit keeps it.
"""

from __future__ import annotations

import torch

from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.vit3d import ViT3D

#: Masks per chunk are chosen so that a chunk holds at most this many voxels (16 masks at the demo's
#: 64x64x16). One pass over a whole batch's masks (160 at batch 16) allocates and touches ~40 MB per
#: intermediate and ran ~6x slower per mask than chunks that stay in cache (`reg2rg bench generate`,
#: benchmarks/RESULTS.md); every op of the encoder is per mask, so chunking changes the tokens by float
#: rounding at most (~1e-7; a test checks 1e-6).
MASK_CHUNK_VOXELS = 1 << 20


class MaskEncoder(ViT3D):
    """ViT3D over a 1-channel mask, mean-pooled: (B, 1, H, W, D) -> (B, mask_dim).

    The masks may come as bool or uint8 (a quarter of the float bytes to collate and move; encoded by
    `binary_patch_embedding`) or as floats (the plain ViT3D path)."""

    @classmethod
    def from_config(cls, cfg: Reg2RGConfig) -> MaskEncoder:
        return cls(
            cfg.image_size,
            cfg.mask_patch,
            cfg.mask_dim,
            cfg.mask_depth,
            cfg.mask_heads,
            cfg.mask_dim_head,
            cfg.mask_mlp,
            channels=1,
            pos_rows=cfg.mask_pos_rows,
        )

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
        """`to_patch_embedding` of a binary (B, 1, H, W, D) mask, computed on the patches that hold both
        values.

        A patch that is all 0 or all 1 (~70% of a demo case's patches: outside the organ or inside it) always
        embeds to the same vector, so the LayerNorm and Linear run on two such patches and on the boundary
        ones, which are cut from the 1-byte mask (the mask encoder ~30% faster on the demo's masks). The
        result equals the float path up to float rounding (the Linear sees other row counts; a test checks
        1e-6), and it is differentiable in the weights as that path is."""
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


# ---- masks that do not change between steps: normalised once, embedded per step ----------------------------
#
# The patch embedding is LayerNorm(patch_dim) -> Linear -> LayerNorm(dim). For a fixed patch x the first
# LayerNorm is x_hat * gamma + beta with x_hat = (x - mean) / sqrt(var + eps), which does not depend on any
# weight, so
#     Linear(LayerNorm(x)) = x_hat @ (W * gamma)^T + (W @ beta + b)
# holds exactly in real arithmetic. A training set's masks never change, so x_hat is computed once per patch
# (`PatchTable.build`); each step then runs one matrix product per non-uniform patch, and autograd skips the
# product that would send a gradient back into the (constant) patches, and the LayerNorm's backward. A uniform
# patch (all equal values: outside or inside the region) has x_hat = 0 and embeds to W @ beta + b, one row for
# all of them; the output LayerNorm is per row, so it runs on the table rows before they are gathered into the
# masks' token grids.


class PatchTable:
    """The normalised non-uniform patches of a set of masks, computed once: `rows[k]` holds x_hat of the k-th
    non-uniform patch (float32, (n_rows, patch_dim)); `code[m, p]` is -1 for a uniform patch p of mask m, else
    its row; `spatial` is the masks' (H, W, D). Masks may be bool, uint8 or float (only x_hat depends on the
    values)."""

    def __init__(self, rows: torch.Tensor, code: torch.Tensor, spatial: tuple[int, ...]) -> None:
        self.rows, self.code, self.spatial = rows, code, tuple(spatial)

    @classmethod
    def build(cls, encoder: MaskEncoder, masks: torch.Tensor, chunk: int = 64) -> PatchTable:
        """x_hat of every non-uniform patch of `masks` (N, 1, H, W, D), in chunks of `chunk` masks."""
        patchify, norm_in = encoder.to_patch_embedding[0], encoder.to_patch_embedding[1]
        rows, codes, start = [], [], 0
        with torch.no_grad():
            for part in masks.split(chunk):
                patches = patchify(part).float()  # (b, n, patch_dim)
                uniform = patches.amax(-1) == patches.amin(-1)  # (b, n)
                code = torch.full(uniform.shape, -1, dtype=torch.long)
                n_edge = int((~uniform).sum())
                code[~uniform] = torch.arange(start, start + n_edge)
                start += n_edge
                rows.append(
                    torch.nn.functional.layer_norm(patches[~uniform], patches.shape[-1:], eps=norm_in.eps)
                )
                codes.append(code)
        return cls(torch.cat(rows).contiguous(), torch.cat(codes), tuple(masks.shape[2:]))

    def gather(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the masks with indices `masks` (n,): their x_hat rows (r, patch_dim) and each patch's row in
        the embedded table [uniform row; those r rows] (n, patches)."""
        code = self.code[masks]  # (n, patches)
        edge = code >= 0
        rows = self.rows[code[edge]]  # row-major: mask by mask, patch by patch
        index = torch.zeros_like(code)
        index[edge] = torch.arange(1, rows.shape[0] + 1)
        return rows, index


def encode_patch_rows(encoder: MaskEncoder, rows: torch.Tensor, index: torch.Tensor,
                      spatial: tuple[int, ...]) -> torch.Tensor:
    """`encoder(masks)` (n, dim) from `PatchTable.gather`'s rows and index, for masks of size `spatial` (H, W,
    D), equal up to float rounding: the folded first LayerNorm + Linear on the non-uniform rows, the output
    LayerNorm on the table, then the position embedding, the transformer and the mean over each mask's
    tokens."""
    _, norm_in, linear, norm_out = encoder.to_patch_embedding
    dtype = linear.weight.dtype
    uniform = linear(norm_in.bias).unsqueeze(0)  # (1, dim): W @ beta + b, the embedding of any uniform patch
    folded = linear.weight * norm_in.weight  # (dim, patch_dim): W * gamma
    edge = torch.nn.functional.linear(rows.to(dtype), folded, uniform[0])  # (r, dim)
    table = norm_out(torch.cat([uniform, edge]))  # (1 + r, dim)
    return encoder.encode_patches(table[index], spatial).mean(dim=1)  # (n, patches, dim) -> (n, dim)
