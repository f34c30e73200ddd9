"""`reg2rg bench train-step`: one training step through the kit's path against the paper code's recipe, as a
ratio.

The same tiny model and batch go through the kit's path (dynamic padding, `masked_scatter` splice, cached
frozen-ViT features) and through the paper code's recipe (every sample padded to 2048 tokens, the visual
tokens spliced by multiplying a one-hot matrix over the extended vocabulary with the embedding table, the
frozen ViT recomputed at every step). Both start from the same weights, so their first losses must agree.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from reg2rg_lib.bench.common import bench_inputs, common_flags, report
from reg2rg_lib.env.doctor import machine
from reg2rg_lib.errors import KitError

RECIPE_PAD = 2048  # the paper's code pads every sample to this many tokens


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-step", help="training step: the kit's path vs the paper's recipe (samples/s, ratio)"
    )
    common_flags(p)
    p.add_argument("--batch-size", type=int, default=4, help="samples per step (default 4)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per path after one warm-up (default 3)")
    p.set_defaults(func=_train_step)


def recipe_embeddings(model: Any, input_ids: torch.Tensor, **visual: Any) -> torch.Tensor:
    """The paper code's splice: per sample, one-hot(ids over [LLM table; structure rows; that sample's visual
    tokens]) @ that table. Equal in value to `Reg2RG.embed_inputs`, at O(L x (V + n)) cost per sample."""
    from reg2rg_lib.model.prompt import GEOMETRY, GLOBAL, STRUCT, TEXTURE
    from reg2rg_lib.model.reg2rg import KIND_CODES

    el, device = model.embedding_layer, model.device
    input_ids = input_ids.to(device)
    weight = model.lang_model.get_input_embeddings().weight  # (V, D)
    tokens = model.visual_tokens(**visual)  # kind -> (n, D) in prompt order over the whole batch
    kinds = model.token_kind[input_ids]  # (B, L)
    per_kind = {}  # kind -> the batch's tokens split per sample
    for kind, code in ((GLOBAL, KIND_CODES[GLOBAL]), (TEXTURE, KIND_CODES[TEXTURE]),
                       (GEOMETRY, KIND_CODES[GEOMETRY])):
        if kind in tokens:
            counts = (kinds == code).sum(1).tolist()
            per_kind[code] = list(tokens[kind].split(counts))
    rows = []
    for b in range(input_ids.shape[0]):
        ids, kb = input_ids[b], kinds[b]
        table = [weight, el.struct_table.to(weight.dtype)]  # (V, D), (4, D)
        remap = ids.clone()
        struct = kb == KIND_CODES[STRUCT]
        remap[struct] = weight.shape[0] + model.struct_index[ids[struct]]
        offset = weight.shape[0] + 4
        for code, chunks in per_kind.items():
            where = (kb == code).nonzero().squeeze(1)
            remap[where] = offset + torch.arange(len(where), device=device)
            table.append(chunks[b].to(weight.dtype))
            offset += len(where)
        full = torch.cat(table)  # (V + 4 + n_b, D)
        onehot = torch.nn.functional.one_hot(remap, full.shape[0]).to(weight.dtype)  # (L, V + 4 + n_b)
        rows.append(onehot @ full)  # (L, D)
    return torch.stack(rows)  # (B, L, D)


def pad_to(batch: dict[str, Any], length: int) -> dict[str, Any]:
    """Right-pad input_ids / attention_mask / labels to `length` (the recipe's fixed 2048)."""
    out = dict(batch)
    extra = length - batch["input_ids"].shape[1]
    if extra < 0:
        raise KitError(f"a sample has {batch['input_ids'].shape[1]} tokens, more than the recipe's {length}")
    pad = torch.nn.functional.pad
    out["input_ids"] = pad(batch["input_ids"], (0, extra), value=0)
    out["attention_mask"] = pad(batch["attention_mask"], (0, extra), value=0)
    out["labels"] = pad(batch["labels"], (0, extra), value=-100)
    return out


def train_step_bench(model: Any, kit_batch: dict[str, Any], recipe_batch: dict[str, Any], steps: int = 3,
                     lr: float = 1e-4) -> dict[str, Any]:
    """Time `steps` AdamW steps of each path (after one warm-up) on copies of `model`; compare the first
    losses."""
    from reg2rg_lib.samples.collate import VISUAL_KEYS, model_inputs

    def kit_loss(m: Any) -> torch.Tensor:
        return m(**model_inputs(kit_batch)).loss

    def recipe_loss(m: Any) -> torch.Tensor:
        visual = {k: recipe_batch[k] for k in VISUAL_KEYS if k in recipe_batch}
        embeds = recipe_embeddings(m, recipe_batch["input_ids"], **visual)
        return m.lang_model(inputs_embeds=embeds, attention_mask=recipe_batch["attention_mask"],
                            labels=recipe_batch["labels"]).loss

    result: dict[str, Any] = {}
    n = kit_batch["input_ids"].shape[0]
    for name, loss_fn in (("kit", kit_loss), ("recipe", recipe_loss)):
        m = copy.deepcopy(model).train()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            loss = loss_fn(m)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i == 0:
                result[f"{name}_loss"] = loss.item()  # from the shared initial weights
            else:
                times.append(time.perf_counter() - t0)
        result[f"{name}_step_s"] = sorted(times)[len(times) // 2]
        result[f"{name}_samples_per_s"] = n / result[f"{name}_step_s"]
    result["speedup_vs_recipe"] = result["kit_samples_per_s"] / result["recipe_samples_per_s"]
    result["loss_rel_diff"] = abs(result["kit_loss"] - result["recipe_loss"]) / abs(result["recipe_loss"])
    return result


def _train_step(args: argparse.Namespace) -> int:
    from reg2rg_lib.model import Reg2RG, Reg2RGConfig
    from reg2rg_lib.samples.collate import Collator
    from reg2rg_lib.samples.dataset import ReportDataset
    from reg2rg_lib.samples.features import feature_cache_for, set_train_statistics, use_feature_cache
    from reg2rg_lib.train.loop import seed_everything

    with tempfile.TemporaryDirectory(prefix="reg2rg-bench-") as tmp:
        profile, cache, tok, where = bench_inputs(args.profile, args.out, Path(tmp))
        cfg = Reg2RGConfig.from_profile(profile)
        seed_everything(0)
        model = Reg2RG(cfg, tok)
        names = [r.name for r in cache.cases("train")][: args.batch_size]
        # the kit's path: cached features whenever the model has a ViT to cache (this bench measures them)
        features = (
            feature_cache_for(model, cache, names, progress=False) if use_feature_cache(model, True) else None
        )
        if features is not None:  # vision_standardize: these cases' statistics (timing does not need more)
            set_train_statistics(model, features, names)
        kit_ds = ReportDataset(cache, "train", tok, cfg, features=features, seed=0, names=names)
        raw_ds = ReportDataset(cache, "train", tok, cfg, features=None, seed=0, names=names)
        collate = Collator(tok.pad_token_id)
        kit_batch = collate([kit_ds[i] for i in range(len(kit_ds))])
        recipe_batch = pad_to(collate([raw_ds[i] for i in range(len(raw_ds))]), RECIPE_PAD)
        figures = {"profile": profile.name, "inputs": where, "batch_size": len(names),
                   "kit_tokens": int(kit_batch["input_ids"].shape[1]), "recipe_tokens": RECIPE_PAD}
        figures.update(train_step_bench(model, kit_batch, recipe_batch, steps=args.steps))
    figures.update(machine())
    return report(figures, args.json)
