"""The region label head (`train.label_weight`, `Reg2RGConfig.label_head`): where its targets sit in a
sample, the loss it adds, and a run that trains it and saves it (the fast path's loss with the head equals the
plain loop's: tests/train/test_train_loop_fast.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.infer.generate import load_model
from reg2rg_lib.model import Reg2RGConfig, add_reg2rg_tokens, load_tokenizer
from reg2rg_lib.model.prompt import region_placeholder_ids
from reg2rg_lib.model.weights import read_pretrained
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.regions import LABEL_REGIONS, LABELS
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset, paragraph_starts
from reg2rg_lib.train.checkpoints import step_dir_name
from reg2rg_lib.train.loop import TrainSettings
from reg2rg_lib.train.run import reg2rg_step, region_label_loss, train_run, weighted_lm_loss


def _dataset(smoke, **changes):
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke")).replace(**changes)
    add_reg2rg_tokens(tok, cfg)
    return ReportDataset(cache, "train", tok, cfg, seed=0, region_labels=True), tok, cfg


@pytest.mark.parametrize("rereference", [False, True])
def test_targets_sit_where_each_paragraphs_first_word_is_chosen(smoke, rereference):
    ds, tok, cfg = _dataset(smoke, rereference=rereference, label_head=True)
    for k in range(3):
        item, rec = ds[k], ds.records[k]
        s = item["sample"]
        starts = paragraph_starts(s, tok)
        assert sorted(starts) == list(range(len(s.regions)))  # every region's paragraph
        for i, region in enumerate(s.regions):
            pos = int(item["label_positions"][i])
            assert pos == starts[i]
            head = f"The region {i} is {region}:"
            assert head in tok.decode(s.input_ids[s.n_prompt: pos + 1])
            if rereference:  # the state there has read region i's own tokens again, after the head
                ph = region_placeholder_ids(tok, cfg, i)
                at = max(k for k in range(s.n_prompt, pos + 1) if s.input_ids[k: k + len(ph)] == ph)
                assert tok.decode(s.input_ids[s.n_prompt: at]).rstrip().endswith(head)
                assert not tok.decode(s.input_ids[at + len(ph): pos + 1]).strip()  # at most a space between
            first = tok.decode([s.input_ids[pos + 1]]).strip()
            assert first and rec.reports[region].lstrip().startswith(first)
            mask = item["label_mask"][i]
            assert [LABELS[j] for j in mask.nonzero().flatten()] == [
                label for label in LABELS if LABEL_REGIONS[label] == region]
            assert item["label_targets"][i].tolist() == [float(rec.labels.get(lb, 0)) for lb in LABELS]


def test_the_loss_is_the_lm_loss_plus_the_weighted_label_loss_and_trains_the_look_up(smoke, fresh_model):
    ds, tok, cfg = _dataset(smoke, rereference=True, label_head=True)
    model = fresh_model(cfg, tok)
    batch = Collator(tok.pad_token_id)([ds[0], ds[1]])
    assert len(batch["label_rows"]) == len(ds[0]["sample"].regions) + len(ds[1]["sample"].regions)
    inputs = model_inputs(batch)
    out = model.lang_model(inputs_embeds=model.embed_inputs(inputs["input_ids"], **{
        k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "labels")}),
        attention_mask=inputs["attention_mask"], output_hidden_states=True)
    hidden = out.hidden_states[-1]
    torch.testing.assert_close(model.lang_model.lm_head(hidden), out.logits)  # the state the LM head reads
    lm = weighted_lm_loss(out.logits, inputs["labels"], batch["name_mask"], 3.0)
    labels = region_label_loss(hidden, batch, model.embedding_layer.label_head)
    total = reg2rg_step(model, batch, 3.0, label_weight=0.5)
    assert total.item() == pytest.approx((lm + 0.5 * labels).item(), rel=1e-5)
    assert reg2rg_step(model, batch, 3.0).item() == pytest.approx(lm.item(), rel=1e-5)  # weight 0: LM only
    wrapped = torch.nn.Module()  # a distributed wrapper's shape: the model one attribute down
    wrapped.module = model
    with pytest.raises(KitError, match="one process"):
        reg2rg_step(wrapped, batch, 3.0, label_weight=0.5)
    model.zero_grad()
    labels.backward()
    assert model.embedding_layer.label_head.weight.grad.abs().sum() > 0
    assert model.embedding_layer.fc.weight.grad.abs().sum() > 0  # it reaches the region's texture tokens


def test_a_run_with_the_label_head_trains_it_on_the_fast_path_and_saves_it(smoke, tmp_path, caplog):
    profile = load_profile("smoke", overrides={"train.label_weight": 1.0})
    assert TrainSettings.from_profile(profile.train).sampling()["region_labels"] is True
    with caplog.at_level("INFO", logger="reg2rg_lib"):
        train_run(profile, tmp_path / "run", cache_dir=smoke.cache, tokenizer_dir=smoke.tokenizer,
                  max_steps=2, save_every=1, progress=False)
    assert any("the fast training path" in m for m in caplog.messages)
    heads = [read_pretrained(tmp_path / "run" / "checkpoints" / step_dir_name(k) / "model")[2][
        "embedding_layer.label_head.weight"] for k in (1, 2)]
    assert not torch.equal(*heads)  # trained: the second step moved it
    model = load_model(tmp_path / "run", device="cpu")
    assert model.config.label_head and torch.equal(model.embedding_layer.label_head.weight, heads[1])
    with pytest.raises(KitError, match="label_weight must be >= 0"):
        train_run(load_profile("smoke", overrides={"train.label_weight": -1.0}), tmp_path / "bad",
                  cache_dir=smoke.cache, tokenizer_dir=smoke.tokenizer, max_steps=1, progress=False)
    unlabelled = tmp_path / "cache"  # a dataset without a label table (CTRG-Chest-548K has none)
    shutil.copytree(smoke.cache, unlabelled, ignore=shutil.ignore_patterns("vit_features"))
    manifest = json.loads((unlabelled / "manifest.json").read_text())
    for case in manifest["cases"]:
        case["labels"] = {}
    (unlabelled / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KitError, match="needs the dataset's label table"):
        train_run(profile, tmp_path / "unlabelled", cache_dir=unlabelled, tokenizer_dir=smoke.tokenizer,
                  max_steps=1, progress=False)
