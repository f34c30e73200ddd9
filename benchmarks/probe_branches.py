"""Which branch does the LLM read a finding from: the region's texture tokens or its geometry token?
(issue 25; validation by default)

    python benchmarks/probe_branches.py --run outputs/demo/runs/full --cache outputs/demo/cache \
        [--split validation] [--labels "Cardiomegaly,Consolidation"] [--json FILE]

The instrument's *used* score (`metrics.image_use`: the teacher-forced log-odds of a label's sentences over
the region's normal sentences, right after "The region i is <organ>:") with the case's own region vectors, and
its control with a donor case's, split by branch: the donor's texture tensors alone (`region_feats` /
`region_images`: the frozen ViT's features or the crop), its mask alone (`region_masks`: the geometry branch),
or both (the instrument's control). A label read from the geometry token drops to chance when the mask is
swapped and keeps its own-vector AUC when only the texture is; a label read from the texture, the reverse.
Beside them, the instrument's probes on each branch's spliced vectors (`carried_texture_auc`,
`carried_geometry_auc`: fit on train cases). Same donors as the instrument (seed 0, three shifts). Results:
benchmarks/RESULTS.md ("Which branch the LLM reads").
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.infer.generate import load_model
from reg2rg_lib.metrics.image_use import BENCHMARK_LABELS, image_use_table

BRANCHES = {"texture": ("region_feats", "region_images"), "geometry": ("region_masks",)}


def branch_table(run: str, cache_dir: str, split: str, labels: list[str]) -> list[dict]:
    """One row per label: the instrument's crop / carried columns, used, and the control AUC for each swap."""
    model, cache = load_model(run), load_cache(cache_dir)
    table = image_use_table(model, cache, split, labels=labels, progress=True)  # own, both swapped, probes
    rows = {r.label: {"label": r.label, "region": r.region, "crop": r.crop_auc, "carried": r.carried_auc,
                      "carried_texture": r.carried_texture_auc, "carried_geometry": r.carried_geometry_auc,
                      "used": r.used_auc, "swap_both": r.control_auc} for r in table.itertuples()}
    for branch, keys in BRANCHES.items():  # the same donors (the instrument's seed), one branch swapped
        swapped = image_use_table(model, cache, split, labels=labels, probe=False, control_keys=keys,
                                  progress=True)
        for r in swapped.itertuples():
            rows[r.label][f"swap_{branch}"] = r.control_auc
            assert abs(r.used_auc - rows[r.label]["used"]) < 1e-9 or np.isnan(r.used_auc)
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run folder (as `reg2rg generate` takes)")
    ap.add_argument("--cache", required=True, help="the prep cache")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--labels", default=",".join(BENCHMARK_LABELS))
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    rows = branch_table(args.run, args.cache, args.split, [s for s in args.labels.split(",") if s])
    cols = ["crop", "carried", "carried_texture", "carried_geometry", "used", "swap_texture", "swap_geometry",
            "swap_both"]
    print(f"{'label':<36}" + "".join(f"{c:>17}" for c in cols))
    for r in rows:
        print(f"{r['label']:<36}" + "".join(f"{r.get(c, float('nan')):>17.2f}" for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
