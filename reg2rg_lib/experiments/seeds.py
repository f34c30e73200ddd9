"""The ablation grid's spread over training seeds, and whether another machine's run lands inside it.

`make reproduce` trains every ablation once, at the profile's seed. This benchmark trains the same grid at
other seeds (`reg2rg bench seeds`), each in its own folder whose prep cache, data, tokenizer and pretrained
ViT are links to the reproduce folder's (so only the training seed differs), and keeps one row per (run, seed,
CPU kernels) in a CSV committed under `benchmarks/seeds/`. The README's demo table reads that CSV for each
run's mean and s.d.; `check_within` says whether a run with other CPU kernels (`ATEN_CPU_CAPABILITY=default`)
stays inside the spread.

    reg2rg bench seeds --profile demo --seeds 1,2 --from outputs/demo --out outputs/demo_seeds
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.io import write_csv_atomic
from reg2rg_lib.paths import RunPaths

if TYPE_CHECKING:
    from reg2rg_lib.profiles import Profile

#: The metrics the spread file keeps for each run (the README's demo table).
SPREAD_METRICS: tuple[str, ...] = ("region_accuracy", "BLEU-4", "METEOR", "ROUGE-L", "CE_micro_F1",
                                   "distinct_reports", "topic_consistency")
COLUMNS: tuple[str, ...] = ("run", "seed", "cpu_capability", *SPREAD_METRICS)
#: Columns of `COLUMNS` that files written before them lack (read as None).
LATER_COLUMNS: tuple[str, ...] = ("topic_consistency",)
#: Written after `COLUMNS`: the torch threads a row's run trained with (`train.threads`; older files lack it).
THREADS = "threads"
#: What a seed folder shares with the reproduce folder (read-only inputs; the runs/ and summaries are its
#: own).
SHARED: tuple[str, ...] = ("cache", "data", "tokenizer", "vision")


def link_inputs(source: Path, folder: Path) -> None:
    """Make `folder` a grid folder that reads `source`'s prep cache, data, tokenizer and ViT (symlinks)."""
    if not (source / "cache" / "manifest.json").is_file():
        raise BadInputError(source, "no prep cache (cache/manifest.json); run `make reproduce` first")
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link, target = folder / name, (source / name).resolve()
        if link.is_symlink() and link.resolve() == target:
            continue
        if link.exists() or link.is_symlink():
            raise BadInputError(link, f"exists and is not a link to {target}; give another --out")
        if target.exists():
            link.symlink_to(target, target_is_directory=True)


def family(capability: str, threads: int | None = None) -> str:
    """A row family's label in the `cpu_capability` column: the torch CPU kernels ("AVX512", "DEFAULT"), plus
    ", N threads" when trained with `threads` other than the profile's `train.threads`."""
    return capability if threads is None else f"{capability}, {threads} threads"


def main_family(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The family with the most rows (the seeds' own; the other families are reruns compared against it)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["cpu_capability"]] = counts.get(r["cpu_capability"], 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def rows_from_summary(summary: Mapping[str, Any], seed: int, runs: Iterable[str],
                      threads: int | None = None, train_threads: int | None = None) -> list[dict[str, Any]]:
    """One spread row per run of a `summary.json` (`runs` only), labelled with its seed and `family`, and the
    torch threads it trained with: `threads` (another count than the profile's), else the profile's
    `train_threads`, else the summary's `torch_threads` (torch's default then)."""
    environment = summary.get("environment", {})
    capability = family(environment.get("torch_cpu_capability", "unknown"), threads)
    used = threads or train_threads or environment.get("torch_threads")
    rows = []
    for run in runs:
        metrics = summary["runs"].get(run)
        if metrics is None:
            continue
        rows.append({"run": run, "seed": int(seed), "cpu_capability": capability,
                     **{m: metrics.get(m) for m in SPREAD_METRICS}, THREADS: used})
    return rows


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a spread CSV (metrics as floats, empty cells as None, `threads` and `LATER_COLUMNS` None
    where the file has no such column or cell); [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        needed = [c for c in COLUMNS if c not in LATER_COLUMNS]
        if reader.fieldnames is None or not set(needed) <= set(reader.fieldnames):
            raise BadInputError(path, f"not a seed-spread file (needs the columns {', '.join(needed)})")
        rows = []
        for r in reader:
            row: dict[str, Any] = {
                "run": r["run"],
                "seed": int(r["seed"]),
                "cpu_capability": r["cpu_capability"],
            }
            cells = {m: r.get(m) for m in SPREAD_METRICS}
            row.update({m: float(v) if v not in (None, "", "None") else None for m, v in cells.items()})
            threads = r.get(THREADS) or ""
            row[THREADS] = int(float(threads)) if threads not in ("", "None") else None
            rows.append(row)
    return rows


def merge_rows(path: str | os.PathLike[str], new: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Write `new` into the spread CSV at `path` (a row with the same run, seed and kernels is replaced)."""
    key = ("run", "seed", "cpu_capability")
    fresh = {tuple(r[k] for k in key) for r in new}
    rows = [r for r in read_rows(path) if tuple(r[k] for k in key) not in fresh] + [dict(r) for r in new]
    for r in rows:  # six decimals: more than any metric resolves on 50 cases, and a readable diff
        r.update({m: round(float(r[m]), 6) for m in SPREAD_METRICS if r[m] is not None})
    rows.sort(key=lambda r: (r["run"], r["cpu_capability"], r["seed"]))
    write_csv_atomic(path, (*COLUMNS, THREADS), [{THREADS: None} | r for r in rows])
    return rows


def spread(
    rows: Sequence[Mapping[str, Any]], capability: str | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """`{run: {metric: {"mean", "sd", "min", "max", "n"}}}` over the seeds of each run (one CPU kernel family:
    `capability`, default `main_family`). The s.d. is the sample s.d. (n - 1); 0 for one seed."""
    if capability is None:
        capability = main_family(rows)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r["cpu_capability"] != capability:
            continue
        for m in SPREAD_METRICS:
            if r[m] is not None:
                out.setdefault(r["run"], {}).setdefault(m, {"values": []})["values"].append(float(r[m]))
    for metrics in out.values():
        for cell in metrics.values():
            v = cell.pop("values")
            mean = sum(v) / len(v)
            sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
            cell.update(mean=mean, sd=sd, min=min(v), max=max(v), n=float(len(v)))
    return out


def prediction_interval(cell: Mapping[str, float], level: float = 0.95) -> tuple[float, float] | None:
    """Where one more seed's value should fall (`level` prediction interval, normal model): mean +- t * s.d. *
    sqrt(1 + 1/n), t the Student quantile with n - 1 degrees of freedom; None with fewer than 2 seeds."""
    from scipy.stats import t as student_t

    n = int(cell["n"])
    if n < 2:
        return None
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * cell["sd"] * math.sqrt(1 + 1 / n)
    return cell["mean"] - half, cell["mean"] + half


def check_within(rows: Sequence[Mapping[str, Any]], capability: str, reference: str | None = None,
                 metrics: Sequence[str] = ("region_accuracy", "CE_micro_F1")) -> list[dict[str, Any]]:
    """For each run of the `capability` rows: is each metric inside the 95% prediction interval of the
    `reference` family's seeds (`prediction_interval`)? One dict per (run, metric) that has an interval."""
    ref = spread(rows, reference)
    out = []
    for r in rows:
        if r["cpu_capability"] != capability:
            continue
        for m in metrics:
            cell = ref.get(r["run"], {}).get(m)
            interval = prediction_interval(cell) if cell is not None else None
            if interval is None or r[m] is None:
                continue
            lo, hi = interval
            out.append({"run": r["run"], "metric": m, "seed": r["seed"], "value": r[m], "low": lo, "high": hi,
                        "within": lo <= r[m] <= hi})
    return out


def run_seed(profile: str | Profile, seed: int, source: Path, out: Path, runs: Sequence[str],
             parallel: int | None, progress: bool, threads: int | None = None) -> dict[str, Any]:
    """Train, generate and evaluate `runs` at training seed `seed` in `out` (inputs linked from `source`),
    with `train.threads` = `threads` when given."""
    from reg2rg_lib.experiments.runner import run_ablations
    from reg2rg_lib.profiles import load_profile

    link_inputs(source, out)
    overrides: dict[str, Any] = {"train.seed": seed}
    if threads is not None:
        overrides["train.threads"] = threads
    prof = load_profile(profile, overrides=overrides)
    # every run trained at this seed, the ones the profile imports (committed at its own seed) included
    run_ablations(prof, out, runs=list(runs), progress=progress, parallel=parallel, train_imported=True)
    return json.loads(RunPaths(out).summary.read_text())


#: Differences to `full` smaller than this are ties (one test case of 50 moves region accuracy by ~0.002).
TIE = 0.01


def directions(
    rows: Sequence[Mapping[str, Any]],
    capability: str,
    reference: str = "full",
    metrics: Sequence[str] = ("region_accuracy", "CE_micro_F1"),
) -> dict[tuple[str, str], list[str]]:
    """`{(run, metric): ["below" | "above" | "tie", ...]}`: each seed's run against `reference` at the same
    seed (`capability` rows only; a difference within `TIE` is a tie)."""
    by_seed = {(r["run"], r["seed"]): r for r in rows if r["cpu_capability"] == capability}
    out: dict[tuple[str, str], list[str]] = {}
    for (run, seed), r in sorted(by_seed.items()):
        ref = by_seed.get((reference, seed))
        if run == reference or ref is None:
            continue
        for m in metrics:
            if r[m] is None or ref[m] is None:
                continue
            d = r[m] - ref[m]
            out.setdefault((run, m), []).append("tie" if abs(d) <= TIE else "below" if d < 0 else "above")
    return out


def robust_conclusions(rows: Sequence[Mapping[str, Any]], capability: str,
                       reference: str = "full") -> dict[tuple[str, str], str | None]:
    """Per (run, metric): the direction against `reference` that every seed agrees on ("below", "above",
    "tie"), or None when the seeds disagree (then no conclusion should be drawn from one seed)."""
    return {key: (d[0] if len(set(d)) == 1 else None)
            for key, d in directions(rows, capability, reference).items()}
