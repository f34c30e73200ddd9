"""`reg2rg synth` (the embedded benchmark) and `reg2rg prepare` (the paper's preprocessing, cached)."""

from __future__ import annotations

import argparse

from reg2rg_lib.errors import KitError
from reg2rg_lib.profiles import load_profile


def _shape(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three sizes like 128,128,32, got {text!r}")
    return parts[0], parts[1], parts[2]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the embedded benchmark (a real CT -> N patients) in the RadGenome layout")
    p.add_argument("--out", required=True, help="dataset folder to write (RadGenome-ChestCT layout)")
    p.add_argument("--profile", default="demo", help="smoke | demo | paper: default case counts, grid, workers")
    p.add_argument("--cases", type=int, default=None,
                   help="total number of cases (split 4:1 train:test); default: the profile's counts")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the profile's data.synth_seed)")
    p.add_argument("--shape", type=_shape, default=None, help="volume grid, e.g. 128,128,32 (default: profile)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the profile's data.workers)")
    p.add_argument("--manifest", default=None, help="manifest path (default: OUT/manifest.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)

    p = sub.add_parser("prepare", help="preprocess a RadGenome-layout dataset once per case into a tensor cache")
    p.add_argument("--data", required=True, help="dataset folder (RadGenome-ChestCT layout, real or embedded)")
    p.add_argument("--out", required=True, help="cache folder (manifest.json + cases/<name>.safetensors)")
    p.add_argument("--profile", default="demo", help="smoke | demo | paper: sets image_size (default demo)")
    p.add_argument("--masks", default=None, help="folder holding the seg_<name>/ mask folders (default: DATA)")
    p.add_argument("--format", default="radgenome", choices=["radgenome", "ctrg"],
                   help="radgenome (default) or ctrg: CTRG-Chest-548K in the same layout, with 'other report' blocks")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the profile's data.workers)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)


def split_counts(total: int) -> tuple[int, int]:
    """A 4:1 train:test split of `total` cases, at least one of each when total >= 2."""
    n_test = max(1, round(total / 5)) if total >= 2 else 0
    return total - n_test, n_test


def _synth(args: argparse.Namespace) -> int:
    # each handler imports its stage when it runs, so `reg2rg --help` stays fast
    from reg2rg_lib.data.synth.build import synthesize

    prof = load_profile(args.profile).data
    if args.cases is not None:
        if args.cases < 1:
            raise KitError(f"--cases must be at least 1, got {args.cases}")
        n_train, n_test = split_counts(args.cases)
    else:
        if prof.cases_train is None:
            raise KitError(f"profile {args.profile!r} uses a real dataset; pass --cases N for a synthetic one")
        n_train, n_test = int(prof.cases_train), int(prof.cases_test)
    man = synthesize(
        args.out, n_train, n_test,
        seed=prof.synth_seed if args.seed is None else args.seed,
        shape=args.shape or prof.synth_shape,
        workers=prof.workers if args.workers is None else args.workers,
        manifest=args.manifest, progress=not args.quiet,
    )
    print(f"[synth] {man['splits'].get('train', 0)} train + {man['splits'].get('test', 0)} test cases -> {man['root']}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from reg2rg_lib.data.prep import PrepParams, prepare

    prof = load_profile(args.profile)
    cache = prepare(
        args.data, args.out, PrepParams.from_profile(prof.data),
        workers=prof.data.workers if args.workers is None else args.workers,
        mask_root=args.masks, progress=not args.quiet, dataset=args.format,
    )
    c = cache.manifest["counts"]
    print(f"[prepare] {c['train']} train + {c['test']} test cases ({c['computed']} computed, {c['reused']} reused, "
          f"{c['skipped']} skipped item(s)) -> {cache.root}")
    for s in cache.skipped[:5]:
        print(f"  skipped {s['item']}: {s['reason']}")
    if len(cache.skipped) > 5:
        print(f"  ... {len(cache.skipped) - 5} more in {cache.root / 'manifest.json'}")
    return 0
