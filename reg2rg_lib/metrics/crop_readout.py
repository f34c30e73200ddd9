"""What the input itself holds: a model-free read-out of each region's texture crop, probed per label (the
image-use instrument's `crop_auc` column).

The instrument's *carried* probe reads the vectors the model splices; when it finds nothing, the finding may
be absent from the input or lost on the way (the frozen ViT, the Perceiver). This read-out tells the two apart
without any model: the region's texture crop from the prep cache (masked, cropped, windowed, resized: what
the ViT receives), summarised by `crop_features` (the intensity histogram and quantiles of the voxels inside
the region, a few counts near the window's top, the region's size), and probed like *carried*
(`image_use.probe_auc`: fit on the train cases, AUC on the evaluated split). A label with `crop_auc` >= 0.9
and `carried_auc` < 0.9 is in the crop but not in the vectors (`lost_flag`): its loss is the encoder's, not
the input's (benchmarks/RESULTS.md, "The ViT's patch LayerNorm").

It reads intensities, not shapes: a finding told by its shape or size (cardiomegaly, a hernia) may score below
what the geometry token carries, so a low `crop_auc` says only that the intensity summary misses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

#: the crops' background value: the kit's preprocessing masks the region with -1024 HU, the window's bottom
BACKGROUND = -1.0
HIST_BINS = 32
QUANTILES = (1, 5, 25, 50, 75, 95, 99, 99.9)
TOP_LEVELS = (0.8, 0.9, 0.95, 0.99)  # counts of voxels above these (the window's top is 1.0)


def crop_features(texture: torch.Tensor | np.ndarray) -> np.ndarray:
    """One region's texture crop (values in [-1, 1], the masked background at -1) -> a fixed-length vector:
    quantiles, max, mean, std and log voxel count of the voxels inside the region, log counts above
    `TOP_LEVELS`, and the normalised `HIST_BINS`-bin histogram over [-1, 1]."""
    x = np.asarray(texture, dtype=np.float64).ravel()
    inside = x[x > BACKGROUND + 1e-3]
    if inside.size == 0:
        inside = np.array([BACKGROUND])
    quantiles = np.percentile(inside, QUANTILES)
    moments = [inside.max(), inside.mean(), inside.std(), math.log1p(inside.size)]
    above = np.log1p([(inside > level).sum() for level in TOP_LEVELS])
    hist = np.histogram(inside, bins=HIST_BINS, range=(-1.0, 1.0))[0] / inside.size
    return np.concatenate([quantiles, moments, above, hist])


def stack_features(textures: torch.Tensor) -> list[np.ndarray]:
    """`crop_features` of each region's crop in a case's texture stack (R, H, W, D)."""
    return [crop_features(t) for t in textures]


#: a read-out of a case's texture stack (R, H, W, D) -> one vector per region
Features = Callable[[torch.Tensor], Sequence[np.ndarray]]


def region_crop_features(cache: Any, records: Sequence[Any], regions: set[str],
                         features: Features = stack_features) -> list[dict[str, np.ndarray]]:
    """Per case of `records`: {region: its vector} for the regions in `regions` that the case has (one case's
    texture tensor read at a time)."""
    out = []
    for rec in records:
        if not regions & set(rec.regions):
            out.append({})
            continue
        vectors = features(cache.load(rec.name, ["texture"])["texture"])
        out.append({r: vectors[i] for i, r in enumerate(rec.regions) if r in regions})
    return out


def crop_arrays(cache: Any, split: str, label_regions: dict[str, str], features: Features = stack_features
                ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | str]:
    """{label: (x_train, y_train, x_eval, y_eval)} of the crop vectors (`features`, default the model-free
    read-out) of the label's region (`label_regions`: label -> region) over the train split's cases and
    `split`'s that have the region, or a note saying which split has no such case. The instrument probes
    them (`image_use`); benchmarks/probe_patch_norm.py passes ViT read-outs too."""
    regions = set(label_regions.values())
    train, evaluated = cache.cases("train"), cache.cases(split)
    feats = {"train": region_crop_features(cache, train, regions, features)}
    feats[split] = (feats["train"] if split == "train"
                    else region_crop_features(cache, evaluated, regions, features))
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | str] = {}
    for label, region in label_regions.items():
        arrays = []
        for name, records in (("train", train), (split, evaluated)):
            rows = [(f[region], int(r.labels.get(label, 0)))
                    for r, f in zip(records, feats[name]) if region in f]
            arrays += [np.array([x for x, _ in rows]), np.array([y for _, y in rows], int)]
        if not len(arrays[1]) or not len(arrays[3]):
            out[label] = f"crop: no {'train' if not len(arrays[1]) else split} case has the {region}"
        else:
            out[label] = tuple(arrays)
    return out
