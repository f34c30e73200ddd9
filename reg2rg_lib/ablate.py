"""The ablation grid (Tables 4-7): train, generate and evaluate each variant of Reg2RG on the embedded benchmark.

| run | model change | paper |
|---|---|---|
| `full` | texture + geometry + global tokens, LFD, RRA (notebook 03's run, reused) | every table's reference |
| `no_lfd` | `decoupled=False`: the region's masked, uncropped CT through ViT+Perceiver, no geometry token | Table 4 |
| `texture_only` | `use_geometry=False, use_global=False` | Table 5 |
| `texture_geometry` | `use_global=False` | Table 5 |
| `no_rra` | `rra=False`: paragraphs in canonical order without "The region i is X:" (no region dropout either) | Table 6 |
| `llm_<arch>` | the LLM swapped for `LLM_ARCHS[arch]` (`tiny`, `small`, ...), everything else as `full` | Table 7 |

Every run uses the profile's seeds, data and step count (`ablations.max_steps`, default `train.max_steps`), the
Training stage's `train_run` (frozen-ViT outputs cached once per case and shared by every run with the same
encoder) and `generate_run` (greedy decoding), and the Evaluation stage's `evaluate_predictions` against the
benchmark's exact test labels. A run whose predictions and metrics are complete is reused, so an interrupted grid
resumes and notebook 03's `full` is not trained again; `llm_<arch>` with the profile's own LLM is the `full` model
and reuses its outputs. A grid with a shorter step count than training (to fit a time budget) keeps its runs, its
own `full` included, in `runs/<name>_s<steps>/`, so that every comparison is at equal steps and notebook 03's run
is never overwritten.

Uncertainty (`ablation_stats`): for every headline metric, a bootstrap 95% CI over test cases and a paired
bootstrap test against `full` with the same resample indices for all runs (`reg2rg_lib.metrics.stats`).
Outputs: `out_dir/summary.json` (`{"profile", "runs": {run: {metric: value}}}`) and `out_dir/ablation_stats.csv`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.paths import RunPaths

#: The metrics summary.json must carry for every run (the issue's contract); more keys may follow.
SUMMARY_METRICS: tuple[str, ...] = ("region_accuracy", "BLEU-4", "METEOR", "ROUGE-L", "CE_micro_F1")
REFERENCE = "full"
STATS_FILE = "ablation_stats.csv"


@dataclass(frozen=True)
class Ablation:
    """One run of the grid: its name, what it changes, and in words what it tests."""

    name: str
    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)  # Reg2RGConfig fields
    llm_arch: str | None = None  # a key of LLM_ARCHS, or None for the profile's LLM


#: The component ablations (the LLM-size runs are made by `ablation("llm_<arch>")`).
ABLATIONS: dict[str, Ablation] = {a.name: a for a in (
    Ablation("full", "texture + geometry + global, LFD, RRA"),
    Ablation("no_lfd", "LFD off: masked uncropped CT per region, no geometry token", {"decoupled": False}),
    Ablation("texture_only", "texture tokens only (no geometry, no global)",
             {"use_geometry": False, "use_global": False}),
    Ablation("texture_geometry", "texture + geometry (no global)", {"use_global": False}),
    Ablation("no_rra", "RRA off: canonical order, no region prefixes (and no region dropout)", {"rra": False}),
)}


def ablation(name: str) -> Ablation:
    """The ablation called `name`: one of `ABLATIONS` or `llm_<arch>` with arch in `LLM_ARCHS`."""
    if name in ABLATIONS:
        return ABLATIONS[name]
    if name.startswith("llm_"):
        from reg2rg_lib.model import LLM_ARCHS

        arch = name[len("llm_"):]
        if arch not in LLM_ARCHS:
            raise KitError(f"ablation {name!r}: unknown LLM {arch!r}; expected one of {', '.join(LLM_ARCHS)}")
        return Ablation(name, f"LLM {arch} ({_llm_size(LLM_ARCHS[arch])})", llm_arch=arch)
    known = ", ".join([*ABLATIONS, "llm_<arch>"])
    raise KitError(f"unknown ablation {name!r}; expected one of {known}")


def _llm_size(arch: Mapping[str, Any]) -> str:
    return f"{arch['llm_layers']} layers x {arch['llm_hidden']} wide"


def same_model_as(profile: Any, a: Ablation, b: Ablation) -> bool:
    """True when two ablations build the same model config (e.g. `llm_tiny` and `full` under the tiny preset)."""
    from reg2rg_lib.train import model_config

    return model_config(profile, a.changes, a.llm_arch) == model_config(profile, b.changes, b.llm_arch)


# ----------------------------------------------------------------------------------------------------------------
# One run


def run_folder(profile: Any, name: str, steps: int | None) -> str:
    """The folder name under `runs/` of ablation `name` trained for `steps`: the plain name when `steps` is the
    profile's training length (so notebook 03's `full` is the grid's `full`), else `<name>_s<steps>`, so that a
    shorter grid never overwrites notebook 03's run."""
    return name if steps == profile.train.get("max_steps") else f"{name}_s{steps}"


def run_steps(profile: Any) -> int | None:
    """Optimizer steps of every ablation run: `ablations.max_steps`, else the profile's `train.max_steps`."""
    steps = profile.ablations.get("max_steps")
    return int(steps) if steps is not None else profile.train.get("max_steps")


def _test_names(cache_dir: Path) -> list[str]:
    from reg2rg_lib.data.prep import load_cache

    return [r.name for r in load_cache(cache_dir).cases("test")]


def predictions_complete(pred_csv: Path, names: Sequence[str]) -> bool:
    """True when `pred_csv` holds a prediction for every test case in `names`."""
    if not pred_csv.is_file():
        return False
    from reg2rg_lib.generate import read_predictions

    return set(names) <= {r["AccNum"] for r in read_predictions(pred_csv)}


def trained_steps(run_dir: Path) -> int | None:
    """Steps of the run's finished training (`train_summary.json`), None when it has not finished."""
    from reg2rg_lib.train import summary

    steps = summary(run_dir).get("steps")
    return int(steps) if steps is not None else None


def test_labels(paths: RunPaths) -> Path | None:
    """The benchmark's exact test labels (`test_predicted_labels.csv`), the CE reference of every run; None when
    the profile's data has none (then the labeler labels the ground-truth reports too)."""
    if not paths.data.is_dir():
        return None
    from reg2rg_lib.data.layout import scan_layout

    return scan_layout(paths.data).label_csvs.get("test")


def metrics_of(run_dir: Path, labels: Path | None) -> dict[str, Any] | None:
    """The run's headline metrics (`metrics/summary.json` of `evaluate_predictions`) if its evaluation finished
    with the same CE reference labels, else None (then it is evaluated again)."""
    summary, ce = run_dir / "metrics" / "summary.json", run_dir / "metrics" / "ce_metrics.json"
    if not (summary.is_file() and ce.is_file()):
        return None
    wanted = str(labels) if labels is not None else None
    used = json.loads(ce.read_text()).get("reference_labels")
    if wanted is not None and used != wanted or wanted is None and not str(used).startswith("labeler"):
        return None
    return json.loads(summary.read_text())["headline"]


def _headline(metrics: Mapping[str, Any], run_dir: Path) -> dict[str, float | None]:
    """The numbers summary.json keeps for a run: every numeric headline metric plus the training steps.

    `region_accuracy` is null (not 0) for a run whose reports carry no region names at all (`no_rra`: without
    region-report alignment the model is never asked to name the organ), so no one reads it as a failure.
    """
    out: dict[str, float | None] = {k: float(v) for k, v in metrics.items()
                                    if isinstance(v, int | float) and not isinstance(v, bool)}
    region = run_dir / "metrics" / "region_metrics.json"
    if region.is_file() and json.loads(region.read_text()).get("n_scored") == 0:
        out["region_accuracy"] = None  # no "The region i is X:" in the references (no_rra): not applicable
    out["train_steps"] = float(trained_steps(run_dir) or 0)
    return out


def run_one(
    profile: Any,
    paths: RunPaths,
    ab: Ablation,
    steps: int | None,
    names: Sequence[str],
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (unless finished), generate (unless complete) and evaluate one run; return its headline metrics.

    Each stage resumes: training from its newest checkpoint, generation from the rows already written.
    """
    from reg2rg_lib.generate import DecodeSettings, generate_run
    from reg2rg_lib.metrics import evaluate_predictions
    from reg2rg_lib.train import train_run

    run_dir = paths.run(run_folder(profile, ab.name, steps))
    pred = run_dir / "predictions.csv"
    labels = test_labels(paths)
    if force:
        for stale in (pred, run_dir / "metrics" / "summary.json", run_dir / "train_summary.json"):
            stale.unlink(missing_ok=True)
    done = metrics_of(run_dir, labels)
    if done is not None and predictions_complete(pred, names) and trained_steps(run_dir) in (steps, None):
        log(f"[ablate] {ab.name}: reusing {run_dir} ({trained_steps(run_dir)} steps)")
        return _headline(done, run_dir)
    start = time.perf_counter()
    have = trained_steps(run_dir)
    if have is None or (steps is not None and have != steps):
        if have is not None:
            log(f"[ablate] WARNING {ab.name}: trained {have} steps, the grid uses {steps}: training it again")
        log(f"[ablate] {ab.name}: training {steps} steps ({ab.description})")
        train_run(profile, run_dir, cache_dir=paths.cache, tokenizer_dir=paths.tokenizer, max_steps=steps,
                  resume=not force and have is None, model_changes=dict(ab.changes) or None, llm_arch=ab.llm_arch,
                  progress=progress, log=log)
        pred.unlink(missing_ok=True)  # predictions of an older model must not be resumed into
    if not predictions_complete(pred, names):
        decode = DecodeSettings.from_profile(profile.generate)
        generate_run(run_dir, paths.cache, pred, decode=decode, batch_size=int(profile.generate.batch_size),
                     progress=progress)
    headline = _headline(evaluate_predictions(pred, run_dir / "metrics", labels=labels), run_dir)
    log(f"[ablate] {ab.name}: done in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{k} {headline[k]:.4f}" for k in SUMMARY_METRICS if headline.get(k) is not None))
    return headline


# ----------------------------------------------------------------------------------------------------------------
# The grid


def grid(profile: Any, runs: Sequence[str] | None = None) -> list[Ablation]:
    """The runs to do, `full` first (the reference of every paired test), from `runs` or the profile."""
    names = list(runs or profile.ablations.runs)
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    names.sort(key=lambda n: n != REFERENCE)  # stable: the profile's order otherwise
    return [ablation(n) for n in dict.fromkeys(names)]


def run_ablations(
    profile: Any,
    out_dir: str | os.PathLike[str],
    runs: Sequence[str] | None = None,
    max_steps: int | None = None,
    force: bool = False,
    n_resamples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    parallel: int | None = None,
) -> dict[str, Any]:
    """Run the grid, write `out_dir/summary.json` and `out_dir/ablation_stats.csv`; return the summary.

    `runs` defaults to the profile's `ablations.runs`, `max_steps` to its step count (`run_steps`), `n_resamples`
    to `ablations.resamples`, `parallel` (runs trained at once, in worker processes that share the CPU cores) to
    `ablations.parallel` (1: one after the other, in this process). Runs are independent and seeded, so the
    numbers do not depend on `parallel`.
    """
    from reg2rg_lib.profiles import load_profile

    profile = load_profile(profile)
    paths = RunPaths(out_dir)
    if not (paths.cache / "manifest.json").is_file():
        raise KitError(f"no prep cache at {paths.cache}: run notebooks 01-03 (or `reg2rg prepare`) first")
    steps = max_steps if max_steps is not None else run_steps(profile)
    names = _test_names(paths.cache)
    todo = grid(profile, runs)
    log(f"[ablate] profile {profile.name}: {len(todo)} runs x {steps} steps, {len(names)} test cases: "
        + ", ".join(a.name for a in todo))
    results: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    if steps != profile.train.get("max_steps"):
        log(f"[ablate] the grid trains {steps} steps, notebook 03's full {profile.train.get('max_steps')}: "
            f"every run of the grid, full included, goes to runs/<name>_s{steps}/")
    unique: list[Ablation] = []
    for ab in todo:
        twin = next((u.name for u in unique if same_model_as(profile, ab, u)), None)
        if twin is not None:
            log(f"[ablate] {ab.name}: the same model as {twin}; reusing its outputs")
            aliases[ab.name] = twin
        else:
            unique.append(ab)
    workers = max(1, min(int(parallel if parallel is not None else profile.ablations.get("parallel") or 1),
                         len(unique)))
    if workers == 1:
        for ab in unique:
            results[ab.name] = run_one(profile, paths, ab, steps, names, force=force, progress=progress, log=log)
    else:
        results.update(_run_parallel(profile, paths, unique, steps, names, force, workers, log))
    for name, twin in aliases.items():
        results[name] = results[twin]
    results = {a.name: results[a.name] for a in todo}  # the grid's order, full first
    summary = write_summary(paths, profile.name, results)
    resamples = int(n_resamples or profile.ablations.get("resamples") or 1000)
    folders = {a.name: run_folder(profile, aliases.get(a.name, a.name), steps) for a in todo}
    stats = ablation_stats(paths, [a.name for a in todo], aliases, folders, n_resamples=resamples, seed=seed)
    with atomic_path(paths.root / STATS_FILE) as tmp:
        stats.to_csv(tmp, index=False, lineterminator="\n")
    return summary


def _worker(profile: Any, out_dir: str, ab: Ablation, steps: int | None, names: Sequence[str], force: bool,
            threads: int) -> tuple[str, dict[str, Any], list[str]]:
    """One run in a worker process (`run_ablations(parallel>1)`): its headline metrics and its log lines."""
    import torch

    torch.set_num_threads(threads)
    lines: list[str] = []
    headline = run_one(profile, RunPaths(out_dir), ab, steps, names, force=force, progress=False,
                       log=lines.append)
    return ab.name, headline, lines


def _run_parallel(profile: Any, paths: RunPaths, runs: Sequence[Ablation], steps: int | None,
                  names: Sequence[str], force: bool, workers: int, log: Callable[[str], None]
                  ) -> dict[str, dict[str, Any]]:
    """`runs` in `workers` spawned processes, each with an equal share of the cores (small models train faster
    on one thread each, side by side, than on all threads one after the other). The largest LLM starts first."""
    import concurrent.futures as cf
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // workers)
    order = sorted(runs, key=lambda a: a.llm_arch is None)  # llm_<arch> runs first: they take longest
    log(f"[ablate] {len(order)} runs in {workers} worker processes x {threads} thread(s): "
        + ", ".join(a.name for a in order))
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, profile, str(paths.root), ab, steps, names, force, threads)
                   for ab in order]
        for fut in cf.as_completed(futures):
            name, headline, lines = fut.result()
            for line in lines:
                log(line)
            results[name] = headline
            log(f"[ablate] {len(results)}/{len(order)} runs finished ({time.perf_counter() - start:.0f} s)")
    return results


def write_summary(paths: RunPaths, profile: str, results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Merge `results` into `out_dir/summary.json` (`{"profile", "runs": {run: {metric: value}}}`), atomically.

    Runs already in the file (e.g. from an earlier grid with other runs) are kept; this grid's runs come first.
    """
    old: dict[str, Any] = {}
    if paths.summary.is_file():
        try:
            old = json.loads(paths.summary.read_text())
        except json.JSONDecodeError:
            old = {}
    if old.get("profile") not in (None, profile):
        old = {}  # another profile's summary in this folder: do not mix
    runs = {name: dict(metrics) for name, metrics in results.items()}
    for name, metrics in (old.get("runs") or {}).items():
        runs.setdefault(name, metrics)
    for name, metrics in runs.items():
        missing = [m for m in SUMMARY_METRICS if m not in metrics]
        if missing:
            raise KitError(f"run {name}: evaluation gave no {', '.join(missing)}; cannot write {paths.summary}")
    summary = {"profile": profile, "runs": runs}
    write_json_atomic(paths.summary, summary)
    return summary


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A `summary.json`, checked: a profile and, for every run, the headline metrics."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "summary not found; run the ablations (`reg2rg ablate`, notebook 05) first")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadInputError(path, f"not valid JSON ({err})") from None
    if not isinstance(summary.get("runs"), dict) or "profile" not in summary:
        raise BadInputError(path, 'expected {"profile": ..., "runs": {run: {metric: value}}}')
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap CIs and paired tests


@dataclass
class PerCase:
    """What one run's bootstrap needs, aligned on the test cases: per-case scores and CE label matrices."""

    ids: list[str]
    scores: dict[str, np.ndarray]  # metric -> (N,) per-case score (NaN: not scored)
    y_true: np.ndarray | None = None  # (N, L) ground-truth labels
    y_pred: np.ndarray | None = None  # (N, L) predicted labels

    def take(self, ids: Sequence[str], where: Path) -> PerCase:
        """The same data in the order of `ids` (every id must be present)."""
        pos = {k: i for i, k in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise BadInputError(where, f"no per-case scores for {len(missing)} test case(s), e.g. {missing[0]}")
        order = np.array([pos[i] for i in ids], dtype=np.int64)
        return PerCase(list(ids), {k: v[order] for k, v in self.scores.items()},
                       None if self.y_true is None else self.y_true[order],
                       None if self.y_pred is None else self.y_pred[order])


def per_case(metrics_dir: Path) -> PerCase:
    """Per-case region accuracy, BLEU-4, METEOR, ROUGE-L and CE labels from a run's evaluation folder."""
    from reg2rg_lib.metrics.io import read_csv_checked

    nlg = read_csv_checked(metrics_dir / "nlg_per_sample.csv", required=("id", "BLEU-4"), what="per-sample NLG")
    ids = nlg["id"].astype(str).tolist()
    scores = {m: nlg[m].astype(float).to_numpy() for m in ("BLEU-4", "METEOR", "ROUGE-L") if m in nlg.columns}
    region = json.loads((metrics_dir / "region_metrics.json").read_text())
    acc = [math.nan if a is None else float(a) for a in region.get("per_sample_accuracy", [])]
    if len(acc) == len(ids):
        scores["region_accuracy"] = np.array(acc)
    out = PerCase(ids, scores)
    labels_csv = metrics_dir / "ce_labels.csv"
    if labels_csv.is_file():
        from reg2rg_lib.metrics.ce import read_label_table

        out.y_true, out.y_pred = read_label_table(labels_csv)[:2]
    return out


def _nanmean_replicates(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over each resample ignoring unscored cases (NaN): (B,)."""
    taken = values[idx]  # (B, N)
    ok = ~np.isnan(taken)
    return np.where(ok, taken, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)


def replicates(data: PerCase, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap replicates (B,) of every headline metric that `data` supports."""
    from reg2rg_lib.metrics.ce import ce_replicates

    reps = {m: _nanmean_replicates(v, idx) for m, v in data.scores.items() if not np.isnan(v).all()}
    if data.y_true is not None and data.y_pred is not None:
        reps["CE_micro_F1"] = ce_replicates(data.y_true, data.y_pred, idx)["micro_f1"]
    return reps


def ablation_stats(
    paths: RunPaths,
    runs: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    folders: Mapping[str, str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    reference: str = REFERENCE,
) -> pd.DataFrame:
    """Long table (run, metric, value, ci_low, ci_high, delta_vs_full, p_vs_full, same_as), headline metrics.

    `value` is the run's own evaluation (summary.json; NaN where not applicable); CIs and p-values come from one
    set of resample indices shared by all runs (paired). `aliases` maps a run to the run whose outputs it reused
    (its `same_as`); `folders` maps a run to its folder under `runs/` (default: the run's name, or its alias's).
    """
    from reg2rg_lib.metrics.stats import bootstrap_indices, paired_test, percentile_ci

    aliases = dict(aliases or {})
    summary = read_summary(paths.summary)["runs"]
    folders = dict(folders or {})
    folder = {r: paths.run(folders.get(r, aliases.get(r, r))) / "metrics" for r in runs}
    ref_data = per_case(folder[reference])
    idx = bootstrap_indices(len(ref_data.ids), n_resamples, seed)  # (B, N), shared: paired comparisons
    ref_reps = replicates(ref_data, idx)
    rows = []
    for run in runs:
        data = per_case(folder[run]).take(ref_data.ids, folder[run])
        reps = replicates(data, idx)
        for metric in SUMMARY_METRICS:
            given = summary.get(run, {}).get(metric)
            value = float(given) if given is not None else math.nan
            low, high = percentile_ci(reps[metric]) if metric in reps else (math.nan, math.nan)
            row = {"run": run, "metric": metric, "value": value, "ci_low": low, "ci_high": high,
                   "delta_vs_full": math.nan, "p_vs_full": math.nan, "same_as": aliases.get(run, "")}
            ref_value = summary.get(reference, {}).get(metric)
            if run != reference and metric in reps and metric in ref_reps and ref_value is not None:
                test = paired_test(ref_reps[metric], reps[metric], float(ref_value), value)
                row.update(delta_vs_full=test["delta"], p_vs_full=test["p_value"])
            rows.append(row)
    return pd.DataFrame(rows)


def read_stats(path: str | os.PathLike[str]) -> pd.DataFrame:
    """`ablation_stats.csv`, checked."""
    from reg2rg_lib.metrics.io import read_csv_checked

    stats = read_csv_checked(path, required=("run", "metric", "value", "ci_low", "ci_high", "p_vs_full"),
                             what="ablation stats")
    for col in ("value", "ci_low", "ci_high", "delta_vs_full", "p_vs_full"):
        if col in stats.columns:
            stats[col] = pd.to_numeric(stats[col], errors="coerce")
    return stats


def descriptions(stats: pd.DataFrame) -> dict[str, str]:
    """run -> what it changes (and which run it is the same model as), for the tables' `setting` column."""
    same = dict(zip(stats["run"], stats["same_as"].fillna(""))) if "same_as" in stats.columns else {}
    out = {}
    for r in dict.fromkeys(stats["run"]):
        try:
            out[r] = ablation(r).description
        except KitError:
            out[r] = ""
        if same.get(r):
            out[r] += f" (the same model as {same[r]}: its outputs reused)"
    return out


def verdicts(stats: pd.DataFrame, alpha: float = 0.05, reference: str = REFERENCE) -> pd.DataFrame:
    """For every run and metric: the difference to `full` and what it means, in words.

    `verdict` is "full better" / "run better" when the paired bootstrap test gives p < `alpha`, "no clear
    difference" otherwise, and "not applicable" where the run has no value (e.g. region accuracy without RRA).
    """
    rows = []
    for r in stats[stats["run"] != reference].itertuples(index=False):
        same = getattr(r, "same_as", "")
        if isinstance(same, str) and same:
            verdict = f"same model as {same}"
        elif math.isnan(r.value) or math.isnan(r.p_vs_full):
            verdict = "not applicable"
        elif r.p_vs_full < alpha:
            verdict = "full better" if r.delta_vs_full < 0 else f"{r.run} better"
        else:
            verdict = "no clear difference"
        rows.append({"run": r.run, "metric": r.metric, "delta_vs_full": r.delta_vs_full, "p_vs_full": r.p_vs_full,
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=["run", "metric", "delta_vs_full", "p_vs_full", "verdict"])
