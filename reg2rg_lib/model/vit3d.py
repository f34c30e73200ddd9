"""A plain 3D Vision Transformer (RadFM's ViT3D architecture), used twice in Reg2RG:

- the frozen vision encoder (paper: patch 32x32x4, dim 768, depth 12; 256x256x64 input -> 8x8x16 = 1024
  tokens),
- the geometry (mask) encoder (paper: patch 32x32x16, dim 255, depth 3, 1 channel), mean-pooled by
  `geometry.py`.

Parameter names follow the official checkpoint so that RadFM's `RadFM_vit3d.pth` and Reg2RG's embedding layer
load without renaming: `to_patch_embedding.{1,2,3}` (LayerNorm, Linear, LayerNorm after a parameter-free
patchify at index 0), `pos_embedding.{row,col,dep}_embed`, and `transformer.layers.<i>.<0 attention | 1
MLP>.{norm, fn}`.

`patch_norm=False` replaces the first LayerNorm (the one over each patch's raw values) by an identity (no
parameters, so `to_patch_embedding.1.*` is absent and a RadFM checkpoint does not load). That LayerNorm
removes each patch's mean and scale: a patch of uniform consolidation and one of uniform aerated lung embed
alike, and a patch holding only two levels (a region's edge against the masked background) embeds the same
whatever the two levels are. A pretrained encoder has learnt what it can from what is left; a frozen random
one cannot (`model.vision_patch_norm`, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Size3 = tuple[int, int, int]


class Patchify3D(nn.Module):
    """(B, C, H, W, D) -> (B, h*w*d, ph*pw*pd*C): non-overlapping patches, row-major over (h, w, d).

    Within a patch the values are ordered (ph, pw, pd, C), as RadFM's `b c (h p1) (w p2) (f pf) -> b (h w f)
    (p1 p2 pf c)`; the order matters for loading its weights.
    """

    def __init__(self, patch: Size3) -> None:
        super().__init__()
        self.patch = tuple(patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, H, W, D = x.shape
        ph, pw, pd = self.patch
        h, w, d = H // ph, W // pw, D // pd
        x = x.reshape(b, c, h, ph, w, pw, d, pd)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, h, w, d, ph, pw, pd, C)
        return x.reshape(b, h * w * d, ph * pw * pd * c)


class PositionEmbedding3D(nn.Module):
    """Learned per-axis position tables, concatenated: token (i, j, k) gets [row[i'], col[j'], dep[k']].

    Each table has `rows[a]` entries of width dim/3. A grid smaller than the table samples every
    (rows // grid)-th entry, ending on the last one of each block (i' = (i + 1) * (rows // grid) - 1): this is
    how RadFM's ViT, built for 512x512x512, is applied to 256x256x64 inputs.
    """

    def __init__(self, dim: int, rows: Size3) -> None:
        super().__init__()
        if dim % 3:
            raise ValueError(f"position embedding width {dim} must be divisible by 3")
        self.row_embed = nn.Embedding(rows[0], dim // 3)
        self.col_embed = nn.Embedding(rows[1], dim // 3)
        self.dep_embed = nn.Embedding(rows[2], dim // 3)
        for table in (self.row_embed, self.col_embed, self.dep_embed):
            nn.init.uniform_(table.weight)

    @staticmethod
    def _index(n: int, rows: int, device: torch.device) -> torch.Tensor:
        return (torch.arange(n, device=device) + 1) * (rows // n) - 1

    def forward(self, grid: Size3, device: torch.device) -> torch.Tensor:
        """(h*w*d, dim) position vectors for a patch grid (h, w, d), row-major like `Patchify3D`."""
        h, w, d = grid
        rows = self.row_embed(self._index(h, self.row_embed.num_embeddings, device))  # (h, dim/3)
        cols = self.col_embed(self._index(w, self.col_embed.num_embeddings, device))  # (w, dim/3)
        deps = self.dep_embed(self._index(d, self.dep_embed.num_embeddings, device))  # (d, dim/3)
        f = rows.shape[-1]
        pos = torch.cat([
            rows[:, None, None, :].expand(h, w, d, f),
            cols[None, :, None, :].expand(h, w, d, f),
            deps[None, None, :, :].expand(h, w, d, f),
        ], dim=-1)  # (h, w, d, dim)
        return pos.reshape(h * w * d, 3 * f)


class PreNorm(nn.Module):
    """LayerNorm, then `fn` (the residual is added by the caller)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Attention(nn.Module):
    """Multi-head self-attention; one bias-free qkv projection, output projection with bias."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, dh)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, dh), scale dh^-0.5
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout (indices 0 and 3 hold the weights)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """`depth` pre-norm blocks: x + attn(norm(x)), then x + mlp(norm(x)). No final norm (as RadFM's ViT)."""

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, mlp: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNorm(dim, Attention(dim, heads, dim_head, dropout)),
                           PreNorm(dim, FeedForward(dim, mlp, dropout))])
            for _ in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class ViT3D(nn.Module):
    """Patchify -> LayerNorm -> Linear -> LayerNorm -> + positions -> Transformer; returns all patch tokens.

    Args:
        image_size: (H, W, D) of the inputs it will see; only used to check divisibility.
        patch: (ph, pw, pd).
        pos_rows: rows of the per-axis position tables (None = the patch grid of `image_size`).
        patch_norm: False replaces the LayerNorm over each patch's values by an identity (module docstring).
    """

    def __init__(
        self,
        image_size: Size3,
        patch: Size3,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp: int,
        channels: int,
        pos_rows: Size3 | None = None,
        dropout: float = 0.0,
        patch_norm: bool = True,
    ) -> None:
        super().__init__()
        grid = tuple(s // p for s, p in zip(image_size, patch))
        if any(s % p for s, p in zip(image_size, patch)):
            raise ValueError(f"patch {patch} does not divide image size {image_size}")
        self.patch, self.channels, self.dim = tuple(patch), channels, dim
        patch_dim = channels * patch[0] * patch[1] * patch[2]
        self.to_patch_embedding = nn.Sequential(
            Patchify3D(patch),
            nn.LayerNorm(patch_dim) if patch_norm else nn.Identity(),
            nn.Linear(patch_dim, dim),
            nn.LayerNorm(dim),
        )
        self.pos_embedding = PositionEmbedding3D(dim, tuple(pos_rows) if pos_rows else grid)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W, D) -> tokens (B, h*w*d, dim). A 1-channel x is repeated to `channels` channels."""
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(
                    f"ViT3D expects {self.channels} channel(s) (or 1 to repeat), got {x.shape[1]}"
                )
            x = x.expand(-1, self.channels, -1, -1, -1)
        return self.encode_patches(self.to_patch_embedding(x), x.shape[2:])

    def encode_patches(self, tokens: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        """Embedded patches (B, h*w*d, dim) of inputs of size `spatial` (H, W, D) -> the transformer's
        tokens."""
        grid = tuple(s // p for s, p in zip(spatial, self.patch))
        tokens = tokens + self.pos_embedding(grid, tokens.device).to(tokens.dtype)
        return self.transformer(tokens)
