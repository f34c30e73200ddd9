"""`reg2rg bench metrics`: every metric for N report pairs (goal: 2,000 pairs in <= 60 s on 2 cores).

Kit: `evaluate_nlg` (with 1000 bootstrap resamples for CIs) + the rule labeler on both sides + CE + region
recognition. Reference recipe: the straightforward per-sample way the original scripts worked (each BLEU order
re-tokenised and re-counted per sample and per corpus, METEOR with nltk's own `word_tokenize`, unmemoised
WordNet and stemmer, rouge with the four types incl. rougeLsum, CIDEr); it runs on a subset
(`--reference-pairs`) and the ratio compares time per pair. Pairs come from the embedded benchmark's report
templates, or from `--predictions`.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from typing import Any

import numpy as np

from reg2rg_lib.bench.common import report
from reg2rg_lib.env.doctor import machine
from reg2rg_lib.env.nltk import get_sentence_tokenizer, get_wordnet
from reg2rg_lib.regions import strip_region_prefix


def reference_compute_bleu(reference_corpus: list[list[list[str]]], translation_corpus: list[list[str]],
                           max_order: int = 4, smooth: bool = False) -> float:
    """The tensorflow-nmt `compute_bleu` written out literally (the recipe the paper's BLEU used).

    Kept as the oracle the vectorised `nlg.bleu_from_counts` is tested against; raises ZeroDivisionError where
    the original does (empty prediction).
    """
    matches = [0] * max_order
    possible = [0] * max_order
    ref_len = hyp_len = 0
    for references, translation in zip(reference_corpus, translation_corpus):
        ref_len += min(len(r) for r in references)
        hyp_len += len(translation)
        merged: Counter = Counter()
        for reference in references:
            merged |= Counter(tuple(reference[i: i + n]) for n in range(1, max_order + 1)
                              for i in range(len(reference) - n + 1))
        hyp_counts = Counter(tuple(translation[i: i + n]) for n in range(1, max_order + 1)
                             for i in range(len(translation) - n + 1))
        for ngram, count in (hyp_counts & merged).items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            if len(translation) - order + 1 > 0:
                possible[order - 1] += len(translation) - order + 1
    precisions = [0.0] * max_order
    for i in range(max_order):
        if smooth:
            precisions[i] = (matches[i] + 1.0) / (possible[i] + 1.0)
        else:
            precisions[i] = matches[i] / possible[i] if possible[i] > 0 else 0.0
    geo_mean = (
        math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions)) if min(precisions) > 0 else 0.0
    )
    ratio = hyp_len / ref_len
    bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return geo_mean * bp


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """N (reference, prediction) region-structured reports built from the embedded benchmark's templates."""
    # bench modules load at `reg2rg --help`: each handler imports the stage it measures when it runs
    from reg2rg_lib.data.synth.reports import ABNORMAL, NORMAL

    rng = np.random.default_rng(seed)
    params = {"size_mm": 12, "lobe": "right upper lobe", "side": "left"}
    abnormal = [s.format(**params) for ss in ABNORMAL.values() for s in ss]
    regions = list(NORMAL)

    def report(r: np.random.Generator) -> str:
        parts = []
        for i, region in enumerate(regions):
            text = str(r.choice(NORMAL[region]))
            if r.random() < 0.3:
                text = " ".join(str(x) for x in r.choice(abnormal, size=int(r.integers(1, 3))))
            parts.append(f"The region {i} is {region}: {text}")
        return " ".join(parts)

    refs = [report(rng) for _ in range(n)]
    # half identical, half different
    hyps = [report(rng) if rng.random() < 0.5 else refs[k] for k in range(n)]
    return refs, hyps


def _kit(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    from reg2rg_lib.metrics.ce import evaluate_ce
    from reg2rg_lib.metrics.labeler import RuleLabeler
    from reg2rg_lib.metrics.nlg import evaluate_nlg
    from reg2rg_lib.metrics.region import region_recognition

    t0, c0 = time.perf_counter(), time.process_time()
    r, h = [strip_region_prefix(x) for x in refs], [strip_region_prefix(x) for x in hyps]
    evaluate_nlg(r, h, bootstrap=1000)
    lab = RuleLabeler()
    evaluate_ce(lab.label(r).to_numpy(), lab.label(h).to_numpy(), bootstrap=1000)
    region_recognition(refs, hyps)
    return time.perf_counter() - t0, time.process_time() - c0


def _reference(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    # the metric libraries: slow to import, and bench modules load at `reg2rg --help`; only the recipe needs
    # them
    from nltk.stem.porter import PorterStemmer
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.translate.meteor_score import meteor_score
    from pycocoevalcap.cider.cider import Cider
    from rouge_score import rouge_scorer, scoring
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    wordnet, splitter, words = get_wordnet(), get_sentence_tokenizer(), NLTKWordTokenizer()
    t0, c0 = time.perf_counter(), time.process_time()
    r, h = [strip_region_prefix(x) for x in refs], [strip_region_prefix(x) for x in hyps]
    tok = Tokenizer13a()
    tok.__class__.__call__.cache_clear()  # sacrebleu memoises tokenisation; the reference must not profit
    for order in range(1, 5):
        for a, b in zip(r, h):
            if b.strip():
                reference_compute_bleu([[tok(a).split()]], [tok(b).split()], order, smooth=True)
        reference_compute_bleu([[tok(a).split()] for a in r], [tok(b).split() for b in h], order, smooth=True)
    for a, b in zip(r, h):
        meteor_score([[t for s in splitter.tokenize(a) for t in words.tokenize(s)]],
                     [t for s in splitter.tokenize(b) for t in words.tokenize(s)], stemmer=PorterStemmer(),
                     wordnet=wordnet)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    agg = scoring.BootstrapAggregator()
    for a, b in zip(r, h):
        agg.add_scores(scorer.score(a, b))
    np.random.seed(42)
    agg.aggregate()
    Cider().compute_score({i: [a] for i, a in enumerate(r)}, {i: [b] for i, b in enumerate(h)})
    return time.perf_counter() - t0, time.process_time() - c0


def run(n_pairs: int = 2000, reference_pairs: int = 200, predictions: str | None = None,
        seed: int = 0) -> dict[str, Any]:
    """Time the kit on `n_pairs` and the reference recipe on a subset; return the figures `bench.report`
    prints."""
    if predictions:
        from reg2rg_lib.metrics.csv_inputs import read_report_pairs

        pairs = read_report_pairs(predictions)
        reps = -(-n_pairs // max(len(pairs.references), 1))
        refs, hyps = (pairs.references * reps)[:n_pairs], (pairs.predictions * reps)[:n_pairs]
        source = predictions
    else:
        refs, hyps = make_pairs(n_pairs, seed)
        source = "embedded benchmark templates"
    t_load = time.perf_counter()
    get_wordnet(), get_sentence_tokenizer()  # one-off start-up, timed separately
    load_s = time.perf_counter() - t_load
    k = min(reference_pairs, n_pairs)
    # the reference runs first, so any cache it warms (WordNet's synset cache) favours the kit only slightly;
    # the ratio uses this process's CPU time, which other jobs on a shared machine inflate less than wall time
    ref_wall, ref_cpu = _reference(refs[:k], hyps[:k]) if k else (float("nan"), float("nan"))
    kit_wall, kit_cpu = _kit(refs, hyps)
    kit_per, ref_per = kit_cpu / max(n_pairs, 1), ref_cpu / max(k, 1)
    words = float(np.mean([len(x.split()) for x in refs])) if refs else 0.0
    return {
        **machine(),
        "source": source,
        "pairs": n_pairs,
        "mean_reference_words": round(words, 1),
        "wordnet_punkt_load_s": round(load_s, 2),
        "kit_wall_s": round(kit_wall, 2),
        "kit_cpu_s": round(kit_cpu, 2),
        "kit_cpu_ms_per_pair": round(1000 * kit_per, 3),
        "reference_pairs": k,
        "reference_wall_s": round(ref_wall, 2),
        "reference_cpu_ms_per_pair": round(1000 * ref_per, 3),
        "speedup_cpu_per_pair": round(ref_per / kit_per, 2) if kit_per > 0 else float("nan"),
        "goal_s": 60,
        "meets_goal": bool(kit_wall <= 60),
    }


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="all metrics (NLG + CIs, labeler + CE, regions) for N report pairs")
    p.add_argument("--pairs", type=int, default=2000, help="report pairs for the kit (default 2000)")
    p.add_argument("--reference-pairs", type=int, default=200,
                   help="pairs for the per-sample reference recipe (default 200; ratio is per pair)")
    p.add_argument(
        "--predictions", default=None, help="take pairs from this predictions CSV (cycled to --pairs)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the template pairs")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    return report(run(args.pairs, args.reference_pairs, args.predictions, args.seed), args.json)
