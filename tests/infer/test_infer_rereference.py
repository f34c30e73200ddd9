"""Re-reference (`Reg2RGConfig.rereference`): region i's placeholders again after "The region i is <organ>:"
(and with `rereference_sentences` after each full stop of its paragraph), in the training target
(`model.prompt.rereference_target`), in the splice (`model.reg2rg.first_occurrence`) and in the kit's greedy
decoder (`infer.decoder.greedy_generate_rereference`), which must agree with a teacher-forced pass."""

from __future__ import annotations

import re

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.infer import decoder
from reg2rg_lib.infer.beam import beam_generate
from reg2rg_lib.infer.decoder import References, greedy_generate_rereference
from reg2rg_lib.infer.generate import DecodeSettings, decode_engine
from reg2rg_lib.model import Reg2RGConfig, load_tokenizer
from reg2rg_lib.model.prompt import IGNORE_INDEX, Sample, region_placeholder_ids
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset, name_positions


@pytest.fixture(scope="module")
def reref(smoke, fresh_model):
    torch.manual_seed(0)
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke")).replace(rereference=True)
    return cache, tok, cfg, fresh_model(cfg, tok).eval()


@pytest.fixture(scope="module")
def reref_sentences(reref, fresh_model):
    cache, tok, cfg, _ = reref
    torch.manual_seed(0)
    cfg = cfg.replace(rereference_sentences=True)
    return cache, tok, cfg, fresh_model(cfg, tok).eval()


def test_target_gets_each_regions_placeholders_after_its_head_loss_masked(reref):
    cache, tok, cfg, _ = reref
    item = ReportDataset(cache, "train", tok, cfg, shuffle_regions=True, seed=0)[0]
    s = item["sample"]
    target = s.input_ids[s.n_prompt:]
    for i in range(len(s.regions)):
        ph = region_placeholder_ids(tok, cfg, i)
        start = next(k for k in range(len(target)) if target[k:k + len(ph)] == ph)
        assert tok.decode(target[:start]).rstrip().endswith(f"The region {i} is {s.regions[i]}:")
        assert s.labels[s.n_prompt + start: s.n_prompt + start + len(ph)] == [IGNORE_INDEX] * len(ph)
    plain = tok(s.target, add_special_tokens=False)["input_ids"]
    assert [s.input_ids[p] for p in s.target_positions] == plain  # the text's own tokens, unchanged
    assert len(s.input_ids) == s.n_prompt + len(plain) + len(s.regions) * cfg.region_tokens + 1  # + eos
    names = [tok.decode([s.input_ids[p]]).strip() for p in name_positions(s, tok)]
    assert " ".join(names).split() == " ".join(s.regions).split()  # organ names found through the insertions


def test_a_repeated_placeholder_gets_its_first_occurrences_visual_token(reref):
    cache, tok, cfg, model = reref
    item = ReportDataset(cache, "train", tok, cfg, shuffle_regions=True, seed=0)[1]
    batch = Collator(tok.pad_token_id)([item])
    inputs = model_inputs(batch)
    with torch.no_grad():
        emb = model.embed_inputs(
            inputs["input_ids"],
            **{k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "labels")},
        )
    ids = inputs["input_ids"][0].tolist()
    ph = region_placeholder_ids(tok, cfg, 2)
    first, again = ids.index(ph[0]), ids.index(ph[0], ids.index(ph[0]) + 1)
    assert torch.equal(emb[0, again: again + len(ph)], emb[0, first: first + len(ph)])
    assert not torch.equal(emb[0, first], emb[0, ids.index(region_placeholder_ids(tok, cfg, 1)[0])])


def _prompt_only(item):
    s = item["sample"]
    return dict(
        item, sample=Sample(s.input_ids[: s.n_prompt], [], s.order, s.regions, s.prompt, "", s.n_prompt)
    )


def test_greedy_loop_inserts_regions_like_the_teacher_forced_pass(reref):
    """Forced tokens (the reference targets) through the decoder: every step's logits equal the teacher-forced
    pass over the same target with its re-references, for two left-padded rows with 9 and 10 regions."""
    forced = _decoder_equals_teacher_forcing(*reref, steps=80)
    for f in forced:
        assert reref[1].decode(f).count("The region") >= 2  # at least two re-references were exercised


def test_sentence_rereference_inserts_after_each_full_stop_of_a_paragraph(reref_sentences):
    cache, tok, cfg, _ = reref_sentences
    data = ReportDataset(cache, "train", tok, cfg, shuffle_regions=True, seed=0)
    s = next(it["sample"] for it in (data[k] for k in range(len(data)))  # a paragraph with two sentences
             if it["sample"].target.count(".") > len(it["sample"].regions))
    plain = tok(s.target, add_special_tokens=False)["input_ids"]
    assert [s.input_ids[p] for p in s.target_positions] == plain  # the text's own tokens, unchanged
    stops = [t for t in range(len(plain)) if tok.decode([plain[t]]).rstrip().endswith(".")]
    assert len(stops) > len(s.regions)
    per = cfg.region_tokens
    assert len(s.input_ids) == s.n_prompt + len(plain) + (len(s.regions) + len(stops)) * per + 1  # + eos
    text = tok.decode(plain)
    for t in stops:  # after each full stop: the placeholders of the region whose paragraph it ends
        at = s.target_positions[t] + 1
        heads = [int(i) for i in re.findall(r"The region (\d+) is", tok.decode(plain[: t + 1]))]
        assert s.input_ids[at: at + per] == region_placeholder_ids(tok, cfg, heads[-1])
        assert s.labels[at: at + per] == [IGNORE_INDEX] * per
    assert text.count(".") == len(stops)


def test_greedy_loop_inserts_sentence_references_like_the_teacher_forced_pass(reref_sentences):
    """As above with `rereference_sentences`: the decoder feeds region i's tokens after each full stop it
    writes inside region i's paragraph, exactly where training put them."""
    forced = _decoder_equals_teacher_forcing(*reref_sentences, steps=160)
    tok = reref_sentences[1]
    for f in forced:  # several paragraphs, and a sentence re-reference inside them
        text = tok.decode(f)
        assert text.count("The region") >= 2 and text.count(".") >= 3


def test_sentence_references_follow_the_paragraph_and_stop_at_the_cap(reref_sentences, reref, monkeypatch):
    """`References.after`, token by token over a written text: the head's region after its colon, that
    region again after each full stop of its paragraph, nothing before the first head, and no more sentence
    references than the cap (a report stuck in a loop of sentences still decodes)."""
    _, tok, _, model = reref_sentences
    text = "No head yet. The region 1 is lung: One. Two. The region 0 is heart: Three. Four. Five."
    ids = tok(text, add_special_tokens=False)["input_ids"]

    def fed(m, cap: int) -> list[int]:
        monkeypatch.setattr(decoder, "SENTENCE_REFERENCES", cap)
        refs = References(m, 1, len(m.token_kind), torch.device("cpu"))
        has, out = torch.ones(1, m.config.max_regions, dtype=torch.bool), []
        for k in range(len(ids)):
            written = torch.tensor([ids[: k + 1]])
            out += [i for _, i in refs.after(written, written[:, -1], torch.tensor([False]), has)]
        return out

    assert fed(model, 48) == [1, 1, 1, 0, 0, 0, 0]  # heads 1 and 0, and the paragraphs' five full stops
    assert fed(model, 2) == [1, 1, 1, 0]  # the cap: two sentence references, the heads still fed
    assert fed(reref[3], 48) == [1, 0]  # without rereference_sentences: the heads only


def test_beam_search_refuses_sentence_rereference(reref_sentences):
    cache, tok, cfg, model = reref_sentences
    data = ReportDataset(cache, "test", tok, cfg, shuffle_regions=False, with_targets=False)
    batch = Collator(tok.pad_token_id, padding_side="left")([data[0]])
    with pytest.raises(KitError, match="rereference_sentences"):
        beam_generate(model, **{k: v for k, v in model_inputs(batch).items() if k != "labels"}, num_beams=2)
    with pytest.raises(KitError, match="needs rereference"):
        cfg.replace(rereference=False).validate()


def _decoder_equals_teacher_forcing(cache, tok, cfg, model, steps: int) -> list[list[int]]:
    """Force the first `steps` target tokens of two test cases (the fewest and the most regions: left
    padding) through the decoder and assert its logits equal a teacher-forced pass's; the forced ids."""
    data = ReportDataset(cache, "test", tok, cfg, shuffle_regions=False)
    items = [data[k] for k in range(len(data))]
    items = sorted(items, key=lambda it: len(it["sample"].regions))[:1] + \
        sorted(items, key=lambda it: -len(it["sample"].regions))[:1]
    assert len({len(it["sample"].regions) for it in items}) == 2  # different prompt lengths: left padding
    forced = [[it["sample"].input_ids[p] for p in it["sample"].target_positions][:steps] for it in items]
    width = max(map(len, forced))
    force = torch.full((2, width), -1)
    for r, f in enumerate(forced):
        force[r, :len(f)] = torch.tensor(f)
    batch = Collator(tok.pad_token_id, padding_side="left")([_prompt_only(it) for it in items])
    logits: list[torch.Tensor] = []
    ids = greedy_generate_rereference(
        model,
        **{k: v for k, v in model_inputs(batch).items() if k != "labels"},
        max_new_tokens=width,
        step_logits=logits,
        forced=force,
    )
    assert torch.equal(ids[force >= 0], force[force >= 0])
    for r, it in enumerate(items):
        one = Collator(tok.pad_token_id)([it])
        with torch.no_grad():
            ref = model(**model_inputs(one)).logits[0]
        pos = it["sample"].target_positions
        diff = max((ref[pos[t] - 1] - logits[t][r]).abs().max().item() for t in range(len(forced[r])))
        assert diff < 1e-4, f"row {r}: the decoder's logits differ from the teacher-forced pass by {diff}"
    return forced


def test_a_head_for_a_region_not_in_the_prompt_inserts_nothing(reref):
    cache, tok, cfg, model = reref
    data = ReportDataset(cache, "test", tok, cfg, shuffle_regions=False, with_targets=False)
    item = min((data[k] for k in range(len(data))), key=lambda it: len(it["sample"].regions))
    n = len(item["sample"].regions)
    text = f"The region {n} is lung: Both lungs are clear."
    forced = tok(text, add_special_tokens=False)["input_ids"]
    batch = Collator(tok.pad_token_id, padding_side="left")([item])
    logits: list[torch.Tensor] = []
    greedy_generate_rereference(model, **{k: v for k, v in model_inputs(batch).items() if k != "labels"},
                                max_new_tokens=len(forced), step_logits=logits, forced=torch.tensor([forced]))
    plain = dict(item, sample=Sample(item["sample"].input_ids + forced, [], item["sample"].order,
                                     item["sample"].regions, "", "", item["sample"].n_prompt))
    with torch.no_grad():
        ref = model(**model_inputs(Collator(tok.pad_token_id)([plain]))).logits[0]
    p = item["sample"].n_prompt
    assert max((ref[p - 1 + t] - logits[t][0]).abs().max().item() for t in range(len(forced))) < 1e-4


def test_rereference_follows_rra_heads_and_needs_the_kit_decoder(reref):
    cache, tok, cfg, model = reref
    plain = ReportDataset(cache, "train", tok, cfg.replace(rra=False), shuffle_regions=False)[0]["sample"]
    # no heads: nothing inserted
    assert not set(plain.input_ids[plain.n_prompt:]) & set(model.reg2rg_token_ids)
    with pytest.raises(KitError, match="re-reference"):
        decode_engine(model, DecodeSettings(do_sample=True, top_k=30))
    assert decode_engine(model, DecodeSettings(), "hf") == "kit"  # greedy: the kit's loop, whatever was asked
