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

import numpy as np
import torch

from reg2rg_lib.data.case_tensors import prepare_case
from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.params import PrepParams
from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.metrics.crop_readout import crop_arrays, stack_features
from reg2rg_lib.metrics.image_use import LABEL_FINDINGS, label_region, probe_auc
from reg2rg_lib.model.config import Reg2RGConfig
from reg2rg_lib.model.vit3d import ViT3D
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import load_profile


def encoders(profile: str, seed: int) -> dict[str, ViT3D]:
    """The profile's ViT3D with and without its patch LayerNorm, the same seeded weights otherwise."""
    cfg = Reg2RGConfig.from_profile(load_profile(profile))
    vits = {}
    for name, patch_norm in (("ViT", True), ("ViT, no patch LN", False)):
        torch.manual_seed(seed)
        vits[name] = ViT3D(cfg.image_size, cfg.vit_patch, cfg.vit_dim, cfg.vit_depth, cfg.vit_heads,
                           cfg.vit_dim_head, cfg.vit_mlp, cfg.in_channels, cfg.vit_pos_rows,
                           patch_norm=patch_norm).eval()
    return vits


def pooled(vit: ViT3D):
    """A case's texture stack (R, H, W, D) -> each region's mean-pooled tokens."""
    def read(textures: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return list(vit(textures.unsqueeze(1)).mean(1).numpy())
    return read


class Rebuilt:
    """The prep cache's cases with their texture crops made again with another HU window (kept in memory)."""

    def __init__(self, cache, data_dir, params: PrepParams) -> None:
        self.cache, self.params, self.made = cache, params, {}
        self.entries = {e.name: e for e in index_dataset(data_dir).cases}

    def cases(self, split=None):
        return self.cache.cases(split)

    def load(self, name, keys=None):
        if name not in self.made:
            case = prepare_case(self.entries[name], self.params)
            regions = next(r.regions for r in self.cache.cases() if r.name == name)
            if case.regions != regions:
                raise SystemExit(f"{name}: regions {case.regions}, the cache has {regions}")
            self.made[name] = case.tensors["texture"]
        return {"texture": self.made[name]}


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
    if args.window:
        lo, hi = (float(v) for v in args.window.split(","))
        size = tuple(load_profile(args.profile).data.image_size)
        cache = Rebuilt(cache, paths.data, PrepParams(image_size=size, hu_min=lo, hu_max=hi,
                                                      centre=(lo + hi) / 2, scale=(hi - lo) / 2))
    vits = encoders(args.profile, args.seed)
    reads = {"crop": stack_features, **{name: pooled(vit) for name, vit in vits.items()}}
    label_regions = {label: label_region(label) for label in LABEL_FINDINGS}
    arrays = {name: crop_arrays(cache, "validation", label_regions, read) for name, read in reads.items()}
    print("| label | region | validation positives | " + " | ".join(reads) + " |")
    print("|---|---|---|" + "---|" * len(reads))
    for label, region in label_regions.items():
        if isinstance(arrays["crop"][label], str):
            print(f"| {label} | {region} | {arrays['crop'][label]} |")
            continue
        y_eval = arrays["crop"][label][3]
        cells = " | ".join(f"{probe_auc(*arrays[name][label])[0]:.2f}" for name in reads)
        print(f"| {label} | {region} | {int(y_eval.sum())} / {len(y_eval)} | {cells} |")

if __name__ == "__main__":
    main()
