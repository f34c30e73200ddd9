"""Batching for training and generation: dynamic padding to the longest sample in the batch, visual tensors
packed.

The paper's code pads every sample to 2048 tokens; a tiny model's samples are a few hundred tokens long, so
padding to the batch's longest sample is most of the speed-up on a CPU (`reg2rg bench train-step` measures
it). Token padding is the model's `collate` (right padding for training, left for batched generation); this
module adds the visual inputs, concatenated sample by sample in prompt order, which is the layout
`Reg2RG.forward` expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.model import collate

#: Visual inputs of `Reg2RG.forward` / `generate`; a batch holds those the dataset produced.
VISUAL_KEYS: tuple[str, ...] = (
    "global_feats",
    "global_images",
    "region_feats",
    "region_images",
    "region_masks",
)
#: Everything in a batch that `Reg2RG.forward` takes.
MODEL_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "labels") + VISUAL_KEYS + ("region_drop",)


@dataclass(frozen=True)
class Collator:
    """`collate_fn` for a DataLoader over `ReportDataset` items (a class, so DataLoader workers can pickle
    it)."""

    pad_id: int
    padding_side: str = "right"  # "left" for generation

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = collate([it["sample"] for it in items], self.pad_id, padding_side=self.padding_side)
        # (B, L) input_ids / attention_mask / labels, L = the longest sample in this batch
        for key in VISUAL_KEYS:
            parts = [it.get(key) for it in items]
            if parts[0] is None:
                continue
            # global: B x (1, ...) -> (B, ...); regions: B x (R_i, ...) -> (sum R_i, ...), sample by sample
            # region_masks stay bool: the mask encoder casts them chunk by chunk
            batch[key] = torch.cat(parts)
        if items and items[0].get("region_drop") is not None:  # branch dropout (training): (sum R_i,) codes
            batch["region_drop"] = torch.cat([it["region_drop"] for it in items])
        # (B, L) mask of the target tokens the loss can weigh up: the organ names
        if self.padding_side == "right" and any(it.get("name_positions") for it in items):
            mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            for row, it in enumerate(items):
                mask[row, it.get("name_positions", [])] = True
            batch["name_mask"] = mask
        if items and "label_positions" in items[0]:  # train.label_weight: every kept region's targets
            batch.update(_label_batch(items, self.padding_side))
        batch["names"] = [it["name"] for it in items]
        batch["samples"] = [it["sample"] for it in items]
        return batch


def _label_batch(items: Sequence[dict[str, Any]], padding_side: str) -> dict[str, torch.Tensor]:
    """The items' `region_label_targets`, one row per region whose paragraph is in the target: `label_rows`
    (its batch row), `label_positions`, `label_targets`, `label_mask`."""
    if padding_side != "right":
        raise KitError("region label targets need right padding (their positions are the unpadded ones)")
    rows = torch.cat([torch.full((len(it["label_positions"]),), r, dtype=torch.long)
                      for r, it in enumerate(items)])
    cat = {k: torch.cat([it[k] for it in items]) for k in ("label_positions", "label_targets", "label_mask")}
    keep = cat["label_positions"] >= 0
    return {"label_rows": rows[keep], **{k: v[keep] for k, v in cat.items()}}


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `Reg2RG.forward` found in `batch`."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}
