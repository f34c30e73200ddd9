"""NLG metrics on hand-computed cases, against the literal original recipes, and on empty predictions."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.bench.metrics import reference_compute_bleu
from reg2rg_lib.metrics.nlg import (
    OVERALL_METRICS,
    SAMPLE_METRICS,
    bleu_scores,
    evaluate_nlg,
    lcs_length,
    ngram_counts,
    rouge_scores,
    tokenize_13a,
    write_nlg_outputs,
)


def _bleu(refs, hyps):
    return bleu_scores(ngram_counts(tokenize_13a(refs), tokenize_13a(hyps)))


def test_bleu_hand_computed():
    # 13a splits the final period: ref "a b c d ." / hyp "a b c e ." -> 5 tokens each
    out = _bleu(["a b c d."], ["a b c e."])
    # smoothed unigram precision (4+1)/(5+1), bigram (2+1)/(4+1); no brevity penalty
    p1, p2 = 5 / 6, 3 / 5
    assert out["per_sample"]["BLEU-1"][0] == pytest.approx(p1)
    assert out["per_sample"]["BLEU-2"][0] == pytest.approx(math.sqrt(p1 * p2))
    # a shorter prediction is penalised: 2 tokens vs 4 -> bp = exp(1 - 4/2)
    short = _bleu(["x y z w"], ["x y"])
    assert short["per_sample"]["BLEU-1"][0] == pytest.approx((3 / 3) * math.exp(1 - 2))


def test_bleu_matches_the_literal_nmt_recipe_on_random_corpora():
    rng = random.Random(0)
    words = "the lung heart nodule is seen no effusion normal a . ,".split()
    for _ in range(20):
        refs = [
            " ".join(rng.choice(words) for _ in range(rng.randint(1, 25))) for _ in range(rng.randint(1, 6))
        ]
        hyps = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 25))) for _ in refs]
        out = _bleu(refs, hyps)
        rt, ht = tokenize_13a(refs), tokenize_13a(hyps)
        for n in range(1, 5):
            want = [reference_compute_bleu([[r]], [h], n, smooth=True) for r, h in zip(rt, ht)]
            assert out["per_sample"][f"BLEU-{n}"] == pytest.approx(want, abs=1e-12)
            corpus = reference_compute_bleu([[r] for r in rt], ht, n, smooth=True)
            assert out["overall"][f"Overall_BLEU-{n}"] == pytest.approx(corpus, abs=1e-12)


def test_lcs_equals_rouge_scores_table():
    from rouge_score import rouge_scorer

    rng = random.Random(1)
    for _ in range(200):
        a = [rng.choice("abcdef") for _ in range(rng.randint(0, 60))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 60))]
        want = rouge_scorer._lcs_table(a, b)[-1][-1] if a and b else 0
        assert lcs_length(a, b) == want


def test_rouge_matches_rouge_score_and_keeps_numpy_state():
    from rouge_score import rouge_scorer

    refs = ["The heart is normal.", "No pleural effusion or thickening.", "A nodule in the right upper lobe."]
    hyps = ["The heart is enlarged.", "No pleural effusion.", "Nodule seen in the left lower lobe."]
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    out = rouge_scores(refs, hyps)
    assert np.random.random() == before, "the global numpy stream must be restored"
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for i, (r, h) in enumerate(zip(refs, hyps)):
        s = scorer.score(r, h)
        assert out["per_sample"]["ROUGE-L"][i] == pytest.approx(s["rougeL"].fmeasure, abs=1e-15)
        assert out["per_sample"]["ROUGE-1"][i] == pytest.approx(s["rouge1"].fmeasure, abs=1e-15)


def test_meteor_uses_wordnet_synonyms(nltk_ready):
    from nltk.translate.meteor_score import meteor_score

    from reg2rg_lib.env.nltk import word_tokenize
    from reg2rg_lib.metrics.nlg import meteor_scores

    same = meteor_scores(["The heart is normal."], ["The heart is normal."])[0]
    assert same == pytest.approx(1 - 0.5 * (1 / 5) ** 3)  # 5 tokens, one chunk
    # nltk matches synonyms against the *stemmed* leftover reference words, so pick a stem-stable pair
    syn = meteor_scores(["The patient is sick."], ["The patient is ill."])[0]

    class NoWordNet:
        def synsets(self, word):
            return []

    plain = meteor_score([word_tokenize("The patient is sick.")], word_tokenize("The patient is ill."),
                         wordnet=NoWordNet())
    assert syn > plain + 0.2, "'ill' must match 'sick' through WordNet"
    assert word_tokenize("No effusion. Dr. Smith saw it.") == [
        "No",
        "effusion",
        ".",
        "Dr.",
        "Smith",
        "saw",
        "it",
        ".",
    ]


def test_empty_predictions_give_defined_scores_and_a_warning(nltk_ready, tmp_path):
    with pytest.raises(ZeroDivisionError):  # what the original does
        reference_compute_bleu([[["a", "b"]]], [[]], 4, smooth=True)
    with pytest.warns(UserWarning, match="1 of 2 predictions are empty"):
        res = evaluate_nlg(["The heart is normal.", "No effusion."], ["", "No effusion."], bootstrap=50)
    row = res.per_sample.iloc[0]
    assert row["BLEU-4"] == 0 and row["METEOR"] == 0 and row["ROUGE-L"] == 0 and row["CIDEr"] == 0
    assert res.per_sample.iloc[1]["BLEU-1"] > 0
    paths = write_nlg_outputs(res, tmp_path)
    table = pd.read_csv(paths["results"], dtype=str)
    assert list(table.columns) == [*SAMPLE_METRICS, *OVERALL_METRICS]
    assert all("±" in table[m][0] and len(table[m][0].split("±")[1]) == 6 for m in SAMPLE_METRICS)
    with pytest.warns(UserWarning, match="no report pairs"):
        nothing = evaluate_nlg([], [])
    assert nothing.n == 0 and all(v == 0.0 for v in nothing.overall.values())
