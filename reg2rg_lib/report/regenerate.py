"""Every table and figure from disk: `Inputs` says where one profile run's files are, each `make_*` reads them
and writes its table or figure (or returns None when its inputs are absent), and `regenerate` runs them all in
order (notebook 06). `show` displays what a maker wrote inside a notebook.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.data.sources import LayoutSource
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.experiments.ablation_stats import descriptions, read_stats
from reg2rg_lib.experiments.baselines import BASELINES
from reg2rg_lib.experiments.summary import read_summary
from reg2rg_lib.paths import MetricsFolder, ReleaseFolder, RunFolder, RunPaths
from reg2rg_lib.profiles import Profile, load_profile
from reg2rg_lib.regions import split_regions
from reg2rg_lib.report.figures import (
    PICK_RULE,
    load_pairs,
    paper_fig2_report_length,
    paper_fig3_case_study,
    paper_fig4_region_report,
    pick_case,
)
from reg2rg_lib.report.kit_figures import (
    kit_fig4_training_curves,
    kit_fig6_ablation_bars,
)
from reg2rg_lib.report.release import ReleaseLookup, find_release, with_release_rows
from reg2rg_lib.report.release_readers import (
    ce_averages,
    recompute_release_ce,
    recompute_release_crg,
    recompute_release_nlg,
)
from reg2rg_lib.report.table_writer import save_table
from reg2rg_lib.report.tables import (
    BENCHMARK,
    CTRG,
    region_rows,
    save_ablation_tables,
    table1_nlg,
    table2_ce,
    table3_region_recognition,
    table8_grounded,
    table9_ce_per_label,
)

logger = logging.getLogger(__name__)


def load_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file, or a clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadInputError(path, f"not valid JSON ({err})") from None


# ------------------------------------------------------------------------------------------------------------
# Everything from disk (notebook 06, tests): what the earlier notebooks wrote -> every table and figure


@dataclass(frozen=True)
class Inputs:
    """Where the tables and figures come from: one profile run's output folder and, optionally, the authors'
    released CTRG files (`release_dir`); `recompute_release` re-runs the kit's NLG metrics on the release."""

    out_dir: Path
    figures_dir: Path
    profile: str
    release_dir: Path | None = None
    recompute_release: bool = False
    # where the release was looked for (tables say so when absent)
    release_lookup: ReleaseLookup | None = None

    @classmethod
    def from_profile(cls, profile: str | Profile, out_dir: str | os.PathLike[str],
                     figures_dir: str | os.PathLike[str], release_dir: str | os.PathLike[str] | None = None,
                     recompute_release: bool | None = None) -> Inputs:
        """The inputs of one profile run. The release: `release_dir`, else $REG2RG_RELEASE, else the profile's
        `figures.release_dir` (`report.release.find_release`; relative paths from the repository root, ""
        leaves it out); a folder that does not exist is not read, and Tables 1-3 say where it was looked for.
        `recompute_release` defaults to the profile's setting."""
        prof = load_profile(profile)
        lookup = find_release(release_dir, prof.figures.release_dir)
        recompute = prof.figures.recompute_release if recompute_release is None else recompute_release
        return cls(
            Path(out_dir).resolve(),
            Path(figures_dir).resolve(),
            prof.name,
            lookup.found,
            bool(recompute),
            lookup,
        )

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.out_dir)

    def metrics_dir(self, run: str) -> Path:
        return RunFolder(self.paths.run(run)).metrics()

    def runs(self) -> list[str]:
        """Evaluated runs (predictions + NLG metrics), `full` first, then summary.json's order, then by
        name."""
        root = self.paths.runs
        if not root.is_dir():
            return []
        found = sorted(p.name for p in root.iterdir() if RunFolder(p).predictions().is_file()
                       and MetricsFolder(RunFolder(p).metrics()).nlg_results.is_file())
        order = ["full"]
        if self.paths.summary.is_file():
            order += list(read_summary(self.paths.summary)["runs"])
        rank = {r: i for i, r in enumerate(dict.fromkeys(order))}
        return sorted(found, key=lambda r: (rank.get(r, len(rank)), r))


def make_paper_fig2(inp: Inputs) -> list[Path] | None:
    """Paper Fig. 2: report lengths; one panel for the released CTRG predictions, one for the kit's runs."""
    panels: dict[str, dict[str, Any]] = {}
    if inp.release_dir:
        panels["CTRG-Chest-548K test (authors' release)"] = {
            "Reg2RG (authors)": ReleaseFolder(inp.release_dir).predictions}
    panels[f"embedded benchmark test (kit, {inp.profile})"] = {
        r: RunFolder(inp.paths.run(r)).predictions() for r in inp.runs()}
    panels = {k: v for k, v in panels.items() if v}
    return paper_fig2_report_length(panels, inp.figures_dir)[1] if panels else None


def _case_study_source(inp: Inputs) -> tuple[Any, str] | None:
    """The predictions the case study shows: the kit's full run when evaluated, else the authors' release."""
    if "full" in inp.runs():
        return load_pairs(RunFolder(inp.paths.run("full")).predictions()), "kit full"
    if inp.release_dir:
        return load_pairs(ReleaseFolder(inp.release_dir).predictions), "Reg2RG (authors)"
    return None


def make_paper_fig3(inp: Inputs) -> list[Path] | None:
    """Paper Fig. 3: the case `pick_case` chooses, ground truth vs prediction, findings highlighted."""
    source = _case_study_source(inp)
    if source is None:
        return None
    pairs, model = source
    i = pick_case(pairs)
    rule = f"{PICK_RULE} among the {len(pairs.ids)} cases of the {model} predictions"
    return paper_fig3_case_study(
        pairs.references[i],
        pairs.predictions[i],
        inp.figures_dir,
        case_id=pairs.ids[i],
        model=model,
        picked_by=rule,
    )[1]


def make_paper_fig4(inp: Inputs) -> list[Path] | None:
    """Paper Fig. 4: the case study's benchmark case on CT slices with the full run's region paragraphs."""
    if "full" not in inp.runs() or not inp.paths.data.is_dir():
        return None

    pairs = load_pairs(RunFolder(inp.paths.run("full")).predictions())
    i = pick_case(pairs)
    volume, masks, spacing, _ = LayoutSource(inp.paths.data).load(pairs.ids[i])
    report, source = pairs.predictions[i], "kit full, generated"
    if not any(p.index is not None for p in split_regions(report)):  # an untrained model names no region
        report, source = pairs.references[i], "ground truth: the generated report names no region"
    return paper_fig4_region_report(
        volume, masks, report, inp.figures_dir, spacing=spacing, case_id=pairs.ids[i], source=source
    )


def make_kit_fig4(inp: Inputs) -> list[Path] | None:
    """Kit Fig. 4: training curves of every run with a `train_log.csv`, in the order (and so the colours) of
    Paper Fig. 2 and Kit Fig. 6: `full` first, then summary.json's order, then by name."""
    root = inp.paths.runs
    runs = {r: inp.paths.run(r) for r in (sorted(p.name for p in root.iterdir()) if root.is_dir() else [])
            if RunFolder(inp.paths.run(r)).train_log.is_file()}
    rank = {r: i for i, r in enumerate(inp.runs())}
    ordered = {r: runs[r] for r in sorted(runs, key=lambda r: (r != "full", rank.get(r, len(rank)), r))}
    return kit_fig4_training_curves(ordered, inp.figures_dir) if ordered else None


def make_kit_fig6(inp: Inputs) -> list[Path] | None:
    """Kit Fig. 6: ablation bars with bootstrap CIs from `out_dir/ablation_stats.csv`."""
    path = inp.paths.ablation_stats
    return kit_fig6_ablation_bars(read_stats(path), inp.figures_dir) if path.is_file() else None


def regenerate(inp: Inputs) -> dict[str, Any]:
    """Every table and figure whose inputs exist, in order; {maker name: files written or None (skipped)}."""
    written = {}
    for make in (
        *TABLE_MAKERS,
        make_paper_fig2,
        make_paper_fig3,
        make_paper_fig4,
        make_kit_fig4,
        make_kit_fig6,
    ):
        files = make(inp)
        written[make.__name__] = files
        names = sorted({Path(p).name for p in (files.values() if isinstance(files, dict) else files or [])})
        logger.info(
            f"[figures] {make.__name__}: " + (", ".join(names) if names else "skipped (inputs not found)")
        )
    return written


def show(files: Any) -> None:
    """Display what a maker wrote in a notebook: Markdown tables as Markdown, PNG figures as images."""
    # IPython: present only in a notebook kernel's display path
    from IPython.display import Image, Markdown, display

    if not files:
        print("skipped: its inputs were not found (see the notebook's introduction)")
        return
    for path in sorted({Path(p) for p in (files.values() if isinstance(files, Mapping) else files)}):
        if path.suffix == ".md":
            display(Markdown(path.read_text()))
        elif path.suffix == ".png":
            display(Image(filename=str(path)))


# ------------------------------------------------------------------------------------------------------------
# From disk: each table from what the earlier notebooks wrote (notebook 06, `figures.regenerate`)


def _kit_full(inp: Any) -> Path | None:
    """The metrics folder of notebook 04's `full` run, when it was evaluated."""
    return inp.metrics_dir("full") if "full" in inp.runs() else None


def _save_nonempty(df: pd.DataFrame, inp: Any, name: str, caption: str) -> dict[str, Path] | None:
    return None if df.empty else save_table(df, inp.figures_dir, name, caption)


def make_table1(inp: Any) -> dict[str, Path] | None:
    """Table 1 from the release (when given) and the kit's `full` run (when finished); None if neither."""
    recomputed = recompute_release_nlg(inp.release_dir) if inp.release_dir and inp.recompute_release else None
    df = table1_nlg(inp.release_dir, recomputed, _kit_rows(inp) or None, inp.profile)
    return _save_nonempty(
        _release_rows(df, inp, "table1"),
        inp,
        "table1_nlg",
        "Table 1: NLG metrics (per-sample "
        f"means). {CTRG} rows come from the authors' release; {BENCHMARK} rows from the kit's runs"
        + _baselines_caption(inp),
    )


def make_table2(inp: Any) -> dict[str, Path] | None:
    """Table 2 (CE) from the release (as released and recomputed from its labels) and the kit's `full` run."""
    recomputed = recompute_release_ce(inp.release_dir) if inp.release_dir else None
    kit = {run: ce_averages(load_json(MetricsFolder(d).ce_json)) for run, d in _kit_rows(inp).items()}
    df = table2_ce(inp.release_dir, recomputed, kit or None, inp.profile, crg=_crg_values(inp))
    return _save_nonempty(
        _release_rows(df, inp, "table2"),
        inp,
        "table2_ce",
        "Table 2: clinical efficacy over the 18 CT-RATE labels. "
        f"{CTRG}: RadBERT labels from the authors' release; {BENCHMARK}: the kit's rule labeler"
        + _baselines_caption(inp),
    )


def make_table3(inp: Any) -> dict[str, Path] | None:
    """Table 3 (region recognition) from the release's region report and the kit's `full` run."""
    kit = {run: region_rows(load_json(MetricsFolder(d).region_json)) for run, d in _kit_rows(inp).items()}
    return _save_nonempty(
        _release_rows(table3_region_recognition(inp.release_dir, kit or None, inp.profile), inp, "table3"),
        inp,
        "table3_region_recognition",
        'Table 3: region recognition ("The region i is X" names vs the ground truth)'
        + _baselines_caption(inp),
    )


def _kit_rows(inp: Any) -> dict[str, Path]:
    """{name: metrics folder}: notebook 04's `full` run, then the baselines scored against its references
    (`experiments.baselines`, written by the ablations) when they exist."""
    full = _kit_full(inp)
    if full is None:
        return {}
    rows = {"full": full}
    for name in BASELINES:
        files = RunFolder(inp.paths.baseline(name))
        if files.metrics_summary().is_file():
            rows[name] = files.metrics()
    return rows


def _baselines_caption(inp: Any) -> str:
    kit = _kit_rows(inp)
    if "full" not in kit:
        return "."
    if len(kit) == 1:
        return "; baselines: not computed yet (the ablations, notebook 05, score them)."
    return (
        "; baseline rows: one constant report for every case (experiments.baselines), the normal one naming "
        "the organs in canonical order."
    )


def _release_rows(df: pd.DataFrame, inp: Any, table: str) -> pd.DataFrame:
    """`df` with the paper's printed rows and, when the release is absent, where it was looked for."""
    return df if df.empty else with_release_rows(df, table, getattr(inp, "release_lookup", None), CTRG)


def make_ablation_tables(inp: Any) -> dict[str, Path] | None:
    """Tables 4-7 from `out_dir/ablation_stats.csv` (written by `reg2rg ablate` / notebook 05)."""
    path = inp.paths.ablation_stats
    if not path.is_file():
        return None
    stats = read_stats(path)
    written = save_ablation_tables(stats, inp.figures_dir, descriptions(stats), inp.profile)
    return {f"{name}.{ext}": p for name, files in written.items() for ext, p in files.items()} or None


def _crg_values(inp: Any) -> dict[str, float | None]:
    """Table 2's CRG column: recomputed from the release's labels, and each kit row's `crg.json` (the
    VLM3D challenge's metric, which the paper did not report)."""
    out: dict[str, float | None] = {}
    if inp.release_dir and ReleaseFolder(inp.release_dir).labels.is_file():
        out["recomputed"] = recompute_release_crg(inp.release_dir)
    for run, folder in _kit_rows(inp).items():
        crg = MetricsFolder(folder).crg
        out[run] = load_json(crg)["CRG"] if crg.is_file() else None
    return out


def make_table8(inp: Any) -> dict[str, Path] | None:
    """Table 8 (the kit's): grounded finding accuracy of every evaluated run with `grounded_by_kind.csv`."""
    runs = {run: inp.metrics_dir(run) for run in inp.runs()}
    return _save_nonempty(
        table8_grounded(runs, inp.profile),
        inp,
        "table8_grounded_findings",
        "Table 8: grounded finding accuracy on the embedded benchmark: each inserted finding "
        "reported in its own region's paragraph (grounded recall), with the right lobe/side and "
        "size within +-20 % (attribute accuracy), and findings the model invented per case.",
    )


#: The table makers in order (each returns the files written, or None when its inputs are absent).
def make_table9(inp: Any) -> dict[str, Path] | None:
    """Table 9 (the kit's): per-label CE of `full`, beside the frozen encoders' validation probes (notebook
    02)."""
    labels_csv = MetricsFolder(inp.metrics_dir("full")).ce_labels
    if "full" not in inp.runs() or not labels_csv.is_file():
        return None
    report = inp.paths.vision / "pretrain.json"
    pretrain = json.loads(report.read_text()) if report.is_file() else None
    return _save_nonempty(
        table9_ce_per_label(labels_csv, pretrain),
        inp,
        "table9_ce_per_label",
        "Table 9 (the kit's): clinical efficacy of `full` per label on the test split (support: test cases "
        "with the finding; reported: cases where `full` writes it)"
        + (
            "; probe F1: a logistic-regression read-out of the frozen ViT's pooled tokens per region "
            "crop, fit on train and scored on validation (notebook 02)"
            if pretrain
            else ""
        ),
    )


TABLE_MAKERS = (make_table1, make_table2, make_table9, make_table3, make_ablation_tables, make_table8)
