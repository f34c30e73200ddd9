"""Which input carries the findings? Probes on validation for HU windows and crop sizes (issue 14).

    python benchmarks/probe_inputs.py [--out outputs/demo] [VARIANT ...]

For each variant the texture crops and global images of the train and validation splits are rebuilt from the
benchmark volumes with the kit's own preprocessing (`case_tensors.prepare_case`), once per HU window, the
windows stacked as channels. A frozen, randomly initialised ViT3D of the tiny preset's size (seed 0) encodes
them; logistic-regression probes on its mean-pooled tokens (`pretrain_vision.probe`: fit on train, scored on
validation) give the findings micro-F1 and the organ accuracy; a 32-bin intensity histogram per channel
(normalised by the region's voxel count) is probed the same way as a model-free read-out. The test split is
never read. Results: benchmarks/RESULTS.md.
Memory: ~1.5 GB per channel at 64x64x16, ~12 GB per channel at 128x128x32.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from reg2rg_lib.data.case_tensors import prepare_case
from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.prep import PrepParams, load_cache
from reg2rg_lib.metrics.labeler import RuleLabeler
from reg2rg_lib.model.vit3d import ViT3D
from reg2rg_lib.paths import RunPaths, default_out_dir
from reg2rg_lib.regions import REGIONS
from reg2rg_lib.train.pretrain_vision import GLOBAL_CLASS, CropSet, probe

WINDOWS = {"paper": (-1000, 200), "soft": (-160, 240), "bone": (-450, 1050), "high": (200, 3000)}
VARIANTS = {"paper_64": (["paper"], (64, 64, 16)),
            "paper_soft_bone_64": (["paper", "soft", "bone"], (64, 64, 16)),
            "paper_soft_high_64": (["paper", "soft", "high"], (64, 64, 16)),
            "paper_128": (["paper"], (128, 128, 32))}


class Histograms(torch.nn.Module):
    """(N, C, H, W, D) crops -> (N, 1, 32 C) intensity histograms of the region's voxels (`probe` pools dim
    1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = (x[:, 0].flatten(1) > -0.999).sum(1, keepdim=True).clamp_min(1)  # voxels inside the region
        feats = []
        for c in range(x.shape[1]):
            v = x[:, c].flatten(1)
            feats.append(torch.stack([torch.histc(row[row > -0.999], 32, -1, 1) for row in v]) / n)
        return torch.cat(feats, 1)[:, None]


def crops(cache, entries, split: str, windows: list[str], size) -> CropSet:
    images, organ, texts = [], [], []
    for rec in cache.cases(split):
        texture, image = [], []
        for w in windows:
            lo, hi = WINDOWS[w]
            params = PrepParams(
                image_size=size, hu_min=lo, hu_max=hi, centre=(lo + hi) / 2, scale=(hi - lo) / 2
            )
            case = prepare_case(entries[rec.name], params)
            assert case.regions == rec.regions, (rec.name, case.regions, rec.regions)
            texture.append(case.tensors["texture"])
            image.append(case.tensors["image"])
        images += [torch.stack(texture, 1), torch.stack(image, 1)]
        organ += [REGIONS.index(r) for r in rec.regions] + [GLOBAL_CLASS]
        texts += [rec.reports[r] for r in rec.regions] + [rec.report]
    labels = torch.as_tensor(RuleLabeler().label(texts).to_numpy().astype(np.float32))
    return CropSet(torch.cat(images).float(), torch.tensor(organ), labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), help=", ".join(VARIANTS))
    ap.add_argument(
        "--out", default=str(default_out_dir("demo")), help="a demo folder after `make reproduce`"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    paths = RunPaths(args.out)
    cache = load_cache(paths.cache)
    entries = {e.name: e for e in index_dataset(paths.data).cases}
    for name in args.variants:
        windows, size = VARIANTS[name]
        start = time.perf_counter()
        train, val = (crops(cache, entries, split, windows, size) for split in ("train", "validation"))
        torch.manual_seed(0)
        vit = ViT3D(size, (16, 16, 4), 96, 2, 4, 24, 192, len(windows), None)
        result = probe(vit, train, val)
        hist = probe(Histograms(), train, val)
        result.update(
            histogram_findings_micro_f1=hist["findings_micro_f1"],
            histogram_per_label_f1=hist["per_label_f1"],
            seconds=round(time.perf_counter() - start),
        )
        print(name, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
