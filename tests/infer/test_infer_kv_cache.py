"""The kit's decoders (greedy, re-reference greedy, beam search) write the same tokens whatever memory their
key/value cache is allocated from. The re-reference decoder inserts region tokens at different steps in
different rows, so a row has cache columns it never writes; they are masked, but they still enter the
attention products with weight 0, and 0 * NaN is NaN: a cache taken from uninitialised memory that held
non-finite values (left there by training earlier in the same process, as in a grid worker) changed and cut
reports. The greedy and beam cases guard the other two users of the cache."""

from __future__ import annotations

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.infer.beam import beam_generate
from reg2rg_lib.infer.decoder import greedy_generate, greedy_generate_rereference
from reg2rg_lib.model import Reg2RGConfig, load_tokenizer
from reg2rg_lib.model.prompt import Sample
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset


def _nan_filled_new_empty(monkeypatch):
    """Every `Tensor.new_empty` returns NaN-filled memory (the worst that uninitialised memory can hold)."""
    original = torch.Tensor.new_empty

    def garbage(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch.Tensor, "new_empty", garbage)


def _left_padded_batch(smoke, fresh_model, rereference: bool):
    """Two test cases with different region counts (so left padding), and their targets' first 60 tokens:
    forced, they make the re-reference decoder insert regions at different steps in the two rows, which
    leaves unwritten cache columns between a row's text and the batch's last column."""
    torch.manual_seed(0)
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke")).replace(rereference=rereference)
    model = fresh_model(cfg, tok).eval()
    data = ReportDataset(cache, "test", tok, cfg, shuffle_regions=False)
    items = sorted((data[k] for k in range(len(data))), key=lambda it: len(it["sample"].regions))
    items = [items[0], items[-1]]
    assert len({len(it["sample"].regions) for it in items}) == 2  # different prompt lengths: left padding
    forced = torch.tensor([[it["sample"].input_ids[p] for p in it["sample"].target_positions][:60]
                           for it in items])
    prompts = [dict(it, sample=Sample(it["sample"].input_ids[: it["sample"].n_prompt], [], it["sample"].order,
                                      it["sample"].regions, it["sample"].prompt, "", it["sample"].n_prompt))
               for it in items]
    batch = Collator(tok.pad_token_id, padding_side="left")(prompts)
    assert bool((batch["attention_mask"] == 0).any())
    return model, {k: v for k, v in model_inputs(batch).items() if k != "labels"}, forced


@pytest.mark.parametrize("decoder", ["greedy", "rereference", "beam"])
def test_reports_do_not_depend_on_what_the_cache_memory_held(smoke, fresh_model, monkeypatch, decoder):
    model, inputs, forced = _left_padded_batch(smoke, fresh_model, rereference=decoder != "greedy")
    logits: list[torch.Tensor] = []
    run = {
        "greedy": lambda: greedy_generate(model, **inputs, max_new_tokens=40),
        "rereference": lambda: greedy_generate_rereference(
            model, **inputs, max_new_tokens=forced.shape[1] + 10, forced=forced, step_logits=logits),
        "beam": lambda: beam_generate(model, **inputs, num_beams=2, max_new_tokens=40),
    }[decoder]
    clean = run()
    _nan_filled_new_empty(monkeypatch)
    assert torch.isnan(torch.zeros(2).new_empty(3)).all()  # the garbage is really there
    clean_logits, logits[:] = list(logits), []
    assert torch.equal(run(), clean)
    assert all(torch.equal(a, b) for a, b in zip(logits, clean_logits, strict=True))
