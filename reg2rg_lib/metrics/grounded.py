"""Grounded finding accuracy: for every finding the embedded benchmark inserted, did the report say it where
it belongs, with the right side or lobe and size? Only a benchmark with exact ground truth allows this.

Ground truth: the benchmark manifest's `ground_truth[case]["findings"]` (`reg2rg_lib/data/synth/`): kind,
region, label and the parameters its sentence states (`lobe`, `side`, `size_mm`). For each finding of a
predicted case:

- **reported** when its region's paragraph of the generated report (paragraphs named "The region i is
  <region>:", joined when a name repeats, as the authors' `parse_report_to_region.py` joins them) holds a
  positive or uncertain mention of its kind (`KIND_PATTERNS`; sentences, clauses and negation as the rule
  labeler reads them, `labeler.find_mentions`). A mention in another region's paragraph does not count
  (`misplaced` says so). When the reference report names no region (e.g. the `no_rra` ablation), the whole
  report stands for every region (`grounding = "whole report"`).
- **attributes**, checked for reported findings whose sentence template carries them (`reports.ABNORMAL`):
  lobe (upper/middle/lower and left/right), side (left/right/bilateral), size within +-20 % (`SIZE_TOLERANCE`;
  mm or cm). An attribute is right when one of the mentioning sentences states the true value; a sentence that
  states none is wrong.
- **false findings**: a (case, region, kind) whose paragraph mentions a kind at home in that region
  (`HOME_REGION`) positively although the case has no such inserted finding there; counted once each.

Outputs (`write_grounded_outputs`): DIR/grounded_findings.csv (one row per inserted finding),
DIR/grounded_by_kind.csv (one row per kind + `all`: the kit's Table 8) and DIR/grounded.json
(`grounded_recall`, `attribute_accuracy`, `false_findings_per_case`, counts).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.data.layout import case_id
from reg2rg_lib.data.synth.reports import ABNORMAL
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.metrics.csv_inputs import read_report_pairs
from reg2rg_lib.metrics.labeler import find_mentions
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import REGIONS, split_regions

SIZE_TOLERANCE = 0.20  # a stated size counts when within +-20 % of the inserted one
#: kind -> (mention patterns, a cue the sentence must hold or None, a cue that rules the sentence out or None)
KIND_PATTERNS: dict[str, tuple[tuple[str, ...], str | None, str | None]] = {
    "lung_nodule": ((r"\bnodul\w*", r"\b(?:pulmonary|lung) mass(?:es)?\b"), None, r"\b(?:thyroid|liver)\b"),
    "consolidation": ((r"\bconsolidat\w*",), None, None),
    "lung_opacity": ((r"\bground[- ]glass\b", r"\bopacit(?:y|ies)\b"), None, None),
    "emphysema": ((r"\bemphysem\w*", r"\bbullae\b|\bbullous\b"), None, None),
    "atelectasis": ((r"\batelecta\w*",), None, None),
    "passive_atelectasis": ((r"\batelecta\w*",), None, None),
    "pleural_effusion": ((r"\bpleural effusions?\b", r"\bhydrothorax\b"), None, None),
    "cardiomegaly": ((r"\bcardiomegal\w*", r"\b(?:heart|cardiac)(?: size)? is (?:enlarged|increased)\b",
                      r"\benlarged heart\b"), None, None),
    "pericardial_effusion": ((r"\bpericardial (?:effusion|fluid)s?\b",), None, None),
    "coronary_calcification": ((r"\bcoronar\w*",), None, None),
    "arterial_calcification": ((r"\baort\w*", r"\batheroscler\w*"), None, r"\bcoronar\w*"),
    "lymphadenopathy": ((r"\blymphadenopath\w*", r"\blymph nodes?\b"), None, None),
    "hiatal_hernia": ((r"\bhiat(?:al|us) hernia\b", r"\bhernia\b"), None, None),
    "sternotomy_wires": ((r"\bsternotomy\b", r"\bwires?\b"), None, None),
    "thyroid_nodule": ((r"\bnodul\w*",), r"\bthyroid\b", None),
    "liver_cyst": ((r"\bcysts?\b",), None, None),
}
#: kinds that one mention cannot tell apart count as one (a paragraph says "atelectasis" once for both)
MENTION_CLASS: dict[str, str] = {"passive_atelectasis": "atelectasis"}
#: the region whose paragraph reports each kind (as the generator records it)
HOME_REGION: dict[str, str] = {
    "lung_nodule": "lung",
    "consolidation": "lung",
    "lung_opacity": "lung",
    "emphysema": "lung",
    "atelectasis": "lung",
    "passive_atelectasis": "lung",
    "pleural_effusion": "pleura",
    "cardiomegaly": "heart",
    "pericardial_effusion": "heart",
    "coronary_calcification": "heart",
    "arterial_calcification": "mediastinum",
    "lymphadenopathy": "mediastinum",
    "hiatal_hernia": "esophagus",
    "sternotomy_wires": "bone",
    "thyroid_nodule": "thyroid",
    "liver_cyst": "abdomen",
}
_COMPILED = {k: tuple(re.compile(p) for p in pats) for k, (pats, _, _) in KIND_PATTERNS.items()}
_CUES = {k: (re.compile(req) if req else None, re.compile(excl) if excl else None)
         for k, (_, req, excl) in KIND_PATTERNS.items()}
_LOBE = re.compile(
    r"\b(upper|middle|lower) lobe of the (left|right) lung\b|\b(left|right) (upper|middle|lower) lobe\b"
)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(mm|cm)\b")
ATTRIBUTES: tuple[str, ...] = ("lobe", "side", "size")
#: the headline numbers summary.json carries for every run on the benchmark
GROUNDED_METRICS: tuple[str, ...] = ("grounded_recall", "attribute_accuracy", "false_findings_per_case")


def mention_class(kind: str) -> str:
    return MENTION_CLASS.get(kind, kind)


# ---------------------------------------------------------------------------------------------- ground truth


def find_manifest(path: str | os.PathLike[str]) -> Path:
    """The benchmark manifest with ground truth: `path` itself (a JSON file), or `manifest.json` in `path`, in
    its parent (notebook 01's out/data/manifest.json beside out/data/benchmark), or in `path/data` (a profile
    folder)."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = [path / "manifest.json", path.parent / "manifest.json", path / "data" / "manifest.json",
                  path / "data" / "benchmark" / "manifest.json"]
    for cand in candidates:
        if cand.is_file() and "ground_truth" in _load_json(cand):
            return cand
    if not path.exists():
        raise BadInputError(path, "not found; give the embedded benchmark's folder or its manifest.json")
    raise BadInputError(
        path,
        "no benchmark manifest with ground truth found (looked for manifest.json here, "
        "beside it and in data/); grounded findings need the embedded benchmark (`reg2rg synth`)",
    )


def benchmark_manifest(path: str | os.PathLike[str]) -> Path | None:
    """`find_manifest(path)` when `path` holds the embedded benchmark's ground truth, else None (real
    data)."""
    try:
        return find_manifest(path)
    except BadInputError:
        return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInputError(path, f"not a JSON manifest ({str(err).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise BadInputError(path, "not a JSON manifest (expected an object)")
    return obj


def read_ground_truth(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """{case id: [finding record, ...]} from the manifest `find_manifest(path)` finds."""
    manifest = find_manifest(path)
    gt = _load_json(manifest).get("ground_truth")
    if not isinstance(gt, dict) or not gt:
        raise BadInputError(
            manifest, "has no `ground_truth` section; only the embedded benchmark's manifest has one"
        )
    out = {}
    for name, entry in gt.items():
        findings = entry.get("findings") if isinstance(entry, dict) else None
        if not isinstance(findings, list):
            raise BadInputError(manifest, f"ground_truth[{name!r}] has no findings list")
        out[case_id(name)] = findings
    return out


def carried_attributes(kind: str) -> tuple[str, ...]:
    """The attributes the kind's sentence templates state (`{lobe}`, `{side}`, `{size_mm}`)."""
    templates = [t for k, ts in ABNORMAL.items() if k == kind or k.startswith(f"{kind}_") for t in ts]
    text = " ".join(templates)
    found = {"lobe": "{lobe}" in text, "side": "{side}" in text or kind == "pleural_effusion",
             "size": "{size_mm}" in text}
    return tuple(a for a in ATTRIBUTES if found[a])


# ---------------------------------------------------------------------------------------------- reading text


def read_lobe(sentence: str) -> tuple[str, str] | None:
    """(level, side) of the first lobe a sentence names ("lower lobe of the right lung", "right lower
    lobe")."""
    m = _LOBE.search(sentence.lower())
    if m is None:
        return None
    return (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))


def read_side(sentence: str) -> str | None:
    """"bilateral", "left" or "right" as a sentence states it (both sides named -> bilateral)."""
    s = sentence.lower()
    if re.search(r"\bbilateral\w*|\bboth (?:sides|lungs|hemithoraces)\b|\bon both\b", s):
        return "bilateral"
    left, right = bool(re.search(r"\bleft\b", s)), bool(re.search(r"\bright\b", s))
    return "bilateral" if left and right else "left" if left else "right" if right else None


def read_sizes(sentence: str) -> list[float]:
    """Every size a sentence states, in mm."""
    return [float(v) * (10.0 if unit == "cm" else 1.0) for v, unit in _SIZE.findall(sentence.lower())]


def attribute_checks(finding: Mapping[str, Any], sentences: Sequence[str]) -> dict[str, bool]:
    """{attribute: right?} for the attributes the finding's sentence carries, read from `sentences`."""
    params, out = finding.get("params") or {}, {}
    for attr in carried_attributes(str(finding["kind"])):
        if attr == "lobe" and "lobe" in params:
            want = read_lobe(str(params["lobe"]))
            out["lobe"] = any(read_lobe(s) == want for s in sentences)
        elif attr == "side" and "side" in params:
            out["side"] = any(read_side(s) == params["side"] for s in sentences)
        elif attr == "size" and "size_mm" in params:
            size = float(params["size_mm"])
            out["size"] = any(
                abs(v - size) <= SIZE_TOLERANCE * size for s in sentences for v in read_sizes(s)
            )
    return out


def region_texts(reference: str, prediction: str) -> tuple[dict[str, str], str]:
    """({region: predicted paragraph text}, grounding mode). Paragraphs are joined per name; a reference
    without region names makes the whole prediction stand for every region."""
    if not any(p.region in REGIONS for p in split_regions(reference)):
        return {r: prediction for r in REGIONS}, "whole report"
    texts: dict[str, list[str]] = {}
    for p in split_regions(prediction):
        if p.region and p.paragraph:
            texts.setdefault(p.region, []).append(p.paragraph)
    return {r: " ".join(v) for r, v in texts.items()}, "region paragraph"


def positive_sentences(text: str, kind: str) -> list[str]:
    """Sentences of `text` with a positive or uncertain mention of `kind` (its cues applied)."""
    need, skip = _CUES[kind]
    found = find_mentions(text, {kind: _COMPILED[kind]})
    return list(dict.fromkeys(m.sentence for m in found if m.status != "negated"
                              and (need is None or need.search(m.sentence))
                              and (skip is None or not skip.search(m.sentence))))


# ---------------------------------------------------------------------------------------------- scoring


def score_case(name: str, findings: Sequence[Mapping[str, Any]], reference: str, prediction: str
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one row per inserted finding, one row per false finding) for one case."""
    texts, mode = region_texts(reference, prediction)
    rows = []
    for f in findings:
        kind, region = str(f["kind"]), str(f["region"])
        if kind not in KIND_PATTERNS:
            continue  # a kind this version does not know how to read is left out, not scored 0
        said = positive_sentences(texts.get(region, ""), kind)
        elsewhere = mode == "region paragraph" and not said and any(
            positive_sentences(t, kind) for r, t in texts.items() if r != region)
        checks = attribute_checks(f, said) if said else {}
        rows.append(
            {
                "case": name,
                "kind": kind,
                "label": f.get("label") or "",
                "region": region,
                "grounding": mode,
                "reported": bool(said),
                "misplaced": bool(elsewhere),
                **{f"{a}_ok": checks.get(a) for a in ATTRIBUTES},
                "attributes_checked": len(checks),
                "attributes_correct": int(sum(checks.values())),
                "sentence": " | ".join(said),
            }
        )
    inserted = {(str(f["region"]), mention_class(str(f["kind"]))) for f in findings}
    false_rows, seen = [], set()
    for kind, home in HOME_REGION.items():
        key = (home, mention_class(kind))
        if key in inserted or key in seen:
            continue
        said = positive_sentences(texts.get(home, ""), kind)
        if said:
            seen.add(key)
            false_rows.append(
                {"case": name, "kind": mention_class(kind), "region": home, "sentence": " | ".join(said)}
            )
    return rows, false_rows


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def by_kind_table(findings: pd.DataFrame, false: pd.DataFrame, n_cases: int) -> pd.DataFrame:
    """Table 8: per kind (and `all`) inserted, reported, grounded recall, misplaced, attribute accuracy, false
    findings and false findings per case."""
    kinds = list(dict.fromkeys([*HOME_REGION, *findings["kind"]]))
    rows = []
    for kind in [*kinds, "all"]:
        f = findings if kind == "all" else findings[findings["kind"] == kind]
        fl = false if kind == "all" else false[false["kind"] == mention_class(kind)]
        if kind != "all" and mention_class(kind) != kind:
            fl = fl.iloc[0:0]  # a merged kind's false findings are counted under its class once
        if kind != "all" and f.empty and fl.empty:
            continue
        checked, correct = int(f["attributes_checked"].sum()), int(f["attributes_correct"].sum())
        row = {"kind": kind, "region": HOME_REGION.get(kind, "") if kind != "all" else "",
               "inserted": len(f), "reported": int(f["reported"].sum()),
               "grounded_recall": _ratio(f["reported"].sum(), len(f)), "misplaced": int(f["misplaced"].sum()),
               "attributes_checked": checked, "attribute_accuracy": _ratio(correct, checked)}
        for a in ATTRIBUTES:
            col = f[f"{a}_ok"].dropna()
            row[f"{a}_accuracy"] = _ratio(col.astype(bool).sum(), len(col))
        row["false_findings"] = len(fl)
        row["false_findings_per_case"] = _ratio(len(fl), n_cases)
        rows.append(row)
    return pd.DataFrame(rows)


FINDING_COLUMNS: tuple[str, ...] = (
    "case",
    "kind",
    "label",
    "region",
    "grounding",
    "reported",
    "misplaced",
    *(f"{a}_ok" for a in ATTRIBUTES),
    "attributes_checked",
    "attributes_correct",
    "sentence",
)


def grounded_findings(ids: Sequence[str], references: Sequence[str], predictions: Sequence[str],
                      ground_truth: Mapping[str, Sequence[Mapping[str, Any]]], source: str = "predictions"
                      ) -> dict[str, Any]:
    """Score every predicted case the ground truth knows; {"findings", "false", "by_kind", "summary"}."""
    rows, false, cases = [], [], 0
    for name, ref, hyp in zip(ids, references, predictions):
        key = case_id(name)
        if key not in ground_truth:
            continue
        cases += 1
        r, f = score_case(key, ground_truth[key], ref, hyp)
        rows += r
        false += f
    if cases == 0:
        raise BadInputError(
            source,
            f"none of its {len(ids)} case id(s) (e.g. {list(ids)[:2]}) is in the benchmark's "
            "ground truth; grounded findings need predictions on the embedded benchmark",
        )
    findings = pd.DataFrame(rows, columns=list(FINDING_COLUMNS))
    false_df = pd.DataFrame(false, columns=["case", "kind", "region", "sentence"])
    table = by_kind_table(findings, false_df, cases)
    total = table[table["kind"] == "all"].iloc[0]
    summary = {
        "n_cases": cases,
        "n_unmatched": len(ids) - cases,
        "inserted": int(total["inserted"]),
        "reported": int(total["reported"]),
        "grounded_recall": total["grounded_recall"],
        "attributes_checked": int(total["attributes_checked"]),
        "attribute_accuracy": total["attribute_accuracy"],
        "false_findings": int(total["false_findings"]),
        "false_findings_per_case": float(total["false_findings_per_case"]),
        "size_tolerance": SIZE_TOLERANCE,
    }
    summary = {k: (None if v is None or v != v else v if isinstance(v, int) else float(v))  # NaN -> null
               for k, v in summary.items()}
    return {"findings": findings, "false": false_df, "by_kind": table, "summary": summary}


def write_grounded_outputs(result: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """DIR/grounded_findings.csv, DIR/grounded_false_findings.csv, DIR/grounded_by_kind.csv,
    DIR/grounded.json."""
    out = MetricsFolder(out_dir)
    paths = {"findings": out.grounded_findings, "false": out.grounded_false, "by_kind": out.grounded_by_kind,
             "json": out.grounded_json}
    for key in ("findings", "false", "by_kind"):
        with atomic_path(paths[key]) as tmp:
            result[key].to_csv(tmp, index=False)
    write_json_atomic(paths["json"], result["summary"])
    return paths


def evaluate_grounded(
    pred_csv: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    gt_column: str | None = None,
    pred_column: str | None = None,
    allow_empty_predictions: bool = False,
) -> dict[str, Any]:
    """Read predictions and the benchmark's ground truth, score, write the outputs; return the summary."""
    pairs = read_report_pairs(
        pred_csv, gt_column, pred_column, allow_empty_predictions=allow_empty_predictions
    )
    gt = read_ground_truth(data)
    result = grounded_findings(pairs.ids, pairs.references, pairs.predictions, gt, source=str(pairs.path))
    write_grounded_outputs(result, out_dir)
    return {**result["summary"], "manifest": str(find_manifest(data))}
