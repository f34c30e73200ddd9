"""The placeholder splice (masked_scatter) against the one-hot formulation of the original code."""

from __future__ import annotations

import pytest
import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.model.reg2rg import splice


def one_hot_reference(text_embeds, ids, placeholder_ids, features):
    """The original recipe: a table [text vocabulary; features], rows picked by multiplying a one-hot matrix.

    Placeholder j (in order of appearance, row-major) points at row V + j of the table.
    """
    B, L, D = text_embeds.shape
    V = 50
    table_text = torch.zeros(V, D)
    out = torch.zeros(B, L, D)
    counter = 0
    one_hot = torch.zeros(B, L, V + features.shape[0])
    for b in range(B):
        for t in range(L):
            if int(ids[b, t]) in placeholder_ids:
                one_hot[b, t, V + counter] = 1.0
                counter += 1
    table = torch.cat([table_text, features], dim=0)  # (V + n, D)
    out = one_hot @ table  # (B, L, D)
    is_ph = one_hot[..., V:].sum(-1, keepdim=True) > 0
    return torch.where(is_ph, out, text_embeds)


def test_splice_equals_one_hot_reference():
    g = torch.Generator().manual_seed(0)
    B, L, D = 3, 17, 8
    ids = torch.randint(0, 10, (B, L), generator=g)
    placeholder_ids = {3, 7}
    mask = (ids == 3) | (ids == 7)
    n = int(mask.sum())
    assert n > 3
    embeds = torch.randn(B, L, D, generator=g)
    features = torch.randn(n, D, generator=g)
    got = splice(embeds, mask, features, "test")
    want = one_hot_reference(embeds, ids, placeholder_ids, features)
    torch.testing.assert_close(got, want)
    # features really landed, text positions untouched
    torch.testing.assert_close(got[mask], features)
    torch.testing.assert_close(got[~mask], embeds[~mask])


def test_splice_count_mismatch_is_a_clear_error():
    embeds = torch.zeros(1, 5, 4)
    mask = torch.tensor([[True, False, True, False, False]])
    with pytest.raises(KitError, match="2 placeholder positions but 3 feature vectors"):
        splice(embeds, mask, torch.ones(3, 4), "texture")


def test_splice_passes_gradients_to_features():
    embeds = torch.zeros(2, 4, 3)
    mask = torch.tensor([[False, True, True, False], [True, False, False, False]])
    feats = torch.randn(3, 3, requires_grad=True)
    splice(embeds, mask, feats, "global").sum().backward()
    assert torch.equal(feats.grad, torch.ones(3, 3))
