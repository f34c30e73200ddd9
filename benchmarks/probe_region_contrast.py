"""Would amplifying a region's own token contrast give the LLM more to read? (issue 25; train cases)

    python benchmarks/probe_region_contrast.py --out outputs/demo [--region lung] [--contrast 0 1 3]

The frozen ViT's cached features of one region of every train case (`<out>/cache/vit_features/<key>`,
written when a `vision_standardize` model trained on that cache), standardised with the train split's
statistics as the model does (`samples.features.feature_statistics`), then each variant: as shipped (c = 0),
the region's token contrast amplified, x -> m + (1 + c)(x - m) with m the region's mean token, and the region
mean removed (`centred`); then the Perceiver's per-token LayerNorm (without its affine part). Printed per
variant: the share of the flattened vector that differs between cases (norm of the per-dimension s.d. over
cases / mean norm), and each label's separation along the positive-negative mean difference (in-sample d',
an upper bound of what a linear read-out finds). Results: benchmarks/RESULTS.md (the paragraph after
"Re-reference after every sentence on fresh validation seeds").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.samples.features import FeatureCache, feature_statistics

LABELS = ("Atelectasis", "Consolidation", "Emphysema", "Lung opacity")


def feature_cache(out: Path, key: str | None) -> FeatureCache:
    root = out / "cache" / "vit_features"
    keys = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if key is None and len(keys) == 1:
        key = keys[0]
    if key not in keys:
        found = ", ".join(keys) or "none (train a model on this cache first)"
        raise KitError(f"{root}: pass --key, one of the frozen-ViT feature caches found: {found}")
    return FeatureCache(root, key)


def variant(x: torch.Tensor, c: float | None) -> torch.Tensor:
    """(T, D) standardised tokens -> the variant (c None: centred) after a per-token LayerNorm."""
    m = x.mean(0, keepdim=True)
    x = x - m if c is None else m + (1 + c) * (x - m)
    return F.layer_norm(x, x.shape[-1:])


def separation(flat: torch.Tensor, y: np.ndarray) -> float:
    a, b = flat[torch.as_tensor(y == 1)], flat[torch.as_tensor(y == 0)]
    w = a.mean(0) - b.mean(0)
    pa, pb = a @ w, b @ w
    return float((pa.mean() - pb.mean()) / torch.sqrt(0.5 * (pa.var() + pb.var())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/demo"),
                    help="a profile folder (notebooks 01-03 ran)")
    ap.add_argument("--key", help="the feature cache (a folder of cache/vit_features) when there are several")
    ap.add_argument("--region", default="lung")
    ap.add_argument("--contrast", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    args = ap.parse_args()
    cache, fc = load_cache(args.out / "cache"), feature_cache(args.out, args.key)
    train = [r for r in cache.cases("train") if args.region in r.regions]
    mean, sd, _ = feature_statistics(fc, [r.name for r in cache.cases("train")])["region_feats"]
    feats = [(fc.get(r.name)["region_feats"][r.regions.index(args.region)].float() - mean) / sd
             for r in train]
    labels = pd.read_csv(args.out / "data" / "benchmark" / "train_predicted_labels.csv")
    labels.index = labels["VolumeName"].str.replace(".nii.gz", "", regex=False)
    missing = [r.name for r in train if r.name not in labels.index]
    if missing:
        raise KitError(f"{args.out}: train_predicted_labels.csv lacks train case {missing[0]} of the cache")
    y = {lab: labels.loc[[r.name for r in train], lab].to_numpy().astype(int)
         for lab in LABELS if lab in labels.columns}
    for name, c in [(f"c = {c:g}", c) for c in args.contrast] + [("centred", None)]:
        flat = torch.stack([variant(x, c) for x in feats]).reshape(len(feats), -1)
        share = float(flat.std(0).norm() / flat.norm(dim=1).mean())
        seps = ", ".join(f"{lab} d' {separation(flat, v):.2f}" for lab, v in y.items())
        print(f"{args.region} {name}: between-case share {share:.3f}; {seps}")


if __name__ == "__main__":
    try:
        main()
    except KitError as err:  # a one-line error, not a traceback
        raise SystemExit(f"probe_region_contrast: {err}") from None
