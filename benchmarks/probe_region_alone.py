"""Train the demo recipe on prompts that hold one region only, and ask whether its LLM reads that region's
image (issue 25; validation). Separates "the look-up among ten regions" from "anything before it".

    python benchmarks/probe_region_alone.py --out outputs/demo --region lung [--with heart,bone] \
        [--steps 3000] [--seed 20] [--set model.vision_patch_norm=false --set model.vision_standardize=true] \
        [--work DIR]

`--out`: a folder where notebooks 01-02 (or `reg2rg synth` + `reg2rg prepare`) have made `cache/`. The script
writes into `--work` (default: a new folder under /tmp):
- a prep cache whose cases keep only `--region` and the regions `--with` names (the other regions' rows,
  paragraphs and masks dropped; the global CT kept; cases without `--region` left out), built once per set;
- a run trained from it with the demo profile (`--set` overrides it; `--steps` replaces `train.max_steps`;
  with `model.vision_standardize` the statistics are those of this cache's train split, i.e. of the kept
  regions' crops only);
- the instrument on the validation split (`benchmarks/probe_branches.py`'s table: crop, carried on each
  branch, used, and the control with the donor's texture, mask or both swapped);
- the spread of the region's texture representation at each stage over the train cases (the frozen ViT's
  features, the Perceiver's input: those standardised when `model.vision_standardize` is on, its output, the
  tokens after `fc`): `ratio` is the norm of the per-dimension standard deviation over cases divided by the
  mean norm of a case's vector (how much of what the next stage receives differs between cases), `d'` a
  label's (`--label`) separation along the mean difference of positives and negatives, in units of the
  spread along it.
Results: benchmarks/RESULTS.md ("The lung alone").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.infer.generate import load_model
from reg2rg_lib.metrics.image_use import BENCHMARK_LABELS, label_region
from reg2rg_lib.profiles import load_profile, parse_assignments
from reg2rg_lib.samples.features import feature_cache_for
from reg2rg_lib.samples.inputs import tokenizer_from_cache
from reg2rg_lib.train.run import train_run

sys.path.insert(0, str(Path(__file__).parent))
from probe_branches import branch_table  # noqa: E402

COLUMNS = ["crop", "carried", "carried_texture", "carried_geometry", "used", "swap_texture", "swap_geometry",
           "swap_both"]


def region_cache(src: Path, dst: Path, region: str, others: tuple[str, ...] = ()) -> Path:
    """A copy of the prep cache `src` whose cases keep only `region` and `others` (those they have, in the
    cache's order); cases without `region` are left out."""
    if (dst / "manifest.json").is_file():
        return dst
    manifest = json.loads((src / "manifest.json").read_text())
    (dst / "cases").mkdir(parents=True, exist_ok=True)
    cases = []
    for case in manifest["cases"]:
        if region not in case["regions"]:
            continue
        rows = [i for i, r in enumerate(case["regions"]) if r == region or r in others]
        regions = [case["regions"][i] for i in rows]
        with safe_open(str(src / case["file"]), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        n = len(case["regions"])
        # per-region tensors have one row per region; the whole CT ("image", "full") one row
        kept = {k: (v[rows] if v.shape[0] == n and k not in ("image", "full") else v).contiguous()
                for k, v in tensors.items()}
        save_file(kept, str(dst / case["file"]), metadata={**meta, "regions": json.dumps(regions)})
        cases.append({**case, "regions": regions,
                      "reports": {r: case["reports"][r] for r in regions if r in case["reports"]}})
    manifest["cases"] = cases
    manifest["counts"] = {s: sum(c["split"] == s for c in cases) for s in ("train", "validation", "test")}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _spread(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(ratio, d') of vectors x (cases, F) for labels y (module docstring)."""
    ratio = float(np.linalg.norm(x.std(0)) / np.linalg.norm(x, axis=1).mean())
    diff = x[y == 1].mean(0) - x[y == 0].mean(0)
    p = x @ (diff / np.linalg.norm(diff))
    return ratio, float((p[y == 1].mean() - p[y == 0].mean()) / p.std())


@torch.no_grad()
def stage_spread(run: Path, cache_dir: Path, label: str, region: str) -> dict[str, tuple[float, float]]:
    """(ratio, d') of `region`'s texture at each stage, over the train cases."""
    model, cache = load_model(run), load_cache(cache_dir)
    records = cache.cases("train")
    features = feature_cache_for(model, cache, [r.name for r in records], progress=False)
    feats = torch.stack([features.get(r.name)["region_feats"][r.regions.index(region)]
                         for r in records]).float()  # (N, T, vit_dim)
    y = np.array([r.labels[label] for r in records])
    el = model.embedding_layer
    media = el.standardize("region_feats", feats)  # `model.vision_standardize`; else the features as they are
    latents = el.perceiver(media)
    tokens = el.fc(latents)
    return {
        "frozen ViT features (token mean)": _spread(feats.mean(1).double().numpy(), y),
        "Perceiver input (token mean)": _spread(media.mean(1).double().numpy(), y),
        "Perceiver output (token mean)": _spread(latents.mean(1).double().numpy(), y),
        "texture tokens after fc (all)": _spread(tokens.reshape(len(records), -1).double().numpy(), y),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the profile folder holding cache/ (notebooks 01-02)")
    ap.add_argument("--region", default="lung")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a demo profile override")
    ap.add_argument("--with", dest="others", default="",
                    help="other regions the prompts keep (comma-separated)")
    ap.add_argument("--label", help="the label of the stage table's d' (default: the region's most frequent)")
    ap.add_argument("--work", help="where the region cache and the run go (default: a new folder in /tmp)")
    args = ap.parse_args()
    out = Path(args.out)
    work = Path(args.work or tempfile.mkdtemp(prefix="region_alone_"))
    others = tuple(r for r in args.others.split(",") if r)
    name = "+".join([args.region, *others]).replace(" ", "_")
    cache_dir = region_cache(out / "cache", work / f"cache_{name}", args.region, others)
    tokenizer = out / "tokenizer"
    if not tokenizer.is_dir():  # as `reg2rg train` would train it, from the whole cache's train paragraphs
        tokenizer = work / "tokenizer"
        if not tokenizer.is_dir():
            tokenizer_from_cache(load_cache(out / "cache"), tokenizer)
    overrides = {"train.seed": args.seed, "train.max_steps": args.steps, "train.save_every": args.steps,
                 **parse_assignments(args.set)}
    tag = "_".join([name, f"s{args.seed}", f"{args.steps}"] + [s.replace("=", "-") for s in args.set])
    run = work / f"run_{tag}"
    torch.set_num_threads(1)
    train_run(load_profile("demo", overrides=overrides), run, cache_dir=cache_dir, tokenizer_dir=tokenizer,
              progress=False)
    labels = [lab for lab in BENCHMARK_LABELS if label_region(lab) in (args.region, *others)]
    rows = branch_table(str(run), str(cache_dir), "validation", labels)
    print(f"{' + '.join([args.region, *others])} alone, seed {args.seed}, {args.steps} steps, {overrides}")
    print(f"{'label':<36}" + "".join(f"{c:>17}" for c in COLUMNS))
    for r in rows:
        print(f"{r['label']:<36}" + "".join(f"{r.get(c, float('nan')):>17.2f}" for c in COLUMNS))
    train = load_cache(cache_dir).cases("train")
    own = [lab for lab in labels if label_region(lab) == args.region]
    first = args.label or max(own, key=lambda lab: sum(r.labels[lab] for r in train))
    for stage, (ratio, dprime) in stage_spread(run, cache_dir, first, args.region).items():
        print(f"{stage:<36} ratio {ratio:8.4f}   {first} d' {dprime:5.2f}")
    (run / "region_alone.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
