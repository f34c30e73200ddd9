"""The ViT3D's patch LayerNorm: what it removes, and the switch that drops it (`patch_norm`)."""

from __future__ import annotations

import torch

from reg2rg_lib.model.vit3d import ViT3D


def _vit(patch_norm: bool) -> ViT3D:
    torch.manual_seed(0)
    return ViT3D((8, 8, 4), (4, 4, 2), 24, 1, 2, 8, 32, 1, patch_norm=patch_norm).eval()


def _edge_volume(inside: float) -> torch.Tensor:
    """A region of value `inside` filling the left half of every patch, the masked background (-1) the
    right half: each patch holds two levels."""
    x = torch.full((1, 1, 8, 8, 4), -1.0)
    x[:, :, :, [0, 1, 4, 5], :] = inside
    return x


def test_the_patch_layernorm_hides_the_level_of_a_two_level_patch():
    """With the LayerNorm (RadFM's ViT), aerated lung (-0.75) and consolidation (+0.7) against the background
    embed to the same tokens; without it they differ."""
    lung, consolidation = _edge_volume(-0.75), _edge_volume(0.7)
    with torch.no_grad():
        with_norm = _vit(True)
        assert torch.allclose(with_norm(lung), with_norm(consolidation), atol=1e-3)  # LayerNorm eps
        without = _vit(False)
        assert (without(lung) - without(consolidation)).abs().max() > 0.1


def test_without_patch_norm_the_state_dict_has_no_patch_layernorm():
    """The identity has no parameters: a RadFM checkpoint (which has `to_patch_embedding.1.*`) cannot load
    silently into it; the other weights keep their names and their seeded values."""
    on, off = _vit(True).state_dict(), _vit(False).state_dict()
    assert {"to_patch_embedding.1.weight", "to_patch_embedding.1.bias"} <= set(on)
    assert set(off) == set(on) - {"to_patch_embedding.1.weight", "to_patch_embedding.1.bias"}
    assert torch.equal(on["to_patch_embedding.2.weight"], off["to_patch_embedding.2.weight"])
