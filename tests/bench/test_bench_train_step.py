"""`reg2rg bench train-step` (bench.train_step): the recipe's splice equals the kit's, the command's
figures."""

from __future__ import annotations

import torch

from reg2rg_lib.cli import main as cli_main


def test_recipe_splice_equals_masked_scatter(smoke_dataset):
    from reg2rg_lib.bench.train_step import pad_to, recipe_embeddings
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


def test_bench_train_step_prints_json(smoke, trained, capsys):
    import json

    assert cli_main(["bench", "train-step", "--json", "--profile", "smoke", "--out", str(smoke.root),
                     "--batch-size", "2", "--steps", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["recipe_tokens"] == 2048 and figures["kit_tokens"] < 2048
    assert figures["loss_rel_diff"] <= 1e-4  # the same weights and batch: the same loss
