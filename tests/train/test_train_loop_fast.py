"""The fast training path (`train.fast`): the same items, loss and gradients as today's path, and `fit` with
it."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, load_tokenizer
from reg2rg_lib.model.geometry import MaskEncoder, PatchTable, encode_patch_rows
from reg2rg_lib.model.llm import base_llm
from reg2rg_lib.model.perceiver import PerceiverResampler, normalize_media, resample_normed
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.collate import Collator
from reg2rg_lib.samples.dataset import ReportDataset
from reg2rg_lib.samples.features import feature_cache_for, feature_statistics
from reg2rg_lib.train.fast import (
    FastTrainData,
    fast_loss,
    fast_step_fn,
    llama_tail_hidden,
    unsupported_reason,
)
from reg2rg_lib.train.loop import TrainSettings, Updates, epoch_batches, fit, seed_everything
from reg2rg_lib.train.run import reg2rg_step

sys.path.insert(0, str(Path(__file__).parent))
import toyloop  # noqa: E402


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= rel * max(float(b.abs().max()), 1e-30)


@pytest.fixture(scope="module", params=[(False, 0.0, False, False), (True, 0.0, False, False),
                                        (True, 0.3, False, False), (True, 0.0, True, False),
                                        (True, 0.0, True, True), (True, 0.0, True, "labels")],
                ids=["plain", "rereference", "rereference-branch-dropout", "rereference-standardized",
                     "rereference-sentences", "rereference-label-head"])
def fast_setup(smoke, request):
    """The smoke model (with re-reference or without; with standardised ViT features and no patch LayerNorm
    or without), a training dataset with region dropout (and branch dropout; cached features), and its fast
    data."""
    rereference, branch_dropout, standardize, extra = request.param
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke")).replace(
        rereference=rereference, vision_standardize=standardize, vit_patch_norm=not standardize,
        rereference_sentences=extra is True, label_head=extra == "labels")
    seed_everything(0)
    model = Reg2RG(cfg, tok)
    train = [r.name for r in cache.cases("train")]
    features = feature_cache_for(model, cache, train, progress=False)
    if standardize:
        model.embedding_layer.set_feature_statistics(feature_statistics(features, train))
    ds = ReportDataset(cache, "train", tok, cfg, features=features, seed=0, region_dropout=0.5,
                       branch_dropout=branch_dropout, region_labels=cfg.label_head)
    return model, ds, FastTrainData(model, ds)  # verify=True: every case's item equals the dataset's


def test_fast_items_equal_the_datasets_in_every_epoch(fast_setup):
    model, ds, fast = fast_setup
    dropped = 0
    for epoch in range(4):  # other region orders and dropped regions
        fast.set_epoch(epoch)
        fast.verify()
        dropped += sum(len(fast[i].rows) < len(ds.records[i].regions) for i in range(len(ds)))
    fast.set_epoch(0)
    assert fast.fallbacks == 0 and dropped > 0  # region dropout happened, and the pieces spelled every target
    codes = [fast[i].drop for i in range(len(ds))]
    if ds.branch_dropout:  # verify() compared them with the dataset's; both branches were dropped somewhere
        assert {1, 2} <= set(torch.cat(codes).tolist())
    else:
        assert all(c is None for c in codes)
    item, cfg = fast[0], model.config
    inserted = item.labels[item.n_prompt:].count(-100)  # re-referenced placeholders: read, not written
    # one insertion after each region head, and with rereference_sentences one after each full stop
    stops = ds.tokenizer.decode(item.ids[item.n_prompt:]).count(".") if cfg.rereference_sentences else 0
    assert inserted == ((len(item.rows) + stops) * cfg.region_tokens if cfg.rereference else 0)


@pytest.mark.parametrize("name_weight", [1.0, 10.0])
def test_fast_loss_and_gradients_equal_todays_step(fast_setup, name_weight):
    model, ds, fast = fast_setup
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    collate = Collator(ds.tokenizer.pad_token_id)
    for epoch in (0, 1):
        fast.set_epoch(epoch)
        for idx in epoch_batches(len(ds), epoch, 0, 0, 1, 3)[:2]:
            labels = 0.7 if model.config.label_head else 0.0  # the region label head's loss too
            old = reg2rg_step(model, collate([ds[i] for i in idx]), name_weight, labels)
            new = fast_loss(model, fast.collate([fast[i] for i in idx]), name_weight, labels)
            if labels:  # and it is part of the loss
                assert new.item() > fast_loss(model, fast.collate([fast[i] for i in idx]), name_weight).item()
            assert new.item() == pytest.approx(old.item(), rel=1e-5)
            for a, b in zip(torch.autograd.grad(new, params), torch.autograd.grad(old, params)):
                assert _close(a, b, 1e-4)
    fast.set_epoch(0)


def test_a_target_the_pieces_do_not_spell_comes_from_the_dataset(fast_setup, monkeypatch):
    model, ds, fast = fast_setup
    monkeypatch.setattr(FastTrainData, "_texts", lambda self, regions, reports: ["not the target"])
    fallbacks = fast.fallbacks
    fast.verify([0, 1])  # still the dataset's items
    assert fast.fallbacks == fallbacks + 2


def test_mask_patch_table_equals_the_mask_encoder_for_binary_and_float_masks():
    torch.manual_seed(0)
    enc = MaskEncoder((32, 32, 8), (16, 16, 4), 48, 2, 2, 24, 96, channels=1)
    binary = torch.rand(5, 1, 32, 32, 8) > 0.5
    binary[0] = False  # every patch uniform
    binary[1, :, :16] = True
    soft = torch.rand(5, 1, 32, 32, 8).round(decimals=1)  # area-resized coverage: fractions, not 0/1
    for masks in (binary, soft):
        table = PatchTable.build(enc, masks, chunk=2)
        pick = torch.tensor([4, 1, 0, 3])
        rows, index = table.gather(pick)
        new = encode_patch_rows(enc, rows, index, table.spatial)
        old = enc(masks[pick] if masks.dtype == torch.bool else masks[pick].float())
        assert _close(new, old, 1e-5)
        weight = torch.randn_like(old)
        for a, b in zip(torch.autograd.grad((new * weight).sum(), list(enc.parameters())),
                        torch.autograd.grad((old * weight).sum(), list(enc.parameters()))):
            assert _close(a, b, 1e-4)


@pytest.mark.parametrize("depth", [1, 2])
def test_resampling_normalised_media_equals_the_perceiver(depth):
    torch.manual_seed(0)
    perceiver = PerceiverResampler(48, depth, 4, 12, 6, 2)
    for p in perceiver.parameters():  # away from the initial gamma = 1, beta = 0
        p.data += 0.1 * torch.randn_like(p)
    media = torch.randn(5, 16, 48)
    new, old = resample_normed(perceiver, normalize_media(perceiver, media)), perceiver(media)
    assert _close(new, old, 1e-5)
    weight = torch.randn_like(old)
    for a, b in zip(torch.autograd.grad((new * weight).sum(), list(perceiver.parameters())),
                    torch.autograd.grad((old * weight).sum(), list(perceiver.parameters()))):
        assert _close(a, b, 1e-4)


def test_llama_tail_equals_the_llms_last_hidden_states(fast_setup):
    model = fast_setup[0]
    llm = base_llm(model.lang_model)
    torch.manual_seed(0)
    embeds = torch.randn(3, 20, llm.config.hidden_size)
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, 15:] = 0  # right padding: no effect on the real positions
    with torch.no_grad():
        full = llm.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # after the final norm
        tail = llm.model.norm(llama_tail_hidden(llm, embeds, 7))
    assert tail.shape == (3, 13, llm.config.hidden_size)
    assert _close(tail[0], full[0, 7:], 1e-5) and _close(tail[1, :8], full[1, 7:15], 1e-5)


def test_the_fast_path_needs_cached_features(smoke, fast_setup):
    model, ds, _ = fast_setup
    raw = ReportDataset(ds.cache, "train", ds.tokenizer, ds.cfg, seed=0)
    assert "feature" in unsupported_reason(model, raw)
    with pytest.raises(KitError, match="does not apply"):
        FastTrainData(model, raw)


def test_fit_with_the_fast_path_follows_todays_losses(fast_setup, tmp_path):
    model, ds, fast = fast_setup
    settings = TrainSettings(seed=0, max_steps=3, batch_size=2, lr=1e-3, warmup_steps=1, save_every=10,
                             region_name_weight=10.0)
    old = fit(copy.deepcopy(model), ds, Collator(ds.tokenizer.pad_token_id),
              functools.partial(reg2rg_step, name_weight=10.0), settings, tmp_path / "old", progress=False)
    new = fit(
        copy.deepcopy(model),
        fast,
        fast.collate,
        fast_step_fn(name_weight=10.0),
        TrainSettings(**{**settings.__dict__, "fused_optimizer": True}),
        tmp_path / "new",
        progress=False,
    )
    assert new.steps == old.steps == 3
    assert new.losses == pytest.approx(old.losses, rel=1e-4)  # the same batches; rounding apart


def test_updates_run_fits_steps(tmp_path):
    """`loop.Updates` (what the benchmark times) is `fit`'s update: the same losses on the same batches."""
    data = toyloop.ToyData()
    reference = toyloop.run(tmp_path / "fit", max_steps=4, save_every=10)
    seed_everything(0)
    toy = toyloop.Toy()
    settings = TrainSettings(seed=0, max_steps=4, batch_size=3, grad_accum=2, lr=0.05, warmup_steps=2)
    updates = Updates(toy, settings, len(data))
    seed_everything(0)
    losses, epoch = [], 0
    while len(losses) < 4:
        data.set_epoch(epoch)
        for idx in epoch_batches(len(data), epoch, 0, 0, 1, 3):
            loss = updates(toyloop.collate([data[i] for i in idx]), toyloop.step_fn)
            if loss is not None:
                losses.append(loss)
            if len(losses) == 4:
                break
        epoch += 1
    assert losses == reference.losses
