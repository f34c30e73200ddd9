"""Does the model read the image? Per CT-RATE label the embedded benchmark inserts, what the vectors the model
splices for the reporting region *carry*, and whether the LLM *uses* them (`reg2rg evaluate image-use`,
notebook 04).

For each label, with `region` the organ whose paragraph reports it (`LABEL_FINDINGS`, the generator's record):

- **carried**: a logistic-regression probe (standardised features, L2, C=1, fixed seed; scikit-learn) on the
  vectors the trained model splices into the prompt for that region: its texture tokens after `fc`
  (`Reg2RG.visual_tokens`), averaged over the region's tokens, concatenated with its geometry token after
  `mask_fc` (whichever of the two the configuration has). Fit on the TRAIN split's cases that have the region,
  AUC on the evaluated split's; with both kinds, the same probe on the texture part and on the geometry token
  alone too (`carried_texture_auc`, `carried_geometry_auc`).
- **used**: the AUC, against the case's true label, of a teacher-forced log-odds. The generation prompt holds
  all the case's regions in the canonical order (`build_sample` without an rng, as at test time) and the
  target holds every other region's ground-truth paragraph (teacher forcing), with the region's paragraph
  replaced by one candidate sentence; the candidate's score is the sum of the log-probabilities of its tokens.
  The log-odds is `logsumexp(label's sentences) - logsumexp(region's NORMAL paraphrases)` (each set: every
  paraphrase of the benchmark's bank, `data/synth/reports.py`; a paraphrase probability mass, not a mean, so
  the one paraphrase the model prefers counts). A sentence with a slot ({size_mm}, {lobe}, {side}) is scored
  on its opening words up to the first slot only (the rest filled with `SLOT_FILL` for a natural tokenisation,
  and not scored), so that a wrong number or side does not hide a right finding; paraphrases whose scored
  openings coincide are scored once. Character spans of the target map to token positions only through the
  sample's own mapping (`samples.dataset.target_token_positions`), so targets that hold more
  than the text (re-reference tokens) are scored at the right positions; each sample is cut after the
  candidate's last token (a causal LM: what follows cannot change the score).
- **control**: the same log-odds with every region tensor of the region (ViT features or images, and its mask)
  taken from another case of the split: for each of `CONTROL_SHIFTS` shifts s (drawn once from `seed`), case k
  gets case (k + s) mod n's, the first case from there on that has the region; the AUC pools every (case,
  donor) pair against the case's own label. A model that reads the region's own vectors falls to about the
  *chance* level here; a model that ignores them gives the same number as *used*.
- **control_chance_auc**: the control AUC of a model that reads only the region's vectors, perfectly: each
  pair scored by its donor's true label. With one donor per case and few positives the donors' labels line up
  with the cases' by chance (on the demo's test split, one shift put pleural effusion's at 0.79), so the
  control is read against this level; pooling several shifts brings it near 0.5.
- **gap_flag**: carried but not used: `carried_auc >= GAP_THRESHOLD` (0.9) and `used_auc < GAP_THRESHOLD`.
- **crop**: what the input itself holds, before any model: the same probe on a model-free read-out of the
  region's texture crop (`crop_readout`: its intensity histogram and quantiles), fit on the train cases.
  **lost_flag**: in the crop but not carried (`crop_auc >= 0.9`, `carried_auc` below): lost by the encoder,
  not absent from the input. Together the columns follow a finding along the chain: crop -> carried -> used.

NaN, with a reason in `note`, where a label has fewer than 2 classes among the train cases (carried) or the
evaluated cases (all three). `image_use_table` returns a DataFrame (attrs: split, vectors, scoring, shifts,
cases), `write_image_use` writes DIR/image_use.csv and DIR/image_use.json (with `image_use_headline`: the
lowest used and highest control AUC over the carried labels, the number of gaps), `image_use_text` a
one-screen summary.

One measurement, one file (above ~400 lines on purpose): the probe, the teacher-forced scoring and the table
are the three parts of the instrument defined above; they share the case items, the candidates and the donors,
and none is used without the others.

One file over 500 lines: one instrument, whose probe (`carried`), teacher-forced scores (`used`, `control`)
and table fill the columns of the same row per label and are read together.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.data.synth.reports import ABNORMAL, NORMAL
from reg2rg_lib.errors import KitError
from reg2rg_lib.infer.generate import load_model
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.metrics.crop_readout import crop_arrays
from reg2rg_lib.metrics.grounded import HOME_REGION
from reg2rg_lib.model import build_sample
from reg2rg_lib.model.prompt import GEOMETRY, TEXTURE
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import LABELS
from reg2rg_lib.samples.collate import VISUAL_KEYS, Collator
from reg2rg_lib.samples.dataset import ReportDataset, target_token_positions
from reg2rg_lib.samples.features import feature_cache_for, use_feature_cache

#: label -> the benchmark's finding kinds that make it positive (their sentences, `reports.ABNORMAL`).
LABEL_FINDINGS: dict[str, tuple[str, ...]] = {
    "Lung nodule": ("lung_nodule",),
    "Consolidation": ("consolidation",),
    "Lung opacity": ("lung_opacity",),
    "Emphysema": ("emphysema",),
    "Atelectasis": ("atelectasis", "passive_atelectasis"),
    "Pleural effusion": ("pleural_effusion", "pleural_effusion_bilateral"),
    "Cardiomegaly": ("cardiomegaly",),
    "Pericardial effusion": ("pericardial_effusion",),
    "Coronary artery wall calcification": ("coronary_calcification",),
    "Arterial wall calcification": ("arterial_calcification",),
    "Lymphadenopathy": ("lymphadenopathy",),
    "Hiatal hernia": ("hiatal_hernia",),
    "Medical material": ("sternotomy_wires",),
}
#: The labels the instrument reads, in the CT-RATE column order.
BENCHMARK_LABELS: tuple[str, ...] = tuple(lab for lab in LABELS if lab in LABEL_FINDINGS)
#: Values written into a slot that is not scored (only the words before the first slot are).
SLOT_FILL: dict[str, Any] = {"size_mm": 10, "lobe": "lower lobe of the right lung", "side": "right"}
GAP_THRESHOLD = 0.9
CONTROL_SHIFTS = 3  # donors per case in the control (distinct shifts), pooled
COLUMNS: tuple[str, ...] = (
    "label",
    "region",
    "n_pos",
    "n_neg",
    "crop_auc",
    "carried_auc",
    "used_auc",
    "control_auc",
    "control_chance_auc",
    "gap_flag",
    "lost_flag",
    "carried_texture_auc",
    "carried_geometry_auc",
    "used_logodds_pos",
    "used_logodds_neg",
    "control_logodds_pos",
    "control_logodds_neg",
    "note",
)
SCORING = (
    "teacher-forced log-odds: logsumexp over the label's sentences minus logsumexp over the region's normal "
    "paraphrases of the summed token log-probabilities, each sentence in place of the region's paragraph "
    "with every other region's ground-truth paragraph (canonical region order); a sentence with a slot "
    "({size_mm}, {lobe}, {side}) scored on its words before the first slot"
)


def label_region(label: str) -> str:
    """The region whose paragraph reports `label` in the embedded benchmark."""
    kind = LABEL_FINDINGS[label][0]
    return HOME_REGION.get(kind) or HOME_REGION[kind.removesuffix("_bilateral")]


@dataclass(frozen=True)
class Candidate:
    """One sentence written in place of a region's paragraph: `text` (slots filled) and `scored`, the part
    whose tokens are summed (the opening words before the first slot, or the whole sentence)."""

    text: str
    scored: str


def candidate(template: str) -> Candidate:
    """A bank sentence as a `Candidate` (slots filled with `SLOT_FILL`, scored up to the first slot)."""
    text = template.format(**SLOT_FILL)
    cut = template.find("{")
    scored = template[:cut].rstrip() if cut > 0 else text
    return Candidate(text, scored or text)


def candidates(label: str | None, region: str) -> list[Candidate]:
    """The distinct candidates of `label`'s sentences (None: `region`'s NORMAL paraphrases); paraphrases whose
    scored openings coincide are kept once."""
    templates = NORMAL[region] if label is None else [t for k in LABEL_FINDINGS[label] for t in ABNORMAL[k]]
    out: dict[str, Candidate] = {}
    for t in templates:
        c = candidate(t)
        out.setdefault(c.scored, c)
    return list(out.values())


# -------------------------------------------------------------------------------------------------- the probe


def probe_auc(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
              seed: int = 0, name: str = "carried") -> tuple[float, str]:
    """(AUC on the eval vectors, "" or why NaN) of a standardised L2 logistic regression fit on the train
    vectors; `name` heads a note about the train cases (the column it fills)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_train, y_eval = np.asarray(y_train).astype(int), np.asarray(y_eval).astype(int)
    if len(set(y_train.tolist())) < 2:
        return (
            math.nan,
            f"{name}: {int(y_train.sum())} positive of {len(y_train)} train cases (needs both classes)",
        )
    if len(set(y_eval.tolist())) < 2:
        return math.nan, f"{int(y_eval.sum())} positive of {len(y_eval)} evaluated cases (needs both classes)"
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
    clf.fit(np.asarray(x_train, np.float64), y_train)
    return float(roc_auc_score(y_eval, clf.decision_function(np.asarray(x_eval, np.float64)))), ""


def _auc(y: Sequence[int], score: Sequence[float]) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, int)
    return float(roc_auc_score(y, np.asarray(score, np.float64))) if len(set(y.tolist())) == 2 else math.nan


# ------------------------------------------------------------------------------------------- the model's side


def _items(data: ReportDataset) -> list[dict[str, Any]]:
    """One dataset item per case (prompt-only samples; region tensors in the canonical order)."""
    return [data[i] for i in range(len(data))]


def _region_tensors(item: dict[str, Any]) -> list[str]:
    return [k for k in VISUAL_KEYS if k in item and not k.startswith("global")]


@torch.no_grad()
def spliced_region_vectors(model: Any, items: Sequence[dict[str, Any]], batch_size: int = 16
                           ) -> list[np.ndarray]:
    """Per case, (R, F) float64: each region's texture tokens after `fc` averaged over its tokens, then its
    geometry token after `mask_fc` (what the configuration has), regions in the item's (canonical) order."""
    cfg = model.config
    collate = Collator(model.tokenizer.pad_token_id)
    out: list[np.ndarray] = []
    for start in range(0, len(items), batch_size):
        chunk = list(items[start:start + batch_size])
        batch = collate(chunk)
        tokens = model.visual_tokens(**{k: batch[k] for k in VISUAL_KEYS if k in batch})
        counts = [len(it["sample"].regions) for it in chunk]
        parts = []
        if TEXTURE in tokens:
            tex = tokens[TEXTURE].float()
            parts.append(tex.reshape(sum(counts), cfg.texture_tokens, tex.shape[-1]).mean(1))
        if GEOMETRY in tokens:
            parts.append(tokens[GEOMETRY].float())
        if not parts:
            raise KitError("the model splices no region vectors (no texture and no geometry tokens)")
        vectors = torch.cat(parts, dim=-1).cpu().double().numpy()  # (sum R, F)
        for block in np.split(vectors, np.cumsum(counts)[:-1]):
            out.append(block)
    return out


def vectors_note(model: Any) -> str:
    """Which vectors the probe reads, in words."""
    cfg, dim = model.config, model.llm_dim
    parts = []
    if cfg.texture_tokens:
        parts.append(f"the mean of the region's {cfg.texture_tokens} texture tokens after fc ({dim} dims)")
    if cfg.geometry_tokens:
        parts.append(f"its geometry token after mask_fc ({dim} dims)")
    return ("the vectors spliced for the reporting region: " + " concatenated with ".join(parts)
            + "; standardised, L2 logistic regression (C=1) fit on the train split's cases")


def _candidate_span(sample: Any, index: int, region: str, cand: Candidate) -> tuple[int, int]:
    """The character span of `cand.scored` in the sample's target, in region `index`'s paragraph."""
    target = sample.target
    head = re.search(rf"The region {index} is {re.escape(region)}:", target)
    start = target.find(cand.text, head.end() if head else 0)
    if start < 0:
        raise KitError(f"the candidate sentence {cand.text!r} is not in the target built for region {region}")
    return start, start + len(cand.scored)


def _swap_region(item: dict[str, Any], index: int, donor: dict[str, Any], donor_index: int,
                 keys: Sequence[str] | None = None) -> dict[str, Any]:
    """`item` with region tensor row `index` taken from `donor`'s row `donor_index`: every region tensor, or
    those of `keys` that the item has."""
    out = dict(item)
    for key in _region_tensors(item):
        if keys is not None and key not in keys:
            continue
        value = item[key].clone()
        value[index] = donor[key][donor_index]
        out[key] = value
    return out


@torch.no_grad()
def _score(
    model: Any, jobs: Sequence[tuple[dict[str, Any], list[int]]], max_cells: float = 2e8
) -> list[float]:
    """Summed log-probabilities of the tokens at the given positions, one per (item, positions) job."""
    if not jobs:
        return []
    vocab = len(model.tokenizer)
    length = max(len(it["sample"].input_ids) for it, _ in jobs)
    if len(jobs) > 1 and len(jobs) * length * vocab > max_cells:  # the logits of a large vocabulary: split
        half = len(jobs) // 2
        return _score(model, jobs[:half], max_cells) + _score(model, jobs[half:], max_cells)
    batch = Collator(model.tokenizer.pad_token_id)([it for it, _ in jobs])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", *VISUAL_KEYS) if k in batch}
    logits = model(**inputs).logits  # (B, L, V)
    ids = batch["input_ids"].to(logits.device)
    out = []
    for row, (_, positions) in enumerate(jobs):
        if not positions:
            raise KitError("a candidate sentence mapped to no target token")
        pos = torch.as_tensor(positions, device=logits.device)
        logp = torch.log_softmax(logits[row, pos - 1].float(), dim=-1)  # token t is predicted at t - 1
        out.append(float(logp.gather(1, ids[row, pos].unsqueeze(1)).sum()))
    return out


def _donors(records: Sequence[Any], region: str, shift: int) -> dict[int, int]:
    """{case index: donor case index} over the cases that have `region`: k -> the first case with the region
    from (k + shift) mod n on, never k itself (no donor when no other case has it)."""
    n = len(records)
    has = [region in r.regions for r in records]
    out = {}
    for k in range(n):
        if not has[k]:
            continue
        for step in range(n):
            j = (k + shift + step) % n
            if j != k and has[j]:
                out[k] = j
                break
    return out


def teacher_forced_scores(model: Any, data: ReportDataset, items: Sequence[dict[str, Any]],
                          regions: dict[str, list[str | None]], *, shifts: Sequence[int] = (1,),
                          batch_size: int = 16, control_keys: Sequence[str] | None = None,
                          progress: bool = False) -> pd.DataFrame:
    """Scores of every candidate of each region in `regions` ({region: labels, None for its normal sentences})
    for each case of `data` that has the region, with the case's own region vectors ("own") and a donor's
    ("control", one donor per shift in `shifts`). Returns rows case, donor ("" for own), region, label ("" for
    normal), scored (the scored words), mode, score. `control_keys`: which region tensors the control takes
    from the donor (default all: texture and mask; `("region_masks",)`: the geometry branch alone)."""
    tok, cfg = model.tokenizer, model.config
    records = data.records
    plan = []  # (case index, region, label, candidate, mode, donor)
    for region, labels in regions.items():
        donors = [_donors(records, region, shift) for shift in shifts]
        for k, rec in enumerate(records):
            if region not in rec.regions:
                continue
            mine = list(dict.fromkeys(d[k] for d in donors if k in d))  # distinct donors of case k
            for label in labels:
                for cand in candidates(label, region):
                    plan.append((k, region, label, cand, "own", None))
                    plan += [(k, region, label, cand, "control", j) for j in mine]
    # one case's region's samples together: similar lengths once cut after the candidate, less padding
    plan.sort(key=lambda p: (p[0], records[p[0]].regions.index(p[1])))
    rows, jobs, meta = [], [], []
    bar = tqdm(total=len(plan), desc="image use (teacher forcing)", disable=not progress, dynamic_ncols=True)

    def flush() -> None:
        for m, s in zip(meta, _score(model, jobs)):
            rows.append({**m, "score": s})
        bar.update(len(jobs))
        jobs.clear()
        meta.clear()

    for k, region, label, cand, mode, donor in plan:
        rec, item = records[k], items[k]
        index = rec.regions.index(region)
        reports = {**rec.reports, region: cand.text}
        sample = build_sample(rec.regions, reports, tok, cfg)  # canonical order: no rng
        job = {**item, "sample": sample}
        if mode == "control":
            job = _swap_region(job, index, items[donor], records[donor].regions.index(region), control_keys)
        positions = target_token_positions(sample, tok, [_candidate_span(sample, index, region, cand)])
        if positions:  # a causal LM: what follows the candidate's last token cannot change its score
            end = max(positions) + 1
            job["sample"] = replace(sample, input_ids=sample.input_ids[:end], labels=sample.labels[:end])
        jobs.append((job, positions))
        meta.append({"case": rec.name, "donor": records[donor].name if donor is not None else "",
                     "region": region, "label": label or "", "scored": cand.scored, "mode": mode})
        if len(jobs) >= batch_size:
            flush()
    flush()
    bar.close()
    return pd.DataFrame(rows, columns=["case", "donor", "region", "label", "scored", "mode", "score"])


def _lse(values: pd.Series) -> float:
    v = values.to_numpy(np.float64)
    m = v.max()
    return float(m + np.log(np.exp(v - m).sum()))


def log_odds(scores: pd.DataFrame, label: str, region: str, mode: str = "own") -> pd.Series:
    """Per (case, donor) pair (donor "" for "own"), logsumexp(label's candidates) - logsumexp(region's normal
    candidates)."""
    s = scores[(scores["region"] == region) & (scores["mode"] == mode)]
    keys = ["case", "donor"]
    pos = s[s["label"] == label].groupby(keys, sort=False)["score"].agg(_lse)
    neg = s[s["label"] == ""].groupby(keys, sort=False)["score"].agg(_lse)
    return (pos - neg).dropna()


# -------------------------------------------------------------------------------------------------- the table


def image_use_table(
    model: Any,
    cache: Any,
    split: str = "test",
    *,
    labels: Sequence[str] | None = None,
    feature_cache: bool | None = None,
    batch_size: int = 16,
    seed: int = 0,
    probe: bool = True,
    progress: bool = False,
    return_scores: bool = False,
    control_shifts: int = CONTROL_SHIFTS,
    control_keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The instrument's table for `split` of the prep `cache` (module docstring): one row per label (`labels`,
    default every label the benchmark inserts) with the columns of `COLUMNS`.

    `feature_cache`: feed cached frozen-ViT features (None: when the ViT is frozen, as generation does; built
    for the cases that lack them). `probe=False` skips the carried probe (and the train split).
    `return_scores`: the per-candidate scores are kept in `attrs["scores"]` too. `control_shifts`: donors per
    case in the control; `control_keys`: the region tensors it takes from them (default all; one branch's:
    `teacher_forced_scores`)."""
    labels = list(labels) if labels is not None else list(BENCHMARK_LABELS)
    unknown = [lab for lab in labels if lab not in LABEL_FINDINGS]
    if unknown:
        raise KitError(f"no benchmark sentences for label(s) {', '.join(unknown)}; the instrument reads "
                       f"{', '.join(BENCHMARK_LABELS)}")
    model.eval()
    records = cache.cases(split)
    if not records:
        raise KitError(f"{getattr(cache, 'root', 'prep cache')}: no {split!r} cases")
    if not all(r.labels for r in records):
        raise KitError(
            f"{getattr(cache, 'root', 'prep cache')}: the {split!r} cases carry no label table; the "
            "image-use instrument needs the embedded benchmark's exact labels"
        )
    features = None
    if use_feature_cache(model, feature_cache):
        splits = [split] + (["train"] if probe and split != "train" else [])
        features = feature_cache_for(model, cache, [r.name for s in splits for r in cache.cases(s)],
                                     progress=progress)
    data = ReportDataset(
        cache,
        split,
        model.tokenizer,
        model.config,
        features=features,
        shuffle_regions=False,
        with_targets=False,
    )
    items = _items(data)
    by_region: dict[str, list[str | None]] = {}
    for lab in labels:
        by_region.setdefault(label_region(lab), [None]).append(lab)
    n = len(records)
    shifts = sorted(int(v) for v in np.random.default_rng(seed).choice(
        np.arange(1, n), size=min(control_shifts, n - 1), replace=False)) if n > 1 else []
    scores = teacher_forced_scores(model, data, items, by_region, shifts=shifts, batch_size=batch_size,
                                   control_keys=control_keys, progress=progress)
    carried = _carried(model, cache, data, items, labels, features, batch_size, seed) if probe else {}
    crop = _crop(cache, split, labels, seed) if probe else {}
    table = pd.DataFrame(
        [_row(lab, scores, records, carried, crop, split) for lab in labels], columns=list(COLUMNS)
    )
    table.attrs.update(_table_attrs(split, n, shifts, seed, vectors_note(model) if probe else None))
    if control_keys is not None:
        table.attrs["control"] += f"; only the donor's {', '.join(control_keys)} (the case's own otherwise)"
    if return_scores:
        table.attrs["scores"] = scores
    return table


def _table_attrs(split: str, n: int, shifts: Sequence[int], seed: int, vectors: str | None
                 ) -> dict[str, Any]:
    """How the table was computed (its `attrs`; `vectors` None: not probed)."""
    return {
        "split": split,
        "cases": n,
        "shifts": shifts,
        "seed": seed,
        "vectors": vectors or "not probed",
        "scoring": SCORING,
        "gap_rule": f"carried_auc >= {GAP_THRESHOLD} and used_auc < {GAP_THRESHOLD} "
        "(NaN used counts as not used)",
        "lost_rule": f"crop_auc >= {GAP_THRESHOLD} and carried_auc < {GAP_THRESHOLD}",
        "crop": "a model-free read-out of the region's texture crop (metrics.crop_readout: intensity "
        "histogram and quantiles inside the region), probed as carried" if vectors else "not probed",
        "control": f"region vectors of case (k + s) mod {n} for s in {shifts} (the next case with the "
        "region), pooled; chance: the control AUC of a perfect reader of those vectors",
    }


def _carried(
    model: Any,
    cache: Any,
    data: ReportDataset,
    items: Sequence[dict[str, Any]],
    labels: Sequence[str],
    features: Any,
    batch_size: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """{label: {"auc", "note", "texture_auc", "geometry_auc"}}: the probe on the region's vectors (and, when
    the model has both kinds, on each kind alone), fit on the train split's cases, scored on `data`'s."""
    split = data.records[0].split if data.records else "?"
    train = (
        data
        if split == "train"
        else ReportDataset(
            cache,
            "train",
            model.tokenizer,
            model.config,
            features=features,
            shuffle_regions=False,
            with_targets=False,
        )
    )
    train_vecs = spliced_region_vectors(model, _items(train), batch_size)
    eval_vecs = spliced_region_vectors(model, items, batch_size)
    cfg, dim = model.config, model.llm_dim
    parts = {"texture_auc": slice(0, dim), "geometry_auc": slice(dim, 2 * dim)} \
        if cfg.texture_tokens and cfg.geometry_tokens else {}
    out = {}
    for lab in labels:
        region = label_region(lab)
        xt, yt = _region_rows(train.records, train_vecs, region, lab)
        xe, ye = _region_rows(data.records, eval_vecs, region, lab)
        if not len(xt) or not len(xe):
            out[lab] = {
                "auc": math.nan,
                "note": f"carried: no {'train' if not len(xt) else split} case has the {region}",
            }
            continue
        auc, note = probe_auc(xt, yt, xe, ye, seed)
        out[lab] = {"auc": auc, "note": note,
                    **{k: probe_auc(xt[:, cut], yt, xe[:, cut], ye, seed)[0] for k, cut in parts.items()}}
    return out


def _crop(cache: Any, split: str, labels: Sequence[str], seed: int) -> dict[str, dict[str, Any]]:
    """{label: {"auc", "note"}}: the probe on the crop read-out of the label's region (`crop_readout`)."""
    out = {}
    for lab, arrays in crop_arrays(cache, split, {lab: label_region(lab) for lab in labels}).items():
        auc, note = (math.nan, arrays) if isinstance(arrays, str) else probe_auc(*arrays, seed, "crop")
        out[lab] = {"auc": auc, "note": note}
    return out


def _row(label: str, scores: pd.DataFrame, records: Sequence[Any], carried: dict[str, dict[str, Any]],
         crop: dict[str, dict[str, Any]], split: str) -> dict[str, Any]:
    """One label's row of the table from the teacher-forced scores and the two probes' results."""
    region = label_region(label)
    truth = {r.name: int(r.labels.get(label, 0)) for r in records}
    own, ctrl = log_odds(scores, label, region, "own"), log_odds(scores, label, region, "control")
    y_own, y_ctrl = [truth[c] for c, _ in own.index], [truth[c] for c, _ in ctrl.index]
    n_pos = int(sum(y_own))
    probe = carried.get(label, {"auc": math.nan, "note": "carried: not probed"})
    c_auc = probe["auc"]
    in_crop = crop.get(label, {"auc": math.nan, "note": ""})
    notes = [n for n in (in_crop["note"], probe["note"]) if n]
    if len(set(y_own)) < 2:
        notes.append(f"{n_pos} positive of {len(y_own)} {split} cases with the {region} (needs both classes)")
    used, control = _auc(y_own, own.to_numpy()), _auc(y_ctrl, ctrl.to_numpy())
    return {
        "label": label,
        "region": region,
        "n_pos": n_pos,
        "n_neg": len(y_own) - n_pos,
        "crop_auc": in_crop["auc"],
        "carried_auc": c_auc,
        "carried_texture_auc": probe.get("texture_auc", math.nan),
        "carried_geometry_auc": probe.get("geometry_auc", math.nan),
        "used_auc": used,
        "control_auc": control,
        "control_chance_auc": _auc(y_ctrl, [truth[d] for _, d in ctrl.index]),
        "gap_flag": bool(c_auc >= GAP_THRESHOLD and not used >= GAP_THRESHOLD),
        "lost_flag": bool(in_crop["auc"] >= GAP_THRESHOLD and not c_auc >= GAP_THRESHOLD),
        "used_logodds_pos": _mean(own, y_own, 1),
        "used_logodds_neg": _mean(own, y_own, 0),
        "control_logodds_pos": _mean(ctrl, y_ctrl, 1),
        "control_logodds_neg": _mean(ctrl, y_ctrl, 0),
        "note": "; ".join(notes),
    }


def _region_rows(records: Sequence[Any], vectors: Sequence[np.ndarray], region: str, label: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for rec, vec in zip(records, vectors):
        if region in rec.regions:
            xs.append(vec[rec.regions.index(region)])
            ys.append(int(rec.labels.get(label, 0)))
    return np.asarray(xs), np.asarray(ys, int)


def _mean(values: pd.Series, y: Sequence[int], cls: int) -> float:
    v = values.to_numpy(np.float64)[np.asarray(y, int) == cls] if len(values) else np.array([])
    return float(v.mean()) if v.size else math.nan


# ------------------------------------------------------------------------------------------ files and summary


def write_image_use(table: pd.DataFrame, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """DIR/image_use.csv (the table) and DIR/image_use.json (the table's rows and how they were computed)."""
    out = MetricsFolder(out_dir)
    out.root.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out.image_use_csv, "json": out.image_use_json}
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    meta = {k: v for k, v in table.attrs.items() if k != "scores"}
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in table.to_dict(orient="records")]
    write_json_atomic(
        paths["json"],
        {
            **meta,
            "headline": image_use_headline(table),
            "gap_labels": [r["label"] for r in rows if r["gap_flag"]],
            "lost_labels": [r["label"] for r in rows if r.get("lost_flag")],
            "rows": rows,
        },
    )
    return paths


def image_use_headline(table: pd.DataFrame) -> dict[str, float | int | None]:
    """The instrument's goal in three numbers (used >= 0.9 wherever carried >= 0.9, control <= 0.65):
    over the labels whose carried AUC is >= `GAP_THRESHOLD`, the lowest used AUC and the highest control AUC
    (None when no label is carried), and how many labels are flagged carried-but-not-used."""
    carried = table[table["carried_auc"] >= GAP_THRESHOLD]

    def pick(values: pd.Series, how: str) -> float | None:
        values = values.dropna()
        return float(getattr(values, how)()) if len(values) else None

    return {"image_use_carried_labels": int(len(carried)),
            "image_use_min_used_auc": pick(carried["used_auc"], "min"),
            "image_use_max_control_auc": pick(carried["control_auc"], "max"),
            "image_use_gaps": int(table["gap_flag"].sum())}


def image_use_text(table: pd.DataFrame) -> str:
    """A one-screen summary: the table's AUCs, then the labels carried but not used."""
    def cell(v: float) -> str:
        return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.2f}"

    a = table.attrs
    width = max([len(str(lab)) for lab in table["label"]] + [5])
    lines = [f"Does the model read the image? {a.get('split', '?')} split, {a.get('cases', '?')} cases",
             f"{'label':<{width}}  {'region':<11} pos/neg  crop  carried  used  control  chance",]
    for r in table.itertuples(index=False):
        # crop_auc, lost_flag and control_chance_auc are absent from tables written before them
        lost, crop = getattr(r, "lost_flag", False), cell(getattr(r, "crop_auc", None))
        flag = "  <- carried, not used" if r.gap_flag else "  <- in the crop, not carried" if lost else ""
        chance = cell(getattr(r, "control_chance_auc", None))
        lines.append(f"{r.label:<{width}}  {r.region:<11} {r.n_pos:>3}/{r.n_neg:<3} {crop}  "
                     f"{cell(r.carried_auc)}  {cell(r.used_auc)}  {cell(r.control_auc)}    {chance}{flag}")
    gaps = [str(lab) for lab in table.loc[table["gap_flag"], "label"]]
    lines.append(
        "carried but not used ("
        + a.get("gap_rule", f"carried >= {GAP_THRESHOLD}, used below")
        + "): "
        + (", ".join(gaps) if gaps else "none")
    )
    if "lost_flag" in table:
        lost = [str(lab) for lab in table.loc[table["lost_flag"], "label"]]
        rule = a.get("lost_rule", f"crop >= {GAP_THRESHOLD}, carried below")
        lines.append(f"in the crop but not carried ({rule}): " + (", ".join(lost) if lost else "none"))
        lines.append(f"crop: {a.get('crop', '?')}")
    lines.append(f"carried: {a.get('vectors', '?')}")
    lines.append(f"used: {a.get('scoring', SCORING)}; control: {a.get('control', '?')}")
    return "\n".join(lines)


def evaluate_image_use(checkpoint: str | os.PathLike[str] | Any, cache_dir: str | os.PathLike[str] | Any,
                       out_dir: str | os.PathLike[str] | None = None, split: str = "test", *,
                       labels: Iterable[str] | None = None, batch_size: int = 16, seed: int = 0,
                       feature_cache: bool | None = None, probe: bool = True, progress: bool = True
                       ) -> pd.DataFrame:
    """Load the model (a run folder, checkpoint or model folder, as `reg2rg generate` takes; or a loaded
    Reg2RG) and the prep cache (a folder or a loaded cache), compute `image_use_table` and, with `out_dir`,
    write it (`reg2rg evaluate image-use`, `reg2rg evaluate all --checkpoint --cache`, notebook 04)."""
    model = load_model(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    cache = load_cache(cache_dir) if isinstance(cache_dir, (str, os.PathLike)) else cache_dir
    table = image_use_table(model, cache, split, labels=list(labels) if labels is not None else None,
                            feature_cache=feature_cache, batch_size=batch_size, seed=seed, probe=probe,
                            progress=progress)
    table.attrs["checkpoint"] = (
        str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "a loaded model"
    )
    if out_dir is not None:
        write_image_use(table, out_dir)
    return table
