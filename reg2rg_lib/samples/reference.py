"""Image-contrastive decoding's reference inputs: each organ's average image over the train cases.

A small LLM trained from scratch ranks cases by a finding correctly (the instrument's *used* AUC) and still
writes the normal sentence for most positives: the language prior outweighs the image. Image-contrastive
greedy search (`generate.image_contrast`, `infer.decoder`) scores each next token with the case's own inputs
and with *reference inputs*, every region replaced by its organ's average over the train cases (the average
ViT features, the average mask coverage, the average whole-CT features). It writes the token that the case's
own image makes more likely than the average image does, among the tokens greedy search finds plausible.
Where the image says nothing the two agree and greedy's token stays.

The reference is a property of the training data, so `train.run` stores it in every saved model folder
(`reference_inputs.safetensors`) when the profile decodes with a contrast; for a model saved without it,
`reference_for` computes it from the prep cache's train split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from reg2rg_lib.errors import KitError
from reg2rg_lib.samples.collate import VISUAL_KEYS

logger = logging.getLogger(__name__)

#: The key of a region tensor's reference: "<tensor key>/<organ>"; global tensors keep their own key.
SEPARATOR = "/"


def _is_global(key: str) -> bool:
    return key.startswith("global")


Case = tuple[Sequence[str], Mapping[str, torch.Tensor]]


def reference_inputs(cases: Iterable[Case]) -> dict[str, torch.Tensor]:
    """The average of each visual tensor over `cases`, (regions, tensors) pairs such as
    `ReportDataset.case_tensors` gives: per organ for region tensors (row j belongs to regions[j]), over the
    cases for global ones. Float32, on the CPU."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def add(key: str, value: torch.Tensor) -> None:
        value = value.detach().float().cpu()
        sums[key] = sums[key] + value if key in sums else value.clone()
        counts[key] = counts.get(key, 0) + 1

    for regions, tensors in cases:
        for key in VISUAL_KEYS:
            value = tensors.get(key)
            if value is None:
                continue
            if _is_global(key):
                add(key, value)
            else:
                for row, organ in enumerate(regions):
                    add(f"{key}{SEPARATOR}{organ}", value[row])
    if not sums:
        raise KitError("no visual tensors to average: the reference needs cases with images or features")
    return {key: total / counts[key] for key, total in sums.items()}


def with_reference(item: Mapping[str, Any], reference: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """`item` with every visual tensor replaced by the reference (its organs' averages, in the item's region
    order); the prompt and everything else unchanged."""
    out = dict(item)
    for key in VISUAL_KEYS:
        value = item.get(key)
        if value is None:
            continue
        if _is_global(key):
            wanted = [key]
        else:
            wanted = [f"{key}{SEPARATOR}{organ}" for organ in item["sample"].regions]
        missing = [w for w in wanted if w not in reference]
        if missing:
            raise KitError(f"case {item.get('name', '?')}: the model's reference inputs lack {missing[0]!r} "
                           "(made from other inputs); delete its reference_inputs.safetensors to recompute")
        ref = [reference[w] for w in wanted]
        stacked = ref[0] if _is_global(key) else torch.stack(ref)
        out[key] = stacked.to(dtype=value.dtype, device=value.device)
        if out[key].shape != value.shape:
            raise KitError(f"case {item.get('name', '?')}: {key} is {tuple(value.shape)}, the reference "
                           f"{tuple(out[key].shape)}: a model trained at another image size")
    return out


def reference_for(model: Any, dataset_for_train: Any | None) -> dict[str, torch.Tensor]:
    """The model's reference inputs (`model.reference_inputs`, read from its folder), else computed from
    `dataset_for_train` (a `ReportDataset` of the train split with the generated split's feature setting)."""
    if getattr(model, "reference_inputs", None):
        return model.reference_inputs
    if dataset_for_train is None:
        raise KitError("image-contrastive decoding needs the model's reference inputs: its folder has no "
                       "reference_inputs.safetensors and no train split is at hand to compute them; pass "
                       "--image-contrast 0 (plain greedy; the profile's generate.image_contrast) or "
                       "generate from the profile's prep cache")
    logger.info(f"[generate] reference inputs: each organ's average over {len(dataset_for_train)} train "
                "cases")
    model.reference_inputs = reference_inputs(dataset_for_train.case_tensors(i)
                                              for i in range(len(dataset_for_train)))
    return model.reference_inputs
