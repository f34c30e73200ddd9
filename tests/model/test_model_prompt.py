"""Prompt, target and label construction; RRA shuffling; the token layout; the paper's released prompt
wording."""

from __future__ import annotations

import random
import re

import pandas as pd
import pytest

from reg2rg_lib.errors import KitError
from reg2rg_lib.model import (
    Reg2RGConfig,
    add_reg2rg_tokens,
    build_prompt,
    build_sample,
    build_target,
    collate,
)
from reg2rg_lib.model.prompt import GEOMETRY, GLOBAL, IGNORE_INDEX, STRUCT, TEXT, TEXTURE, token_layout
from reg2rg_lib.model.prompt import encode_prompt as prompt_token_ids

REGIONS = ["heart", "lung", "pleura", "bone"]
REPORTS = {"heart": "Heart size is normal.", "lung": "A 4 mm nodule in the right lung.",
           "pleura": "Mild effusion.", "bone": "No lesion."}


@pytest.fixture(scope="module")
def tok(tokenizer_factory, tiny_cfg):
    t = tokenizer_factory()
    add_reg2rg_tokens(t, tiny_cfg)
    return t


def test_paper_prompt_wording_equals_released_question(release_dir):
    cfg = Reg2RGConfig.preset("paper")
    questions = pd.read_csv(release_dir / "ctrg_combined_reports.csv")["Question"]
    for q in questions.iloc[:50]:
        n = len(re.findall(r"The region \d+ is <region>", q))
        assert build_prompt(n, cfg) == q


def test_paper_prompt_layout_without_reference():
    cfg = Reg2RGConfig.preset("paper")
    p = build_prompt(2, cfg)
    assert p.startswith("The global information is provided as the context: <image><image0>")
    assert "<image31></image>. The region 0 is <region><region0>" in p
    assert "<region32></region>. The region 1 is <region><region33>" in p  # 33 per region, numbered on
    assert p.count("<image") == 33 and p.count("<region") == 2 + 66
    assert p.endswith("generate an 'other report' at the end.")


def test_sample_masks_prompt_and_ends_with_eos(tok, tiny_cfg):
    s = build_sample(REGIONS, REPORTS, tok, tiny_cfg)
    assert len(s.input_ids) == len(s.labels)
    assert s.input_ids[0] == tok.bos_token_id
    assert s.labels[: s.n_prompt] == [IGNORE_INDEX] * s.n_prompt
    assert s.labels[-1] == tok.eos_token_id == s.input_ids[-1]
    assert s.labels[s.n_prompt:] == s.input_ids[s.n_prompt:]
    assert tok.decode(s.input_ids[s.n_prompt:-1]) == s.target
    assert s.target.startswith("The region 0 is heart: Heart size is normal. The region 1 is lung: A 4 mm")
    assert tok.decode(s.input_ids[1:s.n_prompt]) == s.prompt
    # inference: prompt only
    inf = build_sample(REGIONS, None, tok, tiny_cfg)
    assert inf.input_ids == s.input_ids[: s.n_prompt] and inf.labels == []


def test_token_layout_marks_every_placeholder(tok, tiny_cfg):
    s = build_sample(REGIONS, None, tok, tiny_cfg)
    layout = token_layout(s.input_ids, tok, tiny_cfg)
    n_lat = tiny_cfg.perceiver_latents
    assert layout.count(GLOBAL) == n_lat
    assert layout.count(TEXTURE) == n_lat * len(REGIONS)
    assert layout.count(GEOMETRY) == len(REGIONS)
    assert layout.count(STRUCT) == 2 + 2 * len(REGIONS)
    # each region: <region>, texture x n_lat, geometry, </region>
    first = layout.index(TEXTURE)
    assert (
        layout[first - 1] == STRUCT
        and layout[first + n_lat] == GEOMETRY
        and layout[first + n_lat + 1] == STRUCT
    )
    assert layout[-1] == TEXT


def test_shuffling_changes_order_not_content(tok, tiny_cfg):
    rng = random.Random(0)
    canonical = build_sample(REGIONS, REPORTS, tok, tiny_cfg)
    orders = set()
    for _ in range(12):
        s = build_sample(REGIONS, REPORTS, tok, tiny_cfg, rng=rng)
        orders.add(tuple(s.order))
        assert s.regions == [REGIONS[i] for i in s.order]
        assert sorted(s.order) == list(range(len(REGIONS)))
        pairs = re.findall(r"The region (\d+) is ([a-z ]+): (.*?)(?= The region \d+ is|$)", s.target)
        assert [int(i) for i, _, _ in pairs] == list(range(len(REGIONS)))
        assert {r: p for _, r, p in pairs} == REPORTS  # every paragraph once, with its own organ
        assert s.prompt == canonical.prompt  # the prompt never names the organs
    assert len(orders) > 3  # 12 draws of 4! = 24 orders: the order really changes between draws
    assert build_sample(REGIONS, REPORTS, tok, tiny_cfg).order == canonical.order == [0, 1, 2, 3]


def test_no_rra_keeps_canonical_order_without_prefixes(tok, tiny_cfg):
    cfg = tiny_cfg.replace(rra=False)
    s = build_sample(REGIONS, REPORTS, tok, cfg, rng=random.Random(0))
    assert s.order == list(range(len(REGIONS)))
    assert s.target == " ".join(REPORTS[r] for r in REGIONS)
    assert "The region" not in s.target


def test_ablation_layouts(tok, tiny_cfg):
    n_lat = tiny_cfg.perceiver_latents
    for changes, per_region, n_global in [(dict(decoupled=False), n_lat, n_lat),
                                          (dict(use_geometry=False, use_global=False), n_lat, 0),
                                          (dict(use_texture=False), 1, n_lat)]:
        cfg = tiny_cfg.replace(**changes)
        layout = token_layout(build_sample(REGIONS, None, tok, cfg).input_ids, tok, cfg)
        assert layout.count(GLOBAL) == n_global
        assert layout.count(TEXTURE) + layout.count(GEOMETRY) == per_region * len(REGIONS)
    assert "global information" not in build_prompt(2, tiny_cfg.replace(use_global=False))


def test_target_template_and_missing_paragraph(tiny_cfg):
    t = build_target(["lung", "heart"], {"lung": "  Clear\n lungs. "}, tiny_cfg)
    assert t == "The region 0 is lung: Clear lungs. The region 1 is heart: "


def test_collate_pads_left_and_right(tok, tiny_cfg):
    a = build_sample(REGIONS, REPORTS, tok, tiny_cfg)
    b = build_sample(["lung"], {"lung": "Clear."}, tok, tiny_cfg)
    right = collate([a, b], tok.pad_token_id)
    left = collate([a, b], tok.pad_token_id, padding_side="left")
    n = len(b.input_ids)
    assert right["input_ids"][1, :n].tolist() == b.input_ids and right["attention_mask"][1, n:].sum() == 0
    assert left["input_ids"][1, -n:].tolist() == b.input_ids and left["attention_mask"][1, :-n].sum() == 0
    assert (right["labels"][1, n:] == IGNORE_INDEX).all()
    assert right["labels"][0].tolist() == a.labels


def test_too_many_regions_or_missing_tokens_are_errors(tokenizer_factory, tiny_cfg):
    with pytest.raises(KitError, match="1..10 regions"):
        build_prompt(11, tiny_cfg)
    with pytest.raises(KitError, match="add_reg2rg_tokens"):
        build_sample(REGIONS, None, tokenizer_factory(), tiny_cfg)


def test_add_tokens_is_idempotent(tokenizer_factory, tiny_cfg):
    t = tokenizer_factory()
    base = len(t)
    added = add_reg2rg_tokens(t, tiny_cfg)
    assert added == 4 + tiny_cfg.perceiver_latents + 10 * (tiny_cfg.perceiver_latents + 1)
    assert add_reg2rg_tokens(t, tiny_cfg) == 0 and len(t) == base + added
    assert t.convert_tokens_to_ids("<image>") == base  # appended after the base vocabulary
    # <region1> must not swallow the prefix of <region10>
    ids = t("<region10><region1>", add_special_tokens=False)["input_ids"]
    assert t.convert_ids_to_tokens(ids) == ["<region10>", "<region1>"]


def test_prompt_ids_follow_the_tokenizer_not_a_stale_cache(tokenizer_factory, tiny_cfg):
    """The prompt's token ids are cached per tokenizer object and vocabulary size: a tokenizer that gains the
    placeholders after a first prompt was encoded, or a new tokenizer at a freed one's address, never gets
    another vocabulary's ids."""
    t = tokenizer_factory()
    prompt = build_prompt(len(REGIONS), tiny_cfg)
    before = prompt_token_ids(t, prompt)
    add_reg2rg_tokens(t, tiny_cfg)
    after = prompt_token_ids(t, prompt)
    assert after != before and after == tuple(t(prompt, add_special_tokens=False)["input_ids"])
    for _ in range(5):  # fresh tokenizers, some at recycled addresses: each encodes with its own vocabulary
        fresh = tokenizer_factory()
        assert prompt_token_ids(fresh, prompt) == before
        del fresh
