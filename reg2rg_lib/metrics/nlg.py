"""Natural-language-generation metrics exactly as the Reg2RG paper computed them, offline.

The authors loaded HuggingFace `evaluate` metrics from the hub. What those compute, reproduced here to every
printed decimal of the released `nlg_evaluation_results.csv` (tests/metrics/test_metrics_release.py):

- BLEU-n (n = 1..4): the tensorflow-nmt `compute_bleu` with `smooth=True` (add-one on every order, unigrams
  included) on sacrebleu's 13a tokens (case-sensitive). `BLEU-n` is the per-sample mean±std of sentence BLEU,
  `Overall_BLEU-n` the corpus BLEU. Our own code (`bleu_from_counts`), because `evaluate` carried its own
  copy. An empty prediction or reference makes the original divide by zero; here that pair scores 0 with a
  warning.
- METEOR: `nltk.translate.meteor_score.meteor_score([word_tokenize(ref)], word_tokenize(pred))`, defaults
  (alpha 0.9, beta 3, gamma 0.5, Porter stems, WordNet 3.0 synonyms). `Overall_METEOR` = mean of per-sample
  scores.
- ROUGE-1/2/L: `rouge_score` (`use_stemmer=False`), per-sample F-measure mean±std; `Overall_ROUGE-*` is
  `BootstrapAggregator` (1000 resamples) mid F-measure with numpy's global seed set to 42 just before, types
  in the order rouge1, rouge2, rougeL(, rougeLsum). rougeLsum was resampled last, so leaving it out changes
  nothing.
- CIDEr: pycocoevalcap `Cider().compute_score` on the raw strings (whitespace split, case-sensitive), document
  frequencies from this set's references; mean±std of the per-sample array.
Means ± std use `np.std` (ddof=0), formatted at 4 decimals.

Speed: each report is tokenised once per tokenizer; n-gram counts for orders 1..4 are computed once and give
BLEU-1 to BLEU-4, sentence and corpus, plus bootstrap resamples of the corpus BLEU (vectorised over count
arrays). METEOR's WordNet and stemmer calls are memoised (same results, ~10x faster).

One file over 400 lines: the metrics together reproduce one released file, and the by-region scores and
bootstrap replicates reuse `evaluate_nlg`'s tokens and per-sample arrays; apart, each would re-tokenise.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pycocoevalcap.cider.cider import Cider
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from tqdm.auto import tqdm

from reg2rg_lib.env.nltk import get_wordnet, word_tokenize
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.metrics.stats import DEFAULT_RESAMPLES, bootstrap_indices, mean_replicates, percentile_ci
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import split_regions

#: Per-sample metric columns, in the released file's order.
SAMPLE_METRICS: tuple[str, ...] = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-1", "ROUGE-2", "ROUGE-L", "CIDEr",
)
#: Corpus-level columns, in the released file's order.
OVERALL_METRICS: tuple[str, ...] = (
    "Overall_BLEU-1", "Overall_BLEU-2", "Overall_BLEU-3", "Overall_BLEU-4", "Overall_METEOR",
    "Overall_ROUGE-1", "Overall_ROUGE-2", "Overall_ROUGE-L",
)
MAX_ORDER = 4
ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")
ROUGE_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
ROUGE_SEED = 42  # numpy's global seed before the original's BootstrapAggregator


# ------------------------------------------------------------------------------------------------------ BLEU


@dataclass
class NgramCounts:
    """Per-sample BLEU sufficient statistics, so every BLEU variant and resample is a few numpy sums.

    matches[i, k]: clipped (k+1)-gram matches of prediction i; possible[i, k]: its (k+1)-gram count;
    hyp_len / ref_len: token counts (13a tokens).
    """

    matches: np.ndarray  # (N, 4)
    possible: np.ndarray  # (N, 4)
    hyp_len: np.ndarray  # (N,)
    ref_len: np.ndarray  # (N,)


def tokenize_13a(texts: Sequence[str]) -> list[list[str]]:
    """sacrebleu's 13a tokenisation (as `evaluate`'s BLEU), one token list per text."""
    tok = Tokenizer13a()
    return [tok(t).split() for t in texts]


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    counts: Counter = Counter()
    for order in range(1, max_order + 1):
        for i in range(len(tokens) - order + 1):
            counts[tuple(tokens[i: i + order])] += 1
    return counts


def ngram_counts(
    refs: Sequence[list[str]], hyps: Sequence[list[str]], max_order: int = MAX_ORDER
) -> NgramCounts:
    """Clipped n-gram matches and n-gram totals per pair (one reference per prediction)."""
    n = len(hyps)
    matches = np.zeros((n, max_order), dtype=np.int64)
    possible = np.zeros((n, max_order), dtype=np.int64)
    for i, (ref, hyp) in enumerate(zip(refs, hyps)):
        overlap = _ngrams(hyp, max_order) & _ngrams(ref, max_order)
        for ngram, count in overlap.items():
            matches[i, len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            possible[i, order - 1] = max(len(hyp) - order + 1, 0)
    return NgramCounts(matches, possible, np.array([len(h) for h in hyps]), np.array([len(r) for r in refs]))


def bleu_from_counts(matches: np.ndarray, possible: np.ndarray, hyp_len: np.ndarray, ref_len: np.ndarray,
                     max_order: int, smooth: bool = True) -> np.ndarray:
    """The nmt `compute_bleu` on (already summed) counts; leading axes are batch axes.

    `matches`/`possible` have shape (..., >= max_order); returns shape (...). Where the original would divide
    by zero (no prediction or reference tokens) the result is 0.
    """
    m = matches[..., :max_order].astype(np.float64)
    p = possible[..., :max_order].astype(np.float64)
    if smooth:
        prec = (m + 1.0) / (p + 1.0)
    else:
        prec = np.divide(m, p, out=np.zeros_like(m), where=p > 0)
    with np.errstate(divide="ignore"):
        geo = np.where(prec.min(axis=-1) > 0, np.exp(np.sum((1.0 / max_order) * np.log(prec), axis=-1)), 0.0)
    hyp_len = np.asarray(hyp_len, dtype=np.float64)
    ref_len = np.asarray(ref_len, dtype=np.float64)
    defined = (hyp_len > 0) & (ref_len > 0)
    ratio = np.divide(hyp_len, ref_len, out=np.zeros_like(hyp_len), where=ref_len > 0)
    with np.errstate(divide="ignore"):
        bp = np.where(ratio > 1.0, 1.0, np.exp(1.0 - 1.0 / np.where(defined, ratio, 1.0)))
    return np.where(defined, geo * bp, 0.0)


def bleu_scores(counts: NgramCounts, smooth: bool = True) -> dict[str, Any]:
    """Sentence BLEU-1..4 per sample and corpus BLEU-1..4 (`Overall_BLEU-n`)."""
    per_sample, overall = {}, {}
    total = (counts.matches.sum(0), counts.possible.sum(0), counts.hyp_len.sum(), counts.ref_len.sum())
    for n in range(1, MAX_ORDER + 1):
        per_sample[f"BLEU-{n}"] = bleu_from_counts(counts.matches, counts.possible, counts.hyp_len,
                                                   counts.ref_len, n, smooth)
        overall[f"Overall_BLEU-{n}"] = float(bleu_from_counts(*total, n, smooth))
    return {"per_sample": per_sample, "overall": overall}


# ---------------------------------------------------------------------------------------------------- METEOR


class _MemoWordNet:
    """WordNet with `synsets(word)` memoised (METEOR asks for the same words thousands of times)."""

    def __init__(self, wordnet: Any) -> None:
        self._wn, self._cache = wordnet, {}

    def synsets(self, word: str) -> list:
        hit = self._cache.get(word)
        if hit is None:
            hit = self._cache[word] = self._wn.synsets(word)
        return hit


class _MemoStemmer:
    """nltk's default PorterStemmer with `stem(word)` memoised."""

    def __init__(self) -> None:
        # nltk: slow to import (~3 s); only METEOR needs it
        from nltk.stem.porter import PorterStemmer

        self._stemmer, self._cache = PorterStemmer(), {}

    def stem(self, word: str) -> str:
        hit = self._cache.get(word)
        if hit is None:
            hit = self._cache[word] = self._stemmer.stem(word)
        return hit


def meteor_scores(refs: Sequence[str], hyps: Sequence[str], show_progress: bool = False) -> np.ndarray:
    """nltk METEOR per pair on `word_tokenize` tokens (WordNet/Punkt found offline, see nltk_assets)."""
    # nltk: slow to import (~3 s); only METEOR needs it
    from nltk.translate.meteor_score import meteor_score

    wordnet, stemmer = _MemoWordNet(get_wordnet()), _MemoStemmer()
    pairs = zip(refs, hyps)
    if show_progress:
        pairs = tqdm(pairs, total=len(hyps), desc="METEOR", leave=False)
    return np.array([meteor_score([word_tokenize(r)], word_tokenize(h), stemmer=stemmer, wordnet=wordnet)
                     for r, h in pairs], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------- ROUGE


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, Hyyroe 2004).

    Equal to the last cell of rouge_score's O(len(a) * len(b)) Python table, in O(len(b)) big-integer steps.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full  # bit i == 0 <=> a[i] ends a common subsequence one longer than the previous row's
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_scores(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, Any]:
    """Per-sample ROUGE F-measures and the original's bootstrap-aggregated `Overall_ROUGE-*`.

    ROUGE-1/2 come from `rouge_score`'s scorer; ROUGE-L uses its tokenizer and F-measure with `lcs_length` for
    the LCS (same numbers, ~50x faster than its DP table). numpy's global random state is restored afterwards.
    """
    # rouge_score: slow to import (it loads nltk); only ROUGE needs it
    from rouge_score import rouge_scorer, scoring, tokenizers

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=False)
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
    scores = []
    for r, h in zip(refs, hyps):
        s = scorer.score(r, h)
        rt, ht = tokenizer.tokenize(r), tokenizer.tokenize(h)
        if rt and ht:
            lcs = lcs_length(rt, ht)
            p, rc = lcs / len(ht), lcs / len(rt)
            s["rougeL"] = scoring.Score(precision=p, recall=rc, fmeasure=scoring.fmeasure(p, rc))
        else:
            s["rougeL"] = scoring.Score(precision=0, recall=0, fmeasure=0)
        scores.append(s)
    per_sample = {ROUGE_NAMES[t]: np.array([s[t].fmeasure for s in scores], dtype=np.float64)
                  for t in ROUGE_TYPES}
    overall = {f"Overall_{ROUGE_NAMES[t]}": 0.0 for t in ROUGE_TYPES}
    if scores:
        aggregator = scoring.BootstrapAggregator()
        for s in scores:
            aggregator.add_scores({t: s[t] for t in ROUGE_TYPES})  # resampled in this order, as the original
        state = np.random.get_state()
        try:
            np.random.seed(ROUGE_SEED)
            agg = aggregator.aggregate()
        finally:
            np.random.set_state(state)
        overall = {f"Overall_{ROUGE_NAMES[t]}": float(agg[t].mid.fmeasure) for t in ROUGE_TYPES}
    return {"per_sample": per_sample, "overall": overall}


# ----------------------------------------------------------------------------------------------------- CIDEr


def cider_scores(refs: Sequence[str], hyps: Sequence[str]) -> np.ndarray:
    """pycocoevalcap CIDEr per pair (raw strings, document frequencies from these references)."""
    if not hyps:
        return np.zeros(0)
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    _, scores = Cider().compute_score(gts, res)
    return np.asarray(scores, dtype=np.float64)


# ------------------------------------------------------------------------------------------------- together


@dataclass
class NLGResult:
    """Everything one NLG evaluation produced: per-sample scores, corpus scores, CIs and warnings."""

    per_sample: pd.DataFrame  # one row per pair, SAMPLE_METRICS columns (+ id column when given)
    overall: dict[str, float]  # OVERALL_METRICS
    counts: NgramCounts  # BLEU statistics, reused by bootstrap CIs and paired tests
    warnings: list[str] = field(default_factory=list)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.per_sample)

    def mean(self) -> dict[str, float]:
        return {m: _mean(self.per_sample[m]) for m in SAMPLE_METRICS}

    def std(self) -> dict[str, float]:
        return {m: _std(self.per_sample[m]) for m in SAMPLE_METRICS}

    def summary_row(self) -> dict[str, str]:
        """The released `nlg_evaluation_results.csv` row: `mean±std` at 4 decimals, then `Overall_*` at 4."""
        mean, std = self.mean(), self.std()
        row = {m: f"{mean[m]:.4f}±{std[m]:.4f}" for m in SAMPLE_METRICS}
        row.update({m: f"{self.overall[m]:.4f}" for m in OVERALL_METRICS})
        return row

    def headline(self) -> dict[str, float]:
        """Flat numbers for tables: per-sample means under their names, plus the `Overall_*` values."""
        return {**self.mean(), **self.overall}

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean(),
            "std": self.std(),
            "overall": self.overall,
            "ci95": {k: list(v) for k, v in self.ci95.items()},
            "warnings": self.warnings,
            "recipe": {
                "BLEU": "tensorflow-nmt compute_bleu, smooth=True, sacrebleu 13a tokens; mean of sentence "
                "BLEU, "
                "Overall = corpus BLEU",
                "METEOR": (
                    "nltk meteor_score on word_tokenize tokens (alpha 0.9, beta 3, gamma 0.5, WordNet 3.0)"
                ),
                "ROUGE": "rouge_score F-measure, use_stemmer=False; Overall = BootstrapAggregator mid, "
                "numpy seed 42",
                "CIDEr": "pycocoevalcap Cider, whitespace tokens, document frequencies from the references",
                "std": "numpy std, ddof=0",
            },
        }


def _mean(x: Any) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else 0.0


def _std(x: Any) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std()) if x.size else 0.0


def _clean(texts: Sequence[Any]) -> list[str]:
    return ["" if t is None or (isinstance(t, float) and math.isnan(t)) else str(t) for t in texts]


def evaluate_nlg(references: Sequence[str], predictions: Sequence[str], ids: Sequence[Any] | None = None,
                 bootstrap: int = 1000, seed: int = 0, show_progress: bool = False) -> NLGResult:
    """All NLG metrics for aligned (reference, prediction) pairs, as the paper computed them.

    `bootstrap` > 0 adds percentile 95% CIs for every metric (resampling pairs with `seed`; see stats.py).
    Empty predictions/references are scored (0 where a metric is undefined) and reported in `warnings`.
    """
    refs, hyps = _clean(references), _clean(predictions)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} predictions")
    notes = []
    n_empty_h = sum(not h.strip() for h in hyps)
    n_empty_r = sum(not r.strip() for r in refs)
    if n_empty_h:
        notes.append(f"{n_empty_h} of {len(hyps)} predictions are empty: their BLEU is defined as 0 "
                     "(the original divides by zero there)")
    if n_empty_r:
        notes.append(f"{n_empty_r} of {len(refs)} references are empty: their BLEU is defined as 0")
    if not hyps:
        notes.append("no report pairs to evaluate: every metric is 0")
    for note in notes:
        warnings.warn(note, stacklevel=2)

    counts = ngram_counts(tokenize_13a(refs), tokenize_13a(hyps))
    bleu = bleu_scores(counts)
    rouge = rouge_scores(refs, hyps)
    meteor = meteor_scores(refs, hyps, show_progress=show_progress)
    cider = cider_scores(refs, hyps)
    per_sample = pd.DataFrame({**bleu["per_sample"], "METEOR": meteor, **rouge["per_sample"], "CIDEr": cider})
    per_sample = per_sample[list(SAMPLE_METRICS)]
    if ids is not None:
        per_sample.insert(0, "id", list(ids))
    overall = {**bleu["overall"], "Overall_METEOR": _mean(meteor), **rouge["overall"]}
    result = NLGResult(per_sample, {k: overall[k] for k in OVERALL_METRICS}, counts, notes)
    if bootstrap and result.n > 1:
        result.ci95 = nlg_bootstrap_ci(result, n_resamples=bootstrap, seed=seed)
    return result


def write_nlg_outputs(result: NLGResult, out_dir: str | Path) -> dict[str, Path]:
    """DIR/nlg_evaluation_results.csv (released format), DIR/nlg_per_sample.csv, DIR/nlg_evaluation.json."""
    out = MetricsFolder(out_dir)
    paths = {"results": out.nlg_results, "per_sample": out.nlg_per_sample, "json": out.nlg_json}
    with atomic_path(paths["results"]) as tmp:
        pd.DataFrame([result.summary_row()]).to_csv(tmp, index=False)
    with atomic_path(paths["per_sample"]) as tmp:
        result.per_sample.to_csv(tmp, index=False)
    write_json_atomic(paths["json"], result.to_json())
    return paths


# ------------------------------------------------------------------------------------------- region level


def paired_region_paragraphs(references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
    """One row per GT region paragraph: (sample, index, region, reference paragraph, predicted paragraph).

    Numbered paragraphs pair by prompt index (region i of the prompt is the same mask in both); "other report"
    blocks pair by name. A region the prediction lacks is paired with "" (scores 0).
    """
    rows = []
    for s, (ref, hyp) in enumerate(zip(_clean(references), _clean(predictions))):
        pred = split_regions(hyp)
        by_index = {p.index: p.paragraph for p in pred if p.index is not None}
        by_name = {p.region: p.paragraph for p in pred if p.index is None}
        for p in split_regions(ref):
            if not p.region:
                continue
            got = by_index.get(p.index, "") if p.index is not None else by_name.get(p.region, "")
            rows.append({"sample": s, "index": p.index, "region": p.region, "reference": p.paragraph,
                         "prediction": got})
    return pd.DataFrame(rows, columns=["sample", "index", "region", "reference", "prediction"])


def evaluate_nlg_by_region(references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
    """Per-region NLG: each region's paragraphs scored as their own set; one row per region (+ "all").

    Columns: region, n, then the mean of each per-sample metric and the region's `Overall_*` numbers.
    """
    pairs = paired_region_paragraphs(references, predictions)
    rows = []
    groups = [("all", pairs)] + [(r, g) for r, g in pairs.groupby("region", sort=True)]
    for name, g in groups:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = evaluate_nlg(g["reference"].tolist(), g["prediction"].tolist(), bootstrap=0)
        rows.append({"region": name, "n": res.n, **res.headline()})
    return pd.DataFrame(rows)




def bleu_replicates(result: NLGResult, idx: np.ndarray, order: int) -> np.ndarray:
    """Corpus BLEU-`order` on each resample, from the per-case n-gram counts: (B,)."""
    c = result.counts
    return bleu_from_counts(c.matches[idx].sum(axis=1), c.possible[idx].sum(axis=1),  # (B, 4)
                            c.hyp_len[idx].sum(axis=1), c.ref_len[idx].sum(axis=1), order)  # (B,)


def nlg_replicates(result: NLGResult, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap replicates of every NLG number (per-sample means and the Overall_* values)."""
    reps = {m: mean_replicates(result.per_sample[m].to_numpy(), idx) for m in SAMPLE_METRICS}
    for n in range(1, MAX_ORDER + 1):
        reps[f"Overall_BLEU-{n}"] = bleu_replicates(result, idx, n)
    reps["Overall_METEOR"] = reps["METEOR"]
    for name in ("ROUGE-1", "ROUGE-2", "ROUGE-L"):
        reps[f"Overall_{name}"] = reps[name]  # the original's Overall_ROUGE is itself a bootstrap mean
    return reps


def nlg_bootstrap_ci(result: NLGResult, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% CIs for all NLG numbers of one evaluation."""
    idx = bootstrap_indices(result.n, n_resamples, seed)
    return {k: percentile_ci(v) for k, v in nlg_replicates(result, idx).items()}
