"""`reg2rg readme --summary outputs/demo/summary.json [--readme README.md] [--tables figures/tables]`: rewrite
the README's generated results block (between `<!-- demo-results:start -->` and `<!-- demo-results:end -->`)
from a run's `summary.json`, the `ablation_stats.csv` beside it and the tables notebook 06 wrote
(`report.results.write_readme_results`); the rest of the README is kept. It also prints where the run falls
against the committed seed spread (benchmarks/seeds/<profile>.csv), figure by figure.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("readme", help="write the README's demo-results block from a summary.json")
    p.add_argument(
        "--summary", required=True, help="summary.json of a profile run (e.g. outputs/demo/summary.json)"
    )
    p.add_argument("--readme", default="README.md", help="README to update in place (default: README.md)")
    p.add_argument("--tables", default=None,
                   help="the tables notebook 06 wrote, for the paper lines (default: figures/tables)")
    p.set_defaults(func=_readme)


def _readme(args: argparse.Namespace) -> int:
    from reg2rg_lib.report.results import write_readme_results
    from reg2rg_lib.report.seed_spread import spread_placement

    path = write_readme_results(args.summary, args.readme, tables_dir=args.tables)
    for p in spread_placement(args.summary):
        print(f"{p['run']:<20} {p['metric']:<16} {p['value']:.3f}  committed seeds' interval "
              f"[{p['low']:.3f}, {p['high']:.3f}]  {'inside' if p['inside'] else 'OUTSIDE'}")
    print(f"wrote the demo results of {args.summary} into {path}")
    return 0
