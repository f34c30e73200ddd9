"""`reg2rg readme --summary outputs/demo/summary.json [--readme README.md]`: rewrite the README's generated demo
block (between `<!-- demo-results:start -->` and `<!-- demo-results:end -->`) from a run's `summary.json` and the
`ablation_stats.csv` beside it (`report.narrative.write_readme_results`); the rest of the README is kept.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("readme", help="write the README's demo-results block from a summary.json")
    p.add_argument("--summary", required=True, help="summary.json of a profile run (e.g. outputs/demo/summary.json)")
    p.add_argument("--readme", default="README.md", help="README to update in place (default: README.md)")
    p.set_defaults(func=_readme)


def _readme(args: argparse.Namespace) -> int:
    from reg2rg_lib.report.narrative import write_readme_results

    path = write_readme_results(args.summary, args.readme)
    print(f"wrote the demo results of {args.summary} into {path}")
    return 0
