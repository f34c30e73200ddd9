"""Per-region scores of numbered reports: region recognition and topic consistency.

Region recognition: does the model name the organ of each prompt region correctly? Reg2RG's region-report
alignment makes the model start each paragraph with "The region i is <organ>:", where region i is the i-th
mask of the prompt. Comparing those names with the reference's gives:
- per-sample accuracy: share of the reference's numbered regions whose predicted name is right (mean±std over
  samples with at least one numbered region);
- per-region precision/recall/F1 over all (sample, index) slots: a slot whose reference is R counts as TP for
  R if the prediction says R, else FN for R and FP for the predicted name; predicted slots the reference lacks
  are FP;
- macro averages (mean±std over regions) over all 10 regions and, as the authors' script did, without lung and
  pleura. Multi-word names are read whole ("trachea and bronchie"; the original truncated it to "trachea").
Names outside the 10 regions are kept (as FPs under their own name) but not averaged.

Topic consistency (`topic_consistency`): the share of the generated numbered paragraphs ("The region i is X:
...") whose every sentence belongs to the organ X the paragraph names. Region accuracy reads only the name; a
model can name the organ right and write another organ's sentence under it ("The region 7 is breast: The bones
are intact"). A sentence's organs are read
- exactly, from the embedded benchmark's sentence bank (`data/synth/reports.py`): a sentence belongs to organ
  X when it is one of X's NORMAL paraphrases or one of the ABNORMAL sentences of a finding kind reported in
  X's paragraph (`grounded.HOME_REGION`); templates are matched whole, each slot by what it can hold (a number
  for `size_mm`, left/right/bilateral for `side`, one of the benchmark's lobe phrases for `lobe`), case and
  spacing ignored;
- otherwise (free text such as RadGenome's, or a generated sentence that is in no bank) by keywords
  (`TOPIC_KEYWORDS`, word prefixes per organ): the organs whose keywords it holds. A sentence with no keyword
  of any organ is neutral (on topic anywhere: "No abnormality is seen."); one whose keywords name the
  paragraph's organ (possibly among others) is on topic; one whose keywords name only other organs is off
  topic.
A paragraph is consistent when it has at least one sentence and every sentence is on topic (an empty paragraph
is not consistent). Sentences are split after ".", "!" or "?" followed by a space (not at ";": the bank has
sentences with one). Only numbered paragraphs count
(a report without region names, e.g. the `no_rra` ablation's, has none: the share is None, not applicable).
`region_recognition` adds the result under "topic" and its share as "topic_consistency".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reg2rg_lib.data.synth.anatomy import LOBE_TEXT
from reg2rg_lib.data.synth.reports import ABNORMAL, NORMAL
from reg2rg_lib.io import write_json_atomic, write_text_atomic
from reg2rg_lib.metrics.grounded import HOME_REGION
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import REGIONS, region_sequence, split_regions

#: Regions the authors' script left out of its averages.
EXCLUDED_IN_ORIGINAL: tuple[str, ...] = ("lung", "pleura")


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def _macro(per_region: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"regions": list(names)}
    for k in ("precision", "recall", "f1"):
        vals = np.array([per_region[n][k] for n in names], dtype=np.float64)
        out[k] = float(vals.mean()) if vals.size else 0.0
        out[f"{k}_std"] = float(vals.std()) if vals.size else 0.0
    return out


def region_recognition(references: Sequence[str], predictions: Sequence[str],
                       ids: Sequence[Any] | None = None) -> dict[str, Any]:
    """Region-recognition metrics from the "The region i is X:" prefixes of reference and predicted
    reports."""
    ids = list(ids) if ids is not None else list(range(len(references)))
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    fp_ids: dict[str, list] = defaultdict(list)
    fn_ids: dict[str, list] = defaultdict(list)
    accuracy: list[float | None] = []
    for sid, ref, hyp in zip(ids, references, predictions):
        gt, pred = region_sequence(ref or ""), region_sequence(hyp or "")
        correct = 0
        for i, name in gt.items():
            got = pred.get(i)
            if got == name:
                tp[name] += 1
                correct += 1
                continue
            fn[name] += 1
            fn_ids[name].append(sid)
            if got is not None:
                fp[got] += 1
                fp_ids[got].append(sid)
        for i, got in pred.items():
            if i not in gt:
                fp[got] += 1
                fp_ids[got].append(sid)
        accuracy.append(correct / len(gt) if gt else None)
    names = list(REGIONS) + sorted(set(tp) | set(fp) | set(fn) - set(REGIONS))
    per_region = {n: {**_prf(tp[n], fp[n], fn[n]), "tp": tp[n], "fp": fp[n], "fn": fn[n],
                      "support": tp[n] + fn[n], "fp_ids": fp_ids[n], "fn_ids": fn_ids[n]} for n in names}
    scored = np.array([a for a in accuracy if a is not None], dtype=np.float64)
    topic = topic_consistency(predictions)
    return {
        "n": len(accuracy),
        "n_scored": int(scored.size),
        "accuracy": float(scored.mean()) if scored.size else 0.0,
        "accuracy_std": float(scored.std()) if scored.size else 0.0,
        "per_sample_accuracy": accuracy,
        "per_region": per_region,
        "macro_all": _macro(per_region, REGIONS),
        "macro_without_lung_pleura": _macro(
            per_region, [r for r in REGIONS if r not in EXCLUDED_IN_ORIGINAL]
        ),
        "unknown_regions": [n for n in names if n not in REGIONS],
        "topic_consistency": topic["share"],
        "topic": topic,
    }


def region_report_text(metrics: dict[str, Any]) -> str:
    """A plain-text report in the spirit of the authors' `region_classification_report.txt`."""
    lines = [
        "Accuracy for each sample:",
        f"Mean accuracy: {metrics['accuracy']}",
        f"Standard deviation: {metrics['accuracy_std']}",
        f"(samples with numbered regions: {metrics['n_scored']} of {metrics['n']})",
        f"Topic consistency: {_share_text(metrics.get('topic_consistency'))} "
        f"(generated paragraphs whose sentences all belong to the organ they name: "
        f"{(metrics.get('topic') or {}).get('consistent', 0)} of "
        f"{(metrics.get('topic') or {}).get('paragraphs', 0)})",
        "",
        "Precision, recall and F1 score for each region:",
    ]
    for name, m in metrics["per_region"].items():
        lines += [
            f"{name}:",
            f"Precision: {m['precision']}",
            f"Recall: {m['recall']}",
            f"F1 score: {m['f1']}",
            f"Support: {m['support']}",
            "",
        ]
    for key, title in (
        ("macro_all", "all 10 regions"),
        ("macro_without_lung_pleura", "regions without lung and pleura (the original's average)"),
    ):
        m = metrics[key]
        lines.append(f"Macro average over {title}:")
        for k, label in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1 score")):
            lines.append(f"{label} of regions: {m[k]}±{m[k + '_std']}")
        lines.append("")
    return "\n".join(lines)


def _share_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value}"


# ------------------------------------------------------------------------------------------ topic consistency

#: Free-text rule: word prefixes (regexes, matched at a word start, case ignored) that tie a sentence to an
#: organ. A sentence may name several organs ("pleural effusion with passive atelectasis of the lower lobe").
TOPIC_KEYWORDS: dict[str, tuple[str, ...]] = {
    "abdomen": (
        r"abdom",
        r"liver",
        r"hepat",
        r"spleen",
        r"splen",
        r"kidney",
        r"renal",
        r"adrenal",
        r"gallbladder",
        r"pancrea",
        r"stomach",
        r"gastric",
        r"bowel",
        r"colon",
        r"bile",
    ),
    "bone": (
        r"bone",
        r"bony",
        r"osseous",
        r"osteo",
        r"vertebra",
        r"spine\b",
        r"spinal",
        r"spondyl",
        r"ribs?\b",
        r"stern(?:um|al|otomy)",
        r"clavic",
        r"scapul",
        r"lytic",
        r"sclerotic",
        r"fractur",
        r"wires?\b",
    ),
    "breast": (r"breast", r"mammar", r"gynecomast"),
    "esophagus": (r"esophag", r"oesophag", r"hiatal", r"hiatus", r"hernia"),
    "heart": (
        r"heart",
        r"cardi",
        r"pericard",
        r"coronar",
        r"atri(?:um|al|a)\b",
        r"ventric",
        r"valv",
        r"mitral",
    ),
    "lung": (
        r"lungs?\b",
        r"pulmonar",
        r"parenchym",
        r"(?:upper|middle|lower) lobes?\b",
        r"both upper lobes",
        r"emphysem",
        r"consolidat",
        r"ground[- ]glass",
        r"opacit",
        r"atelecta",
        r"bronchiectas",
        r"fibro",
        r"interstiti",
        r"septal",
        r"bulla",
        r"bullous",
        r"mosaic",
        r"peribronch",
    ),
    "mediastinum": (r"mediastin", r"lymph", r"aort", r"atheroscler", r"thym", r"hil(?:um|ar)\b"),
    "pleura": (r"pleura", r"pneumothora", r"hydrothora", r"costophrenic"),
    "thyroid": (r"thyroid",),
    "trachea and bronchie": (r"trachea", r"bronch(?:i|us|ial)\b", r"main bronch", r"airway", r"carina"),
}
_TOPIC_RE = {r: re.compile(r"\b(?:" + "|".join(k) + ")", re.IGNORECASE) for r, k in TOPIC_KEYWORDS.items()}
#: What a template slot of the sentence bank can hold.
_SLOT_RE = {"size_mm": r"\d+(?:\.\d+)?", "side": r"(?:left|right|bilateral)",
            "lobe": "(?:" + "|".join(re.escape(t) for t, _ in LOBE_TEXT.values()) + ")"}
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


def _template_regex(template: str) -> str:
    parts = re.split(r"\{(\w+)\}", template)  # text, slot, text, slot, ..., text
    out = []
    for k, part in enumerate(parts):
        if k % 2:
            out.append(_SLOT_RE.get(part, r"[^.]+?"))
        else:
            out.append(r"\s+".join(re.escape(w) for w in part.split(" ")))
    return "".join(out)


def _bank() -> list[tuple[re.Pattern[str], str]]:
    """(whole-sentence pattern, organ) of every sentence of the embedded benchmark's bank."""
    out = [
        (re.compile(_template_regex(s), re.IGNORECASE), region)
        for region, texts in NORMAL.items()
        for s in texts
    ]
    for kind, texts in ABNORMAL.items():
        region = HOME_REGION.get(kind) or HOME_REGION[kind.removesuffix("_bilateral")]
        out += [(re.compile(_template_regex(t), re.IGNORECASE), region) for t in texts]
    return out


_BANK = _bank()
TOPIC_RULES: tuple[str, ...] = ("auto", "bank", "keywords")


def split_sentences(paragraph: str) -> list[str]:
    """The non-blank sentences of a paragraph (split after . ! ? and a space)."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(" ".join(str(paragraph or "").split())) if s.strip()]


def sentence_topics(sentence: str, rule: str = "auto") -> tuple[set[str], str]:
    """(the organs a sentence belongs to, how that was read: "bank", "keywords" or "none").

    `rule`: "auto" (the bank where the sentence is in it, else keywords), "bank" (the bank only: a sentence
    outside it belongs to no organ) or "keywords" (the keyword rule only). An empty set read by keywords is a
    neutral sentence; an empty set from the bank rule is a sentence outside the bank."""
    if rule not in TOPIC_RULES:
        raise ValueError(f"rule must be one of {', '.join(TOPIC_RULES)}, got {rule!r}")
    text = " ".join(str(sentence).split())
    if rule != "keywords":
        hits = {region for pattern, region in _BANK if pattern.fullmatch(text)}
        if hits or rule == "bank":
            return hits, "bank" if hits else "none"
    return {region for region, pattern in _TOPIC_RE.items() if pattern.search(text)}, "keywords"


def sentence_on_topic(sentence: str, organ: str, rule: str = "auto") -> bool:
    """Does `sentence` belong to `organ` (the rule in the module docstring)?"""
    organs, how = sentence_topics(sentence, rule)
    if how == "keywords" and not organs:
        return True  # neutral: names no organ
    return organ in organs


def topic_consistency(predictions: Sequence[str], rule: str = "auto", examples: int = 10) -> dict[str, Any]:
    """Topic consistency of generated reports: {"share" (None when no report has a numbered paragraph),
    "paragraphs", "consistent", "empty", "per_region" {organ: {"share", "paragraphs", "consistent"}},
    "per_sample" ([paragraphs, consistent] of each report, in order: what a bootstrap over cases resamples),
    "sentences" (how many were read by the bank, by keywords, neutral, off topic), "rule", "off_topic" (up to
    `examples` (organ, sentence) pairs)}."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # organ -> [paragraphs, consistent]
    counts = {"bank": 0, "keywords": 0, "neutral": 0, "off_topic": 0}
    off: list[dict[str, str]] = []
    per_sample: list[list[int]] = []
    empty = 0
    for text in predictions:
        mine = [0, 0]  # this report's [paragraphs, consistent]
        for p in split_regions(text or ""):
            if p.index is None:
                continue
            sentences = split_sentences(p.paragraph)
            ok = bool(sentences)
            empty += not sentences
            for s in sentences:
                organs, how = sentence_topics(s, rule)
                counts["bank" if how == "bank" else "keywords"] += how != "none"
                neutral = how == "keywords" and not organs
                counts["neutral"] += neutral
                if not neutral and p.region not in organs:
                    ok = False
                    counts["off_topic"] += 1
                    if len(off) < examples:
                        off.append({"region": p.region, "sentence": s})
            for tally in (per[p.region], mine):
                tally[0] += 1
                tally[1] += ok
        per_sample.append(mine)
    total, good = sum(v[0] for v in per.values()), sum(v[1] for v in per.values())
    names = [r for r in REGIONS if r in per] + sorted(set(per) - set(REGIONS))
    return {
        "share": good / total if total else None,
        "paragraphs": total,
        "consistent": good,
        "empty": empty,
        "per_region": {
            r: {"share": per[r][1] / per[r][0], "paragraphs": per[r][0], "consistent": per[r][1]}
            for r in names
        },
        "per_sample": per_sample,
        "sentences": counts,
        "rule": rule,
        "off_topic": off,
    }


def write_region_outputs(metrics: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """DIR/region_metrics.json (full) and DIR/region_classification_report.txt."""
    out = MetricsFolder(out_dir)
    paths = {"json": out.region_json, "report": out.region_report}
    write_json_atomic(paths["json"], metrics)
    write_text_atomic(paths["report"], region_report_text(metrics))
    return paths
