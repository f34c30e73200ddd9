"""`reg2rg generate`: batched generation from a trained tiny run into the released predictions CSV."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from reg2rg_lib.cli import main as cli_main
from reg2rg_lib.data.prep import PrepParams, load_cache, prepare
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.infer.decoder import fast_greedy_blocker, greedy_generate
from reg2rg_lib.infer.generate import (
    DecodeSettings,
    decode_engine,
    generate_predictions,
    generate_run,
    load_model,
)
from reg2rg_lib.infer.predictions import PRED_COLUMNS, decoding_path, read_predictions
from reg2rg_lib.model import Reg2RGConfig
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.collate import Collator, model_inputs
from reg2rg_lib.samples.dataset import ReportDataset
from reg2rg_lib.train.loop import seed_everything


def test_generate_cli_writes_the_released_format_and_resumes(smoke, trained, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    args = ["generate", "--checkpoint", str(trained), "--out", str(out), "--max-new-tokens", "8"]
    assert cli_main([*args, "--limit", "2"]) == 0  # --data defaults to the run's profile folder cache
    rows = read_predictions(out)
    assert out.read_text().splitlines()[0] == ",".join(PRED_COLUMNS)
    assert len(rows) == 2
    first = out.read_text()
    assert rows[0]["GT_combined_report"].startswith("The region 0 is ")
    assert "<region0>" in rows[0]["Question"]
    assert cli_main([*args, "--data", str(smoke.root), "--batch-size", "1"]) == 0  # the rest, resumed
    rows = read_predictions(out)
    assert len(rows) == load_profile("smoke").data.cases_test == 3
    assert out.read_text().startswith(first)  # the first rows were kept, not regenerated
    assert "greedy" in capsys.readouterr().out


def test_a_resume_with_another_decoding_is_refused_and_the_file_kept(smoke, trained, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    args = ["generate", "--checkpoint", str(trained), "--out", str(out), "--limit", "2"]
    assert cli_main([*args, "--max-new-tokens", "8"]) == 0
    written, record = out.read_text(), decoding_path(out).read_text()
    capsys.readouterr()
    assert cli_main([*args, "--max-new-tokens", "9"]) == 2  # rows of max_new_tokens=8 would be mixed in
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "another decoding" in err and "pred.decoding.json" in err
    assert out.read_text() == written and decoding_path(out).read_text() == record
    assert cli_main([*args, "--max-new-tokens", "8", "--batch-size", "1"]) == 0  # the same decoding resumes


# ---- the kit's greedy loop against Hugging Face generate and against batch size 1 --------------------------
def _left_padded_test_batch(model, smoke, extra_words: str = ""):
    """The smoke test cases as one left-padded batch and one by one; row i's prompt ends with the first 2i + 1
    tokens of `extra_words` (rows that differ, so that their reports differ)."""
    tok = model.tokenizer
    ds = ReportDataset(load_cache(smoke.cache), "test", tok, model.config, shuffle_regions=False,
                       with_targets=False)
    collate = Collator(tok.pad_token_id, padding_side="left")
    singles = [
        {k: v for k, v in model_inputs(collate([ds[i]])).items() if k != "labels"} for i in range(len(ds))
    ]
    words = tok(extra_words, add_special_tokens=False)["input_ids"] if extra_words else []
    for i, one in enumerate(singles):
        extra = torch.tensor([words[: 2 * i + 1]], dtype=torch.long)
        one["input_ids"] = torch.cat([one["input_ids"], extra], 1)
        one["attention_mask"] = torch.ones_like(one["input_ids"])
    width = max(one["input_ids"].shape[1] for one in singles)
    batch = {k: torch.cat([one[k] for one in singles]) for k in singles[0] if k not in ("input_ids",
                                                                                         "attention_mask")}
    batch["input_ids"] = torch.full((len(singles), width), tok.pad_token_id, dtype=torch.long)
    batch["attention_mask"] = torch.zeros(len(singles), width, dtype=torch.long)
    for i, one in enumerate(singles):
        n = one["input_ids"].shape[1]
        batch["input_ids"][i, width - n:], batch["attention_mask"][i, width - n:] = one["input_ids"][0], 1
    # prompts of different lengths: the padded path is tested
    assert bool((batch["attention_mask"] == 0).any())
    return batch, singles


def _assert_kit_equals_hf_and_single(model, batch, singles, max_new_tokens, **kwargs):
    """The kit's loop against HF generate on `batch` (every step's logits bit for bit, the tokens), with and
    without dropping finished rows, and each row's text against that row decoded alone."""
    with torch.inference_mode():
        hf = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                            return_dict_in_generate=True, **kwargs)
        logits: list[torch.Tensor] = []
        whole = greedy_generate(model, **batch, max_new_tokens=max_new_tokens, drop_finished=False,
                                step_logits=logits, **kwargs)
        assert len(logits) == len(hf.logits)
        for ours, theirs in zip(logits, hf.logits):
            assert torch.equal(ours, theirs.float())
        kit = greedy_generate(model, **batch, max_new_tokens=max_new_tokens, **kwargs)  # finished rows leave
        assert torch.equal(kit, hf.sequences) and torch.equal(whole, hf.sequences)
        texts = model.decode(kit)
        for one, text in zip(singles, texts):
            assert model.decode(greedy_generate(model, **one, max_new_tokens=max_new_tokens, **kwargs)) == [
                text
            ]
    return kit


def _staggered_end_token(ids, pad_id: int) -> int:
    """A token that one row writes before every other row (taken as the end, that row finishes first and at
    least two different rows carry on), early enough to leave steps after it."""
    rows = ids.tolist()
    for tok in sorted(set(sum(rows, [])) - {pad_id}):
        first = [row.index(tok) if tok in row else len(row) for row in rows]
        rest = {tuple(row) for row, f in zip(rows, first) if f > min(first)}
        if first.count(min(first)) == 1 and min(first) < len(rows[0]) - 2 and len(rest) >= 2:
            return tok
    raise AssertionError("no token that one row writes before the others")


def test_kit_greedy_loop_writes_hf_generate_tokens_and_batch_size_one_text(smoke, trained):
    model = load_model(trained, device="cpu").eval()
    assert fast_greedy_blocker(model) is None
    batch, singles = _left_padded_test_batch(model, smoke)
    _assert_kit_equals_hf_and_single(model, batch, singles, max_new_tokens=12)


def test_kit_greedy_loop_with_grouped_query_attention_and_rows_finishing_apart(smoke, fresh_model):
    """Key/value heads shared by several query heads (SmolLM2, LLaMA-2-70B), and reports of different lengths:
    the rows that finish leave the batch while the others carry on."""
    seed_everything(0)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke")).replace(llm_heads=4, llm_kv_heads=2)
    model = fresh_model(cfg).eval()
    assert model.llm().model.layers[0].self_attn.num_key_value_groups == 2
    batch, singles = _left_padded_test_batch(model, smoke, "the left lung shows a small nodule")
    kit = _assert_kit_equals_hf_and_single(model, batch, singles, max_new_tokens=12)
    assert len({tuple(row) for row in kit.tolist()}) > 1  # the rows write different reports
    end = _staggered_end_token(kit, model.tokenizer.pad_token_id)
    _assert_kit_equals_hf_and_single(model, batch, singles, max_new_tokens=12, eos_token_id=end)


def test_generation_engine_choice_and_identical_predictions(smoke, trained, tmp_path):
    model = load_model(trained, device="cpu")
    greedy, sampling = (
        DecodeSettings(max_new_tokens=6),
        DecodeSettings(max_new_tokens=6, do_sample=True, top_k=5),
    )
    assert decode_engine(model, greedy) == "kit" and decode_engine(model, greedy, "hf") == "hf"
    assert decode_engine(model, sampling) == "hf"  # sampling stays with HF generate
    with pytest.raises(KitError, match="sampling"):
        decode_engine(model, sampling, "kit")
    with pytest.raises(KitError, match="unknown generation engine"):
        decode_engine(model, greedy, "fast")
    gen = model.llm().generation_config
    old = gen.repetition_penalty
    gen.repetition_penalty = 1.2  # a logits processor the loop does not implement: HF generate takes over
    try:
        assert "repetition_penalty" in fast_greedy_blocker(model) and decode_engine(model, greedy) == "hf"
    finally:
        gen.repetition_penalty = old
    cache = load_cache(smoke.cache)
    texts = {}
    for engine in ("hf", "auto"):
        out = tmp_path / f"{engine}.csv"
        generate_predictions(model, cache, out, decode=dataclasses.replace(greedy, max_new_tokens=10),
                             batch_size=2, engine=engine, progress=False)
        texts[engine] = out.read_text()
        expected = "hf generate" if engine == "hf" else "kit greedy loop"
        assert json.loads(decoding_path(out).read_text())["engine"] == expected
    assert texts["hf"] == texts["auto"]


def test_kit_greedy_loop_through_lora_adapters(smoke, fresh_model):
    """The paper's LoRA on q/v: the loop calls the adapted projections (made non-zero here), as HF generate
    does."""
    seed_everything(0)
    model = fresh_model(Reg2RGConfig.from_profile(load_profile("smoke")).replace(llm_finetune="lora")).eval()
    with torch.no_grad():
        for name, p in model.lang_model.named_parameters():
            if "lora_B" in name:  # zero at initialisation: the adapters would change nothing
                p.normal_(0, 0.5)
    assert model.llm() is not model.lang_model and fast_greedy_blocker(model) is None
    batch, singles = _left_padded_test_batch(model, smoke, "the left lung shows a small nodule")
    _assert_kit_equals_hf_and_single(model, batch, singles, max_new_tokens=8)


def test_generate_run_refuses_a_cache_of_another_image_size_before_loading(smoke, trained, tmp_path):
    """The check `reg2rg generate` makes is the library's: notebook 04 and the ablation runner call
    `generate_run`."""
    other = tmp_path / "cache64"
    prepare(smoke.data, other, PrepParams(image_size=(64, 64, 16)), progress=False)
    with pytest.raises(
        BadInputError, match=r"prepared at image size \(64, 64, 16\).*trained at \(32, 32, 8\)"
    ):
        generate_run(trained, other, tmp_path / "p.csv", progress=False)
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("num_beams", [1, 2])
def test_a_model_that_computes_nan_is_refused_naming_the_cases_not_cut_short(smoke, trained, tmp_path,
                                                                              num_beams):
    """NaN logits make an argmax pick an arbitrary token, often the end of the report: the loop refuses them,
    and generation names the batch's cases instead of writing cut reports."""
    model = load_model(trained, device="cpu")
    with torch.no_grad():
        model.llm().get_output_embeddings().weight[5, 0] = float("nan")  # one vocabulary row
    out = tmp_path / "pred.csv"
    with pytest.raises(KitError, match=r"generation failed on case\(s\) .*NaN or infinite"):
        generate_predictions(model, load_cache(smoke.cache), out, batch_size=2, progress=False,
                             decode=DecodeSettings(max_new_tokens=6, num_beams=num_beams))
    assert not out.exists() or read_predictions(out) == []  # no report of the refused batch was kept
