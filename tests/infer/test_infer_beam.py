"""Beam search in the kit's decoder (`infer.beam.beam_generate`): one beam is greedy search, token for token,
with and without re-reference; wider beams return the most probable hypothesis they kept."""

from __future__ import annotations

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.infer.beam import beam_generate
from reg2rg_lib.infer.decoder import greedy_generate, greedy_generate_rereference
from reg2rg_lib.model import Reg2RGConfig, load_tokenizer
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset


def _setup(smoke, fresh_model, rereference: bool):
    torch.manual_seed(0)
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke")).replace(rereference=rereference)
    model = fresh_model(cfg, tok).eval()
    data = ReportDataset(cache, "train", tok, cfg, shuffle_regions=False, with_targets=False)
    batch = Collator(tok.pad_token_id, padding_side="left")([data[i] for i in range(3)])
    return model, {k: v for k, v in model_inputs(batch).items() if k != "labels"}




@pytest.mark.parametrize("rereference", [False, True])
def test_one_beam_is_greedy_search(smoke, fresh_model, rereference):
    model, inputs = _setup(smoke, fresh_model, rereference)
    greedy = greedy_generate_rereference if rereference else greedy_generate
    want = greedy(model, **inputs, max_new_tokens=40)
    got = beam_generate(model, **inputs, num_beams=1, max_new_tokens=40)
    assert torch.equal(got, want)


def test_num_beams_below_one_is_refused(smoke, fresh_model):
    model, inputs = _setup(smoke, fresh_model, False)
    with pytest.raises(KitError, match="num_beams"):
        beam_generate(model, **inputs, num_beams=0)
