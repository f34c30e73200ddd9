"""Image-contrastive greedy search (`generate.image_contrast`): the reference inputs
(`samples.reference`), the token choice (`infer.decoder._pick`), both greedy loops, the saved model folder
and `generate_predictions`."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.infer.decoder import _pick, greedy_generate, greedy_generate_rereference
from reg2rg_lib.infer.generate import (
    DecodeSettings,
    decode_engine,
    generate_predictions,
    load_model,
    resolve_checkpoint,
)
from reg2rg_lib.infer.predictions import read_predictions
from reg2rg_lib.model import Reg2RG, Reg2RGConfig, load_tokenizer
from reg2rg_lib.paths import ModelFolder
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset
from reg2rg_lib.samples.reference import reference_for, reference_inputs, with_reference


def _item(regions, feats, masks, glob):
    return {"name": "c", "sample": SimpleNamespace(regions=regions), "region_feats": feats,
            "region_masks": masks, "global_feats": glob}


def test_reference_is_each_organs_average_and_replaces_in_the_items_order():
    a = (["heart", "lung"],
         {"region_feats": torch.tensor([[1.0], [10.0]]), "global_feats": torch.tensor([2.0])})
    b = (["lung"], {"region_feats": torch.tensor([[20.0]]), "global_feats": torch.tensor([4.0])})
    ref = reference_inputs([a, b])
    assert ref["region_feats/heart"].tolist() == [1.0] and ref["region_feats/lung"].tolist() == [15.0]
    assert ref["global_feats"].tolist() == [3.0]
    item = _item(["lung", "heart"], torch.zeros(2, 1, dtype=torch.float16), None, torch.zeros(1))
    item.pop("region_masks")
    out = with_reference(item, ref)
    assert out["region_feats"].tolist() == [[15.0], [1.0]] and out["region_feats"].dtype == torch.float16
    assert out["global_feats"].tolist() == [3.0] and out["sample"] is item["sample"]
    with pytest.raises(KitError, match="region_feats/bone"):
        with_reference(dict(item, sample=SimpleNamespace(regions=["bone", "heart"])), ref)
    with pytest.raises(KitError, match="another image size"):
        with_reference(dict(item, region_feats=torch.zeros(2, 3)), ref)
    with pytest.raises(KitError, match="no visual tensors"):
        reference_inputs([(["heart"], {})])


def test_pick_prefers_what_the_image_adds_among_plausible_tokens():
    # token 0: greedy's choice, as likely with the average image; token 1 a little less likely, but only with
    # the case's own image; token 2 favoured by the image most, but implausible (p far below the top)
    real = torch.tensor([[3.0, 2.5, -4.0, 0.0]])
    reference = torch.tensor([[3.0, 0.5, -9.0, 0.0]])
    scores = torch.cat([real, reference])
    assert _pick(scores, 2, 0.0, 0.3).tolist() == [0, 0]  # no contrast: each row's own argmax
    assert _pick(scores, 1, 1.0, 0.3).tolist() == [1, 1]  # both halves are fed the case's choice
    assert _pick(scores, 1, 1.0, 0.9).tolist() == [0, 0]  # token 1 (p ratio e^-0.5 = 0.61) not plausible
    assert math.exp(-0.5) > 0.3
    assert _pick(scores, 1, 1.0, 0.3, plain=torch.tensor([True])).tolist() == [0, 0]  # inside a head: greedy


@pytest.fixture(scope="module")
def models(smoke, fresh_model):
    torch.manual_seed(0)
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    plain, reref = fresh_model(cfg, tok).eval(), fresh_model(cfg.replace(rereference=True), tok).eval()
    return cache, tok, {False: plain, True: reref}


@pytest.mark.parametrize("reref", [False, True])
def test_a_reference_equal_to_the_case_gives_greedys_tokens(models, reref):
    """With reference inputs equal to the case's own, own - reference is 0 and the plausible argmax is
    greedy's token: contrastive search must then write exactly greedy's ids, for both loops (left-padded
    rows)."""
    cache, tok, by = models
    model = by[reref]
    data = ReportDataset(cache, "test", tok, model.config, shuffle_regions=False, with_targets=False)
    items = [data[k] for k in range(len(data))]
    collate, loop = Collator(tok.pad_token_id, padding_side="left"), (
        greedy_generate_rereference if reref else greedy_generate)

    def run(batch_items, **kw):
        inputs = {k: v for k, v in model_inputs(collate(batch_items)).items() if k != "labels"}
        return loop(model, **inputs, max_new_tokens=24, **kw)

    plain = run(items)
    same = run(items + items, contrast=2.0, plausible=0.3)
    assert same.shape[0] == len(items) and torch.equal(same, plain[:, : same.shape[1]])
    reference = reference_inputs(data.case_tensors(k) for k in range(len(data)))
    other = run(items + [with_reference(it, reference) for it in items], contrast=2.0)
    assert other.shape[0] == len(items)
    with pytest.raises(KitError, match="even number of rows"):
        run(items[:1] + items[:1] + items[:1], contrast=1.0)


def test_reference_is_saved_with_the_model_and_read_back(models, tmp_path):
    cache, tok, by = models
    model = by[True]
    data = ReportDataset(cache, "train", tok, model.config, shuffle_regions=False, with_targets=False)
    model.reference_inputs = reference_for(model, data)  # computed from the train split
    keys = set(model.reference_inputs)
    assert keys >= {f"region_masks/{r}" for r in data.records[0].regions}
    assert any(k.startswith("global_") for k in keys)  # the whole CT's average too
    model.save_pretrained(tmp_path / "m")
    back = Reg2RG.from_pretrained(tmp_path / "m")
    assert back.reference_inputs.keys() == model.reference_inputs.keys()
    assert all(torch.equal(back.reference_inputs[k], v) for k, v in model.reference_inputs.items())
    assert reference_for(back, None) is back.reference_inputs  # no train split needed any more
    model.reference_inputs = None
    model.save_pretrained(tmp_path / "m")  # a save without one removes the stale file
    assert not ModelFolder(tmp_path / "m").reference.exists()
    with pytest.raises(KitError, match="reference_inputs.safetensors"):
        reference_for(Reg2RG.from_pretrained(tmp_path / "m"), None)


def test_generate_predictions_with_contrast_and_its_settings(models, tmp_path):
    cache, tok, by = models
    model = by[True]
    model.reference_inputs = None  # computed from the cache's train split
    decode = DecodeSettings(max_new_tokens=16, image_contrast=1.0)
    out = generate_predictions(model, cache, tmp_path / "pred.csv", decode=decode, batch_size=2,
                               progress=False)
    rows = read_predictions(out)
    assert len(rows) == len(cache.cases("test")) and all(r["Pred_combined_report"] for r in rows)
    assert model.reference_inputs is not None
    assert "image-contrastive greedy, contrast=1" in decode.describe()
    for bad in (DecodeSettings(image_contrast=1.0, num_beams=2),
                DecodeSettings(image_contrast=1.0, do_sample=True), DecodeSettings(image_contrast=-1.0),
                DecodeSettings(image_contrast=1.0, contrast_plausible=0.0)):
        with pytest.raises(KitError, match="image_contrast|contrast_plausible"):
            decode_engine(model, bad)
    with pytest.raises(KitError, match="kit's greedy loop only"):
        DecodeSettings(image_contrast=1.0).hf_kwargs()
    section = load_profile("smoke").generate
    assert DecodeSettings.from_profile(section, image_contrast=0.5).image_contrast == 0.5


def test_training_saves_the_reference_when_the_profile_decodes_with_a_contrast(trained):
    """The smoke profile decodes as the demo does (`generate.image_contrast` > 0): every checkpoint's model
    folder carries the train cases' reference inputs, in the keys generation feeds (cached ViT features)."""
    assert load_profile("smoke").generate.image_contrast > 0
    model = load_model(trained)
    assert ModelFolder(resolve_checkpoint(trained)).reference.is_file() and model.reference_inputs
    assert "global_feats" in model.reference_inputs or "global_images" in model.reference_inputs
    assert any(k.startswith("region_masks/") for k in model.reference_inputs)
