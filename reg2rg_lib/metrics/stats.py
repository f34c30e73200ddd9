"""Uncertainty the paper did not report: bootstrap 95% CIs for every metric, and a paired bootstrap test.

Resampling unit: the report pair (a test case). The same resample indices serve every metric of one
evaluation, and a paired test applies the same indices to both systems (Koehn 2004), so case-level difficulty
cancels out. Per-sample metrics resample their per-case scores; corpus metrics (Overall_BLEU-n, CE micro/macro
F1) are recomputed on each resample from per-case sufficient statistics (n-gram counts, label matrices),
vectorised. CIs are percentile intervals (2.5th, 97.5th) from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000


def bootstrap_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) case indices drawn with replacement."""
    if n <= 0:
        return np.zeros((n_resamples, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile interval of bootstrap replicates."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        return (0.0, 0.0)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return (float(low), float(high))


def mean_replicates(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of `values` over each resample: (B,)."""
    values = np.asarray(values, dtype=np.float64)
    return values[idx].mean(axis=1) if idx.shape[1] else np.zeros(len(idx))


def nanmean_replicates(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of `values` over each resample, ignoring unscored cases (NaN): (B,); 0 where a resample has none.

    For per-case scores that some cases lack (region accuracy of a report without region prefixes).
    """
    taken = np.asarray(values, dtype=np.float64)[idx]  # (B, N)
    ok = ~np.isnan(taken)
    return np.where(ok, taken, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)


def paired_test(a_reps: np.ndarray, b_reps: np.ndarray, a_value: float, b_value: float) -> dict[str, Any]:
    """Paired bootstrap comparison of B vs A from replicates drawn with the same indices.

    p_value is two-sided: twice the share of resamples whose difference has the other sign than the observed
    one (capped at 1), i.e. how often B would not beat A (or vice versa) if the test set were redrawn.
    """
    diff = np.asarray(b_reps, dtype=np.float64) - np.asarray(a_reps, dtype=np.float64)
    delta = float(b_value - a_value)
    if diff.size == 0:
        return {"A": a_value, "B": b_value, "delta": delta, "ci95": [0.0, 0.0], "p_value": 1.0}
    if delta > 0:
        p = 2.0 * float(np.mean(diff <= 0))
    elif delta < 0:
        p = 2.0 * float(np.mean(diff >= 0))
    else:
        p = 1.0
    low, high = percentile_ci(diff)
    return {
        "A": float(a_value),
        "B": float(b_value),
        "delta": delta,
        "ci95": [low, high],
        "p_value": min(p, 1.0),
    }


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not tests and stay NaN).

    The k-th smallest of m p-values is multiplied by (m - k + 1), made monotone and capped at 1; rejecting
    where the adjusted p < alpha keeps the family-wise error rate at alpha (Holm 1979).
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


def format_p(p: float | None, n_resamples: int, tests: int = 1) -> str:
    """A bootstrap p-value as text: `< 1/B` (e.g. `< 0.001` for B = 1000) where no resample reached the
    observed difference's opposite sign (p = 0 from the count), since 0 is below what B resamples resolve;
    after a Holm adjustment over `tests` tests that bound is `< tests/B`. Otherwise 3 decimals; None/NaN (no
    test): en dash."""
    if p is None or np.isnan(p):
        return "–"
    if p <= 0.0:
        return f"< {min(1.0, max(int(tests), 1) / max(int(n_resamples), 1)):.3g}"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
