"""Flamingo-style Perceiver resampler: a fixed set of learned latents cross-attends to a variable number of visual
tokens, so every image (the global CT or one region) becomes exactly `num_latents` tokens (32 in the paper).

Reg2RG uses ONE instance for the global image and every region. Parameter names follow the official checkpoint
(`latents`, `layers.<i>.0.{norm_media, norm_latents, to_q, to_kv, to_out}`, `layers.<i>.1.{0,1,3}`, `norm`), so
RadFM's `RadFM_perceiver_fc.pth['perceiver']` loads directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceiverAttention(nn.Module):
    """Latents attend to [media; latents] (keys/values from both, queries from the latents); bias-free projections."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """media (B, N, dim), latents (B, L, dim) -> (B, L, dim) update for the latents."""
        b, n_lat, _ = latents.shape
        media, latents = self.norm_media(media), self.norm_latents(latents)
        context = torch.cat([media, latents], dim=1)  # (B, N+L, dim)
        q = self.to_q(latents).reshape(b, n_lat, self.heads, -1).transpose(1, 2)  # (B, heads, L, dh)
        k, v = self.to_kv(context).reshape(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, dh)
        return self.to_out(out.transpose(1, 2).reshape(b, n_lat, -1))


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Linear, bias-free linears (indices 0, 1, 3 hold weights)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverResampler(nn.Module):
    """(B, N, dim) visual tokens -> (B, num_latents, dim)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, num_latents: int, ff_mult: int = 4) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList([
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head), _feed_forward(dim, ff_mult)])
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(dim)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        latents = self.latents.to(media.dtype).expand(media.shape[0], -1, -1)  # (B, L, dim)
        for attn, ff in self.layers:
            latents = latents + attn(media, latents)
            latents = latents + ff(latents)
        return self.norm(latents)
