"""Flamingo-style Perceiver resampler: a fixed set of learned latents cross-attends to a variable number of
visual tokens, so every image (the global CT or one region) becomes exactly `num_latents` tokens (32 in the
paper).

Reg2RG uses ONE instance for the global image and every region. Parameter names follow the official checkpoint
(`latents`, `layers.<i>.0.{norm_media, norm_latents, to_q, to_kv, to_out}`, `layers.<i>.1.{0,1,3}`, `norm`),
so RadFM's `RadFM_perceiver_fc.pth['perceiver']` loads directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceiverAttention(nn.Module):
    """Latents attend to [media; latents] (keys/values from both, queries from the latents); bias-free
    projections."""

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

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, num_latents: int, ff_mult: int = 4
    ) -> None:
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


# ---- media that do not change between steps (cached frozen-ViT features): normalised once ------------------
#
# Every layer reads the media only through its `norm_media` LayerNorm, x_hat * gamma + beta, and x_hat (the
# media normalised without the affine part) depends on no weight. So each layer's keys and values of the media
# are
#     to_kv(norm_media(m)) = x_hat @ (W_kv * gamma)^T + W_kv @ beta
# (exact in real arithmetic): with x_hat computed once per cached feature (`normalize_media`), a step runs one
# matrix product over the media per layer and none back into them (autograd skips the gradient of the constant
# x_hat, and the LayerNorm's backward). The first layer's latents are the same for every image, so their
# normalisation, queries, keys and values are computed once and broadcast.


def normalize_media(resampler: PerceiverResampler, media: torch.Tensor) -> torch.Tensor:
    """x_hat of `media` (B, N, dim): LayerNorm without its affine part, with the eps every layer's
    `norm_media` uses (they must agree; the kit's layers all use the default)."""
    eps = {layer[0].norm_media.eps for layer in resampler.layers} or {1e-5}  # no layer: the media are unused
    if len(eps) != 1:
        raise ValueError(f"the Perceiver's media LayerNorms use different eps {sorted(eps)}")
    return F.layer_norm(media.float(), media.shape[-1:], eps=eps.pop())


def _attend_normed(attn: PerceiverAttention, media_hat: torch.Tensor, latents: torch.Tensor,
                   n_images: int) -> torch.Tensor:
    """`attn(media, latents)` from normalised media (B, N, dim); `latents` (B or 1, L, dim) (1: shared)."""
    lat = attn.norm_latents(latents)
    w_kv = attn.to_kv.weight  # (2 * inner, dim)
    kv_media = F.linear(media_hat.to(w_kv.dtype), w_kv * attn.norm_media.weight,
                        w_kv @ attn.norm_media.bias)  # (B, N, 2 * inner)
    kv_lat = attn.to_kv(lat).expand(n_images, -1, -1)  # (B, L, 2 * inner)
    kv = torch.cat([kv_media, kv_lat], dim=1)  # (B, N+L, 2 * inner): the order of `forward`'s context
    n_lat = lat.shape[1]
    q = (
        attn.to_q(lat)
        .reshape(lat.shape[0], n_lat, attn.heads, -1)
        .transpose(1, 2)
        .expand(n_images, -1, -1, -1)
    )
    k, v = kv.reshape(n_images, kv.shape[1], 2, attn.heads, -1).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, dh)
    return attn.to_out(out.transpose(1, 2).reshape(n_images, n_lat, -1))


def _attend_shared_queries(
    attn: PerceiverAttention, media_hat: torch.Tensor, latents: torch.Tensor
) -> torch.Tensor:
    """`_attend_normed` when the latents (1, L, dim) are the same for every image (the first layer), without
    the media's keys and values: with q_i the (shared) queries and x_j the normalised media,
        q_i . k_j = x_j . (W_k^T q_i) + q_i . b_k and sum_j p_ij v_j = W_v (sum_j p_ij x_j) + b_v sum_j p_ij
    (W_k, W_v: `to_kv`'s halves with the LayerNorm's gamma folded in, b_k, b_v: W @ beta), so a step
    multiplies the media once by the L x heads query directions and once by the attention weights: ~3x fewer
    operations than projecting N keys and values per image, and no per-image attention kernel."""
    n, n_media, dim = media_hat.shape
    heads, n_lat = attn.heads, latents.shape[1]
    lat = attn.norm_latents(latents)[0]  # (L, dim)
    w_kv = attn.to_kv.weight * attn.norm_media.weight  # (2 * inner, dim): gamma folded in
    b_kv = attn.to_kv.weight @ attn.norm_media.bias  # (2 * inner,)
    inner = w_kv.shape[0] // 2
    dh = inner // heads
    scale = dh ** -0.5
    q = attn.to_q(lat).view(n_lat, heads, dh).transpose(0, 1) * scale  # (heads, L, dh), scaled as in SDPA
    w_k, w_v = w_kv[:inner].view(heads, dh, dim), w_kv[inner:].view(heads, dh, dim)
    b_k, b_v = b_kv[:inner].view(heads, dh), b_kv[inner:].view(heads, dh)
    directions = torch.matmul(q, w_k).reshape(heads * n_lat, dim)  # (heads * L, dim): W_k^T q_i per head
    offsets = (q * b_k.unsqueeze(1)).sum(-1).reshape(heads * n_lat)  # (heads * L,): q_i . b_k
    x = media_hat.to(directions.dtype)
    s_media = F.linear(x, directions, offsets).transpose(1, 2)  # (B, heads * L, N)
    kv_lat = attn.to_kv(lat)  # (L, 2 * inner): the latents' own keys and values (shared)
    k_lat = kv_lat[:, :inner].view(n_lat, heads, dh).transpose(0, 1)  # (heads, L, dh)
    v_lat = kv_lat[:, inner:].view(n_lat, heads, dh).transpose(0, 1)
    s_lat = torch.matmul(q, k_lat.transpose(1, 2)).reshape(1, heads * n_lat, n_lat)  # (1, heads * L, L)
    p = torch.cat([s_media, s_lat.expand(n, -1, -1)], dim=-1).softmax(-1)  # (B, heads * L, N + L)
    p_media, p_lat = p[..., :n_media], p[..., n_media:]
    mixed = torch.bmm(p_media, x).view(n, heads, n_lat, dim)  # sum_j p_ij x_j
    out = torch.einsum("bhld,hed->bhle", mixed, w_v)  # (B, heads, L, dh): W_v (sum_j p_ij x_j)
    out = out + p_media.sum(-1).view(n, heads, n_lat, 1) * b_v.unsqueeze(1)
    out = out + torch.matmul(p_lat.view(n, heads, n_lat, n_lat), v_lat)  # the latents' own values
    return attn.to_out(out.transpose(1, 2).reshape(n, n_lat, inner))


def resample_normed(resampler: PerceiverResampler, media_hat: torch.Tensor) -> torch.Tensor:
    """`resampler(media)` (B, num_latents, dim) from `normalize_media(resampler, media)`, equal up to float
    rounding."""
    n = media_hat.shape[0]
    latents = resampler.latents.unsqueeze(0)  # (1, L, dim): the same for every image until the first update
    for attn, ff in resampler.layers:
        if latents.shape[0] == 1:
            latents = latents + _attend_shared_queries(attn, media_hat, latents)  # (B, L, dim)
        else:
            latents = latents + _attend_normed(attn, media_hat, latents, n)
        latents = latents + ff(latents)
    return resampler.norm(latents.expand(n, -1, -1))
