"""`reg2rg bench` training and generation commands: their correctness checks, not their timings."""

from __future__ import annotations

import pytest
import torch

from reg2rg_lib.cli import main as cli_main


def test_recipe_splice_equals_masked_scatter(smoke_dataset):
    from reg2rg_lib.bench.train import pad_to, recipe_embeddings
    from reg2rg_lib.samples.collate import Collator

    ds, model, _ = smoke_dataset()
    batch = Collator(model.tokenizer.pad_token_id)([ds[0], ds[1]])
    visual = {k: batch[k] for k in ("global_images", "region_images", "region_masks")}
    with torch.no_grad():
        kit = model.embed_inputs(batch["input_ids"], **visual)
        recipe = recipe_embeddings(model, batch["input_ids"], **visual)
        assert torch.equal(kit, recipe)
        padded = pad_to(batch, 2048)
        assert padded["input_ids"].shape == (2, 2048) and int(padded["attention_mask"].sum()) == int(
            batch["attention_mask"].sum())
        assert recipe_embeddings(model, padded["input_ids"], **visual).shape == (2, 2048, kit.shape[-1])


def test_bench_train_step_and_generate_print_json(smoke, trained, capsys):
    import json

    assert cli_main(["bench", "train-step", "--json", "--profile", "smoke", "--out", str(smoke.root),
                     "--batch-size", "2", "--steps", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["recipe_tokens"] == 2048 and figures["kit_tokens"] < 2048
    assert figures["loss_rel_diff"] <= 1e-4  # the same weights and batch: the same loss
    assert cli_main(["bench", "generate", "--json", "--profile", "smoke", "--out", str(smoke.root),
                     "--cases", "3", "--max-new-tokens", "6", "--repeat", "3"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["model"] != "untrained" and figures["single_batch_size"] == 1
    assert figures["engine"] == "kit" and figures["feature_cache"] is True  # as `reg2rg generate` runs
    assert figures["same_text_fraction"] == 1.0  # greedy: batching changes no report
    assert figures["speedup_batched"] == figures["single_seconds"] / figures["batched_seconds"]
    assert len(figures["speedup_rounds"]) == 3  # the figures are the median round's
    assert round(figures["speedup_batched"], 3) == sorted(figures["speedup_rounds"])[1]
    assert figures["cases"] == 3 and len(figures["load_avg_1min"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_step_needs_a_gpu(capsys):
    assert cli_main(["bench", "gpu-step"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_step_code_path_runs_on_cpu_with_the_cpu_tiny_preset():
    from reg2rg_lib.bench.train import gpu_step, peak_tflops

    out = gpu_step("cpu-tiny", seq_len=300, steps=1)
    assert out["tokens_per_step"] <= 300 and out["model_tflops_per_step"] > 0
    assert peak_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
