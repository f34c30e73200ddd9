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
    p = sub.add_parser(
        "synth", help="write the embedded benchmark (a real CT -> N patients) in the RadGenome layout"
    )
    p.add_argument("--out", required=True, help="dataset folder to write (RadGenome-ChestCT layout)")
    p.add_argument(
        "--profile", default="demo", help="smoke | demo | paper: default case counts, grid, workers"
    )
    p.add_argument("--cases", type=int, default=None,
                   help="total number of cases (split 4:1 train:test); default: the profile's counts")
    p.add_argument(
        "--seed", type=int, default=None, help="random seed (default: the profile's data.synth_seed)"
    )
    p.add_argument(
        "--shape", type=_shape, default=None, help="volume grid, e.g. 128,128,32 (default: profile)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="processes (default: the profile's data.workers)"
    )
    p.add_argument("--manifest", default=None, help="manifest path (default: OUT/manifest.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "prepare", help="preprocess a RadGenome-layout dataset once per case into a tensor cache"
    )
    p.add_argument(
        "--data",
        default=None,
        help="dataset folder (RadGenome-ChestCT layout, real or embedded); required except with --merge",
    )
    p.add_argument("--out", required=True, help="cache folder (manifest.json + cases/<name>.safetensors)")
    p.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="prepare only the K-th of N disjoint parts (K from 1; one array job task each), then --merge",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="join the N shards' manifests in OUT into its manifest.json (after every --shard K/N)",
    )
    p.add_argument("--profile", default="demo", help="smoke | demo | paper: sets image_size (default demo)")
    p.add_argument(
        "--masks", default=None, help="folder holding the seg_<name>/ mask folders (default: DATA)"
    )
    p.add_argument(
        "--format",
        default="radgenome",
        choices=["radgenome", "ctrg"],
        help="radgenome (default) or ctrg: CTRG-Chest-548K in the same layout, with 'other report' blocks",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="processes (default: the profile's data.workers)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        shard = None
    if not sep or shard is None or not (shard[1] >= 1 and 1 <= shard[0] <= shard[1]):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 3/8, got {text!r}")
    return shard


def split_counts(total: int) -> tuple[int, int, int]:
    """(train, validation, test) for `total` cases: ~70/10/20, at least one test case when total >= 2 and one
    validation case when total >= 5."""
    n_test = max(1, round(total / 5)) if total >= 2 else 0
    n_val = max(1, round(total / 10)) if total >= 5 else 0
    return total - n_test - n_val, n_val, n_test


def _synth(args: argparse.Namespace) -> int:
    # each handler imports its stage when it runs, so `reg2rg --help` stays fast
    from reg2rg_lib.data.synth.build import synthesize_profile

    prof = load_profile(args.profile).data
    counts = None  # the profile's
    if args.cases is not None:
        if args.cases < 1:
            raise KitError(f"--cases must be at least 1, got {args.cases}")
        counts = split_counts(args.cases)
    elif prof.cases_train is None:
        raise KitError(f"profile {args.profile!r} uses a real dataset; pass --cases N for a synthetic one")
    man = synthesize_profile(prof, args.out, counts=counts, seed=args.seed, shape=args.shape,
                             workers=args.workers, manifest=args.manifest, progress=not args.quiet)
    n = man["splits"]
    print(
        f"[synth] {n.get('train', 0)} train + {n.get('validation', 0)} validation + {n.get('test', 0)} "
        f"test cases -> {man['root']}"
    )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from reg2rg_lib.data.prep import PrepParams, merge_shards, prepare

    if args.merge:
        if args.shard or args.data:
            raise KitError(
                "--merge joins the shards already prepared in --out: give it without --data and --shard"
            )
        cache = merge_shards(args.out)
    else:
        if not args.data:
            raise KitError("prepare needs --data DATASET_FOLDER (or --merge to join shards)")
        prof = load_profile(args.profile)
        cache = prepare(
            args.data, args.out, PrepParams.from_profile(prof.data),
            workers=prof.data.workers if args.workers is None else args.workers,
            mask_root=args.masks, progress=not args.quiet, dataset=args.format, shard=args.shard,
        )
    note = (
        (
            f" (shard {args.shard[0]}/{args.shard[1]}: `reg2rg prepare --out {args.out} --merge` once "
            "every shard is done)"
        )
        if args.shard
        else ""
    )
    c = cache.manifest["counts"]
    print(
        f"[prepare] {c['train']} train + {c.get('validation', 0)} validation + {c['test']} test cases "
        f"({c['computed']} computed, {c['reused']} reused, {c['skipped']} skipped item(s)) -> "
        f"{cache.root}{note}"
    )
    for s in cache.skipped[:5]:
        print(f"  skipped {s['item']}: {s['reason']}")
    if len(cache.skipped) > 5:
        print(f"  ... {len(cache.skipped) - 5} more in {cache.root / 'manifest.json'}")
    return 0
