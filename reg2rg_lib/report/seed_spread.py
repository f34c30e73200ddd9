"""The seed spread in prose: the README's spread table over training seeds (`seed_spread_markdown`), and where
one run falls against the committed seeds (`spread_placement`, `placement_markdown`, `expected_spread`).

The committed seed file is `benchmarks/seeds/<profile>.csv` (`reg2rg bench seeds`); its rows' CPU kernels and
torch threads are compared with the run's, since a run on other kernels may land elsewhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.experiments.seeds import THREADS, main_family, prediction_interval, spread
from reg2rg_lib.experiments.seeds import check_within as seed_check
from reg2rg_lib.experiments.seeds import directions as seed_directions
from reg2rg_lib.experiments.seeds import read_rows as seed_rows
from reg2rg_lib.experiments.seeds import robust_conclusions as seed_robust
from reg2rg_lib.experiments.summary import REFERENCE, read_summary
from reg2rg_lib.paths import REPO_ROOT, RunFolder, RunPaths
from reg2rg_lib.report.table_writer import DIGITS, to_markdown

#: The mark of a figure outside the committed seeds' interval, in the tables.
OUTSIDE = "†"


def seeds_csv(profile: str) -> Path:
    """The committed seed file of a profile (it may not exist)."""
    return REPO_ROOT / "benchmarks" / "seeds" / f"{profile}.csv"


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)



# ------------------------------------------------------------------------------------------------------------
# The spread table over training seeds (notebook 05, benchmarks/RESULTS.md)


def _family(other: str, main: str) -> str:
    """A seed-spread row family in words: "2 training threads", "DEFAULT kernels
    (`ATEN_CPU_CAPABILITY=...`)"."""
    if other.startswith(main + ", "):
        return other[len(main) + 2:].replace("threads", "training threads")
    if "," in other:
        return other
    return f"{other} kernels (`ATEN_CPU_CAPABILITY={other.lower()}`)"


def _seed_conclusions(rows: Sequence[Mapping[str, Any]], main: str, others: set[str], n_seeds: int) -> str:
    """Which run-vs-full directions every seed agrees on (region accuracy, CE), and whether other kernels
    agree."""
    robust = seed_robust(rows, main)
    if not robust:
        return ""
    name = {"region_accuracy": "region accuracy", "CE_micro_F1": "CE micro-F1"}
    held = [f"`{run}` {name[m]} {'within 0.01 of' if d == 'tie' else d} `full`"
            for (run, m), d in robust.items() if d is not None]
    own = seed_directions(rows, main)
    mixed = [f"`{run}` {name[m]} ({', '.join(own[(run, m)])})" for (run, m), d in robust.items() if d is None]
    text = (f"In all {n_seeds} seeds (each run against `full` at the same seed): " + "; ".join(held) + "."
            if held else f"No run-vs-`full` direction holds in all {n_seeds} seeds.")
    if mixed:
        text += (
            " The seeds disagree (so a single-seed reading of these says nothing): " + "; ".join(mixed) + "."
        )
    for other in sorted(others):
        dirs = seed_directions(rows, other)
        agree = [k for k, d in robust.items() if d is not None and k in dirs and set(dirs[k]) == {d}]
        broke = [f"`{run}` {name[m]} ({', '.join(dirs[(run, m)])})" for (run, m), d in robust.items()
                 if d is not None and (run, m) in dirs and set(dirs[(run, m)]) != {d}]
        text += (
            f" Trained with {_family(other, main)}: {len(agree)} of {len(agree) + len(broke)} of these hold"
            + (": not " + "; ".join(broke) + "." if broke else ".")
        )
    return text


#: The spread table's metrics (the seed CSV keeps more).
SPREAD_SHOWN: tuple[str, ...] = ("region_accuracy", "topic_consistency", "BLEU-4", "METEOR", "ROUGE-L",
                                 "CE_micro_F1")


def seed_spread_markdown(
    spread_csv: str | os.PathLike[str], order: Sequence[str] = (), digits: int = 3
) -> str:
    """The README's spread table: each run's mean +- s.d. [min, max] over the training seeds of the
    seed-spread file (`reg2rg bench seeds`, the most common CPU kernels; runs in `order` first), then how the
    rows with other kernels compare."""
    rows = seed_rows(spread_csv)
    stats = spread(rows)
    rank = {run: i for i, run in enumerate(order)}
    stats = dict(sorted(stats.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    if not stats:
        return ""
    kernels, main = {r["cpu_capability"] for r in rows}, main_family(rows)
    seeds = sorted({r["seed"] for r in rows if r["cpu_capability"] == main})

    def cell(c: Mapping[str, float] | None) -> str:
        if c is None:
            return "n/a"
        return (
            f"{c['mean']:.{digits}f} ± {c['sd']:.{digits}f} [{c['min']:.{digits}f}, {c['max']:.{digits}f}]"
            if c["n"] > 1
            else f"{c['mean']:.{digits}f} (1 seed)"
        )

    table = pd.DataFrame([{"run": run, "seeds": int(max(c["n"] for c in m.values())),
                           **{k: cell(m.get(k)) for k in SPREAD_SHOWN}} for run, m in stats.items()],
                         columns=["run", "seeds", *SPREAD_SHOWN])
    rel = Path(spread_csv).resolve()
    rel_text = rel.relative_to(REPO_ROOT) if rel.is_relative_to(REPO_ROOT) else rel
    head = (
        f"Spread over training seeds {', '.join(map(str, seeds))} (mean ± s.d. [min, max]; {main} kernels; "
        f"`reg2rg bench seeds`, from `{rel_text}`; only the training seed differs, the data, feature cache "
        "and pretrained ViT are the reproduce run's):\n\n"
    )
    lines = [_seed_conclusions(rows, main, kernels - {main}, len(seeds))]
    for other in sorted(kernels - {main}):
        checks = seed_check(rows, other, main)
        outside = [f"`{c['run']}` {c['metric']} {c['value']:.3f} (seed {c['seed']}; interval "
                   f"[{c['low']:.3f}, {c['high']:.3f}])" for c in checks if not c["within"]]
        lines.append(
            f"Trained with {_family(other, main)}: {len(checks) - len(outside)} of {len(checks)} "
            "region-accuracy and CE figures land "
            f"inside the 95% prediction interval of the {main} seeds (where one more seed should fall)"
            + (": outside: " + "; ".join(outside) + "." if outside else ".")
        )
    return head + to_markdown(table).rstrip() + "".join("\n\n" + line for line in lines if line)


# ------------------------------------------------------------------------------------------------------------
# Where this run falls against the committed seed spread


def run_machine(summary_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The CPU kernels (`torch_cpu_capability` of summary.json) and the torch threads `full` trained with (its
    run_config.json's `train.threads`; torch's default, summary.json's `torch_threads`, when that is
    unset)."""
    path = Path(summary_path)
    env = read_summary(path).get("environment") or {}
    threads, config = None, RunFolder(RunPaths(path.parent).run(REFERENCE)).run_config
    if config.is_file():
        try:
            threads = (json.loads(config.read_text()).get("settings") or {}).get("threads")
        except json.JSONDecodeError:
            raise BadInputError(config, "not valid JSON") from None
    return {"cpu_capability": env.get("torch_cpu_capability") or "unknown",
            "threads": threads if threads else env.get("torch_threads")}


def committed_machine(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The CPU kernels and thread counts of a seed file's own seeds (`main_family`; threads None: not
    recorded)."""
    main = main_family(rows)
    counts = sorted({r.get(THREADS) for r in rows if r["cpu_capability"] == main} - {None})
    return {"cpu_capability": (main or "unknown").split(",")[0], "threads": counts or None}


def machine_words(machine: Mapping[str, Any]) -> str:
    """"AVX512, 1 training thread" / "AVX512, 1-2 training threads" / "AVX512, training threads not
    recorded"."""
    threads = machine.get("threads")
    if isinstance(threads, list | tuple):
        threads = threads[0] if len(threads) == 1 else f"{min(threads)}-{max(threads)}"
    count = ("training threads not recorded" if threads is None
             else f"{threads} training thread" + ("" if threads == 1 else "s"))
    return f"{machine.get('cpu_capability', 'unknown')}, {count}"


def spread_placement(summary_path: str | os.PathLike[str], spread_csv: str | os.PathLike[str] | None = None
                     ) -> list[dict[str, Any]]:
    """For every run of summary.json that the committed seed file (`benchmarks/seeds/<profile>.csv`, its own
    CPU kernels) has at 2+ seeds, and every headline metric: this run's value, the seeds' mean, s.d., min,
    max, the 95% prediction interval (where one more seed should fall, `seeds.prediction_interval`, clipped to
    [0, 1]) and `inside`. [] without a seed file."""
    summary = read_summary(summary_path)
    csv = Path(spread_csv) if spread_csv is not None else seeds_csv(summary["profile"])
    rows = seed_rows(csv)
    committed = spread(rows)
    out = []
    for run, metrics in summary["runs"].items():
        for metric in SPREAD_SHOWN:
            cell, value = committed.get(run, {}).get(metric), metrics.get(metric)
            interval = prediction_interval(cell) if cell else None
            if interval is None or value is None:
                continue
            low, high = max(0.0, interval[0]), min(1.0, interval[1])
            out.append({"run": run, "metric": metric, "value": float(value), "low": low, "high": high,
                        "inside": low - 1e-9 <= float(value) <= high + 1e-9, "seeds": int(cell["n"]),
                        **{k: cell[k] for k in ("mean", "sd", "min", "max")}})
    return out


def placement_markdown(summary_path: str | os.PathLike[str], spread_csv: str | os.PathLike[str] | None = None,
                       digits: int = DIGITS) -> str:
    """Notebook 06's table: each placed figure, the committed seeds and whether this run is inside, with both
    runs' CPU kernels and threads; a sentence instead when nothing can be placed."""
    summary = read_summary(summary_path)
    csv = Path(spread_csv) if spread_csv is not None else seeds_csv(summary["profile"])
    placed = spread_placement(summary_path, csv)
    if not placed:
        return (
            f"No committed seed spread to place this run in ({_shown(csv)} is missing or has no run of this "
            "summary at 2+ seeds; `reg2rg bench seeds` makes one)."
        )
    f = f".{digits}f"
    table = pd.DataFrame([{
        "run": p["run"], "metric": p["metric"], "this run": format(p["value"], f),
        "committed seeds": f"{p['mean']:{f}} ± {p['sd']:{f}} [{p['min']:{f}}, {p['max']:{f}}]",
        "95% interval": f"[{p['low']:{f}}, {p['high']:{f}}]",
        "inside?": "yes" if p["inside"] else f"**no** {OUTSIDE}"} for p in placed])
    return placement_sentence(summary_path, placed, csv) + "\n\n" + to_markdown(table).rstrip()


def placement_sentence(summary_path: str | os.PathLike[str], placed: Sequence[Mapping[str, Any]],
                       spread_csv: Path) -> str:
    """One sentence: how many figures lie inside the committed interval, those outside, and both machines."""
    rows = seed_rows(spread_csv)
    seeds = max((p["seeds"] for p in placed), default=0)
    outside = [f"`{p['run']}` {p['metric']} {p['value']:.{DIGITS}f} (interval [{p['low']:.{DIGITS}f}, "
               f"{p['high']:.{DIGITS}f}])" for p in placed if not p["inside"]]
    return (
        f"{len(placed) - len(outside)} of {len(placed)} figures inside the 95% prediction interval of the "
        f"{seeds} committed training seeds ({_shown(spread_csv)})"
        + (f"; outside {OUTSIDE}: " + "; ".join(outside) if outside else "")
        + f". This run: {machine_words(run_machine(summary_path))}; the committed seeds: "
        f"{machine_words(committed_machine(rows))}."
    )


def expected_spread(
    summary_path: str | os.PathLike[str], spread_csv: str | os.PathLike[str] | None = None
) -> str:
    """One sentence: the interval a rerun on another machine should land in, per metric of `full`."""
    placed = [p for p in spread_placement(summary_path, spread_csv) if p["run"] == REFERENCE]
    if not placed:
        return ""
    cells = ", ".join(f"{p['metric']} [{p['low']:.{DIGITS}f}, {p['high']:.{DIGITS}f}]" for p in placed)
    return (f"**On another machine** expect `{REFERENCE}` within the 95% prediction interval of its "
            f"{placed[0]['seeds']} committed training seeds: {cells}; other runs have one seed, so their "
            "differences from `full` below about the seeds' s.d. are noise.")
