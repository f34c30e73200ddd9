"""`reg2rg ablate`: the ablation grid of Tables 4-7 on the embedded benchmark (`reg2rg_lib.experiments`).

    reg2rg ablate --profile demo [--out outputs/demo] [--runs full,no_rra,llm_small] \
        [--max-steps N] [--parallel K] [--force] [--train-imported]
"""

from __future__ import annotations

import argparse

from reg2rg_lib.paths import RunPaths, default_out_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train, generate and evaluate the ablation grid; write summary.json (Tables 4-7)",
        description="Runs full, no_lfd, texture_only, texture_geometry, no_rra and llm_<arch> (the profile's "
        "ablations.runs) on the profile's prep cache with fixed seeds, reusing finished runs (notebook 03's "
        "full) and cached ViT features; evaluates each, adds bootstrap 95%% CIs and paired tests against "
        "full, and writes OUT/summary.json and OUT/ablation_stats.csv.",
    )
    p.add_argument("--profile", default="demo", help="smoke | demo | paper (default: demo)")
    p.add_argument("--out", default=None, help="the profile's output folder (default: outputs/<profile>)")
    p.add_argument(
        "--runs", default=None, help="comma-separated runs (default: the profile's ablations.runs)"
    )
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps per run (default: ablations.max_steps, else train.max_steps)")
    p.add_argument(
        "--force", action="store_true", help="retrain and re-evaluate runs that are already finished"
    )
    p.add_argument("--resamples", type=int, default=None,
                   help="bootstrap resamples (default: the profile's ablations.resamples)")
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="runs trained at once in worker processes (default: the profile's ablations.parallel)",
    )
    p.add_argument(
        "--train-imported",
        action="store_true",
        help="train the runs the profile imports (ablations.imported, e.g. demo's llm_scratch-2x128) "
        "instead of evaluating their committed predictions; copy the run's files to "
        "benchmarks/imported/<profile>_<run>/ to refresh them",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_ablate)


def _ablate(args: argparse.Namespace) -> int:
    # each handler imports its stage when it runs, so `reg2rg --help` stays fast
    from reg2rg_lib.experiments.runner import run_ablations
    from reg2rg_lib.experiments.summary import SHOWN_METRICS

    out = args.out or default_out_dir(args.profile)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else None
    summary = run_ablations(args.profile, out, runs=runs, max_steps=args.max_steps, force=args.force,
                            n_resamples=args.resamples, progress=not args.quiet, parallel=args.parallel,
                            train_imported=args.train_imported)
    width = max(map(len, summary["runs"]))
    print(f"{'run':<{width}}  " + "  ".join(f"{m:>15}" for m in SHOWN_METRICS))
    for name, metrics in summary["runs"].items():
        cells = (
            f"{metrics[m]:>15.4f}" if metrics.get(m) is not None else f"{'n/a':>15}" for m in SHOWN_METRICS
        )
        print(f"{name:<{width}}  " + "  ".join(cells))
    print(f"[ablate] wrote {RunPaths(out).summary}")
    return 0
