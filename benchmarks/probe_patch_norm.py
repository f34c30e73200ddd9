"""Where are the lung findings lost? Per-label probes on the texture crops, with and without the ViT's patch
LayerNorm (issue 25; validation only).

    python benchmarks/probe_patch_norm.py [--out outputs/demo] [--seed 0] [--window LO,HI]

For each CT-RATE label the embedded benchmark inserts, the texture crop of the region that reports it (the
prep cache's, as the model reads it: masked, cropped, windowed to [-1000, 200] HU, area-resized to the
profile's size) is read three ways, each probed by the instrument's probe (`metrics.image_use.probe_auc`: fit
on the train cases, AUC on the validation cases):

- **crop**: the instrument's model-free read-out (`metrics.crop_readout.crop_features`: the region's
  intensity histogram, quantiles, max, mean, std, voxel count and counts near the window's top);
- **ViT**: a frozen random ViT3D of the profile's size (seed `--seed`), its tokens mean-pooled (as the
  instrument's *carried* averages the texture tokens);
- **ViT, no patch LN**: the same weights with the LayerNorm over each patch's raw values replaced by an
  identity (`ViT3D(patch_norm=False)`, profile key `model.vision_patch_norm`).

`--window LO,HI` rebuilds the crops from the benchmark volumes with that HU window instead of the paper's
(`case_tensors.prepare_case`, the kit's preprocessing; below LO reads as the background, so with a window
above soft tissue only the bright voxels count as the region's). The test split is never read. Results:
benchmarks/RESULTS.md ("The ViT's patch LayerNorm").
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from torch import nn

from reg2rg_lib.data.case_tensors import prepare_case
from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.params import PrepParams
from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.metrics.crop_readout import crop_features
from reg2rg_lib.metrics.image_use import LABEL_FINDINGS, label_region, probe_auc
from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.vit3d import ViT3D
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import load_profile

SPLITS = ("train", "validation")
READS = ("crop", "ViT", "ViT, no patch LN")


def encoders(profile: str, seed: int) -> dict[str, ViT3D]:
    cfg = Reg2RGConfig.from_profile(load_profile(profile))
    torch.manual_seed(seed)
    vit = ViT3D(cfg.image_size, cfg.vit_patch, cfg.vit_dim, cfg.vit_depth, cfg.vit_heads, cfg.vit_dim_head,
                cfg.vit_mlp, cfg.in_channels, cfg.vit_pos_rows).eval()
    no_norm = copy.deepcopy(vit)
    no_norm.to_patch_embedding[1] = nn.Identity()
    return {"ViT": vit, "ViT, no patch LN": no_norm}


def read_split(cache, split: str, vits: dict[str, ViT3D], rebuild=None
               ) -> list[tuple[dict[str, int], dict[str, dict]]]:
    """Per case: (labels, {region: {read: features}}); `rebuild(record)`, when given, makes the texture crops
    (another window) instead of reading the prep cache's."""
    rows = []
    for record in cache.cases(split):
        texture = rebuild(record) if rebuild else cache.load(record.name, ["texture"])["texture"]
        per_region = {region: {"crop": crop_features(texture[i])} for i, region in enumerate(record.regions)}
        with torch.no_grad():
            for name, vit in vits.items():
                pooled = vit(texture.unsqueeze(1)).mean(1).numpy()
                for i, region in enumerate(record.regions):
                    per_region[region][name] = pooled[i]
        rows.append((record.labels, per_region))
    return rows


def table(data: dict[str, list], labels: list[str]) -> list[dict[str, object]]:
    out = []
    for label in labels:
        region = label_region(label)
        row: dict[str, object] = {"label": label, "region": region}
        for read in READS:
            xy = {}
            for split in SPLITS:
                pairs = [(f[region][read], lab[label]) for lab, f in data[split] if region in f]
                xy[split] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
            row["positives"] = f"{int(xy['validation'][1].sum())} / {len(xy['validation'][1])}"
            row[read] = probe_auc(*xy["train"], *xy["validation"])[0]
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/demo", help="a profile run's folder (its cache/ is read)")
    ap.add_argument("--profile", default="demo", help="the profile whose ViT size is built")
    ap.add_argument("--seed", type=int, default=0, help="the random ViT's seed")
    ap.add_argument("--window", help="LO,HI: rebuild the crops with this HU window (default: the cache's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    paths = RunPaths(args.out)
    cache = load_cache(paths.cache)
    vits = encoders(args.profile, args.seed)
    rebuild = None
    if args.window:
        lo, hi = (float(v) for v in args.window.split(","))
        size = tuple(load_profile(args.profile).data.image_size)
        params = PrepParams(image_size=size, hu_min=lo, hu_max=hi, centre=(lo + hi) / 2, scale=(hi - lo) / 2)
        entries = {e.name: e for e in index_dataset(paths.data).cases}

        def rebuild(record):
            case = prepare_case(entries[record.name], params)
            if case.regions != record.regions:
                raise SystemExit(f"{record.name}: regions {case.regions}, the cache has {record.regions}")
            return case.tensors["texture"]
    data = {split: read_split(cache, split, vits, rebuild) for split in SPLITS}
    print("| label | region | validation positives | " + " | ".join(READS) + " |")
    print("|---|---|---|" + "---|" * len(READS))
    for row in table(data, list(LABEL_FINDINGS)):
        cells = " | ".join("-" if np.isnan(row[r]) else f"{row[r]:.2f}" for r in READS)
        print(f"| {row['label']} | {row['region']} | {row['positives']} | {cells} |")


if __name__ == "__main__":
    main()
