"""`vision_standardize` (a kit option, not the paper's): the frozen ViT's features standardised per dimension
with the train split's statistics before the Perceiver, set by `train_run` and saved with the model."""

from __future__ import annotations

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.infer.generate import load_model
from reg2rg_lib.model import Reg2RG, Reg2RGConfig
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.features import feature_cache_for, feature_statistics, set_train_statistics
from reg2rg_lib.train.run import train_run

KEYS = ("global_feats", "region_feats")


def test_the_profile_switch_reaches_the_config_and_needs_a_frozen_vit():
    assert Reg2RGConfig.from_profile(load_profile("paper")).vision_standardize is False
    assert Reg2RGConfig.from_profile(load_profile("demo")).vision_standardize is True  # shipped 2026-12-07
    on = Reg2RGConfig.from_profile(load_profile("smoke", overrides={"model.vision_standardize": True}))
    assert on.vision_standardize is True
    with pytest.raises(KitError, match="vision_standardize needs a frozen ViT"):
        on.replace(freeze_vision=False)


def test_the_perceiver_reads_the_standardised_features(tiny_cfg, tokenizer_factory, visual_batch):
    """With statistics (mean m, sd s) set, the tokens are those of the same weights without the option given
    (features - m) / s, from cached features and from raw images alike; before they are set, an error."""
    tok = tokenizer_factory()
    plain = Reg2RG(tiny_cfg, tok).eval()
    on = Reg2RG(tiny_cfg.replace(vision_standardize=True), tok).eval()
    missing, unexpected = on.load_state_dict(plain.state_dict(), strict=False)  # the same weights
    assert sorted(missing) == [f"embedding_layer.feature_{k}" for k in ("count", "scale", "shift")]
    assert not unexpected
    vis = visual_batch(tiny_cfg, 2, 3)
    with torch.no_grad():
        feats = {"global_feats": plain.encode_vision(vis["global_images"]),
                 "region_feats": plain.encode_vision(vis["region_images"])}
    masks = vis["region_masks"]
    with pytest.raises(KitError, match="statistics were never set"):
        on.visual_tokens(**feats, region_masks=masks)
    g = torch.Generator().manual_seed(1)
    dim = tiny_cfg.vit_dim
    stats = {k: (torch.randn(dim, generator=g), torch.rand(dim, generator=g) + 0.5, 100) for k in KEYS}
    on.embedding_layer.set_feature_statistics(stats)
    assert on.embedding_layer.feature_count.tolist() == [100, 100]
    standardised = {k: (v - stats[k][0]) / stats[k][1] for k, v in feats.items()}
    with torch.no_grad():
        want = plain.visual_tokens(**standardised, region_masks=masks)
        got = on.visual_tokens(**feats, region_masks=masks)
        from_images = on.visual_tokens(**vis)
        unchanged = plain.visual_tokens(**feats, region_masks=masks)
    assert set(got) == set(want) == set(from_images)
    for kind in want:
        torch.testing.assert_close(got[kind], want[kind])
        torch.testing.assert_close(from_images[kind], want[kind], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got["texture"], unchanged["texture"])  # not an identity
    torch.testing.assert_close(got["geometry"], unchanged["geometry"])  # the masks' branch is not touched


def test_train_run_sets_the_train_splits_statistics_and_the_model_folder_keeps_them(smoke):
    """`train_run` standardises with the train split's own statistics (the standardised train features have
    mean 0 and sd 1 in every dimension), and a saved model carries them."""
    overrides = {"model.vision_standardize": True, "model.vision_patch_norm": False}
    profile = load_profile("smoke", overrides=overrides)
    run = smoke.run("standardised")
    train_run(profile, run, max_steps=2, save_every=2, progress=False)
    model = load_model(run)
    cache = load_cache(smoke.cache)
    train = [r.name for r in cache.cases("train")]
    features = feature_cache_for(model, cache, train, progress=False)
    stats = feature_statistics(features, train)
    el = model.embedding_layer
    for key, row in (("global_feats", 0), ("region_feats", 1)):
        mean, sd, count = stats[key]
        torch.testing.assert_close(el.feature_shift[row], mean)
        torch.testing.assert_close(el.feature_scale[row], sd)
        tokens = torch.cat([features.get(n)[key].reshape(-1, mean.shape[0]) for n in train])
        assert int(el.feature_count[row]) == count == tokens.shape[0]
        z = el.standardize(key, tokens).double()
        assert float(z.mean(0).abs().max()) < 1e-4
        assert float((z.std(0) - 1).abs().max()) < 1e-3


def test_set_train_statistics_on_one_batch_as_notebook_02_does(tiny_cfg, tokenizer_factory, visual_batch):
    """`set_train_statistics` takes any mapping name -> features (notebook 02 passes one random batch): the
    model then runs, with that batch's mean and sd; a model without the switch is left as it is."""
    tok = tokenizer_factory()
    vis = visual_batch(tiny_cfg, 1, 3)
    on = Reg2RG(tiny_cfg.replace(vision_standardize=True), tok).eval()
    with torch.no_grad():
        feats = {"global_feats": on.encode_vision(vis["global_images"]),
                 "region_feats": on.encode_vision(vis["region_images"])}
        with pytest.raises(KitError, match="never set"):
            on.visual_tokens(**vis)
        stats = set_train_statistics(on, {"random batch": feats}, ["random batch"])
        mean, sd, n = stats["region_feats"]
        flat = feats["region_feats"].flatten(0, -2)
        assert n == flat.shape[0] and torch.allclose(mean, flat.mean(0), atol=1e-5)
        assert torch.allclose(sd, flat.std(0), atol=1e-5)
        assert on.visual_tokens(**vis)["texture"].isfinite().all()
    plain = Reg2RG(tiny_cfg, tok)
    assert set_train_statistics(plain, {"random batch": feats}, ["random batch"]) is None
