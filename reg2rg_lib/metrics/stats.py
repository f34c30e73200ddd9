"""Uncertainty the paper did not report: bootstrap 95% CIs for every metric, and a paired bootstrap test.

Resampling unit: the report pair (a test case). The same resample indices serve every metric of one evaluation, and
a paired test applies the same indices to both systems (Koehn 2004), so case-level difficulty cancels out.
Per-sample metrics resample their per-case scores; corpus metrics (Overall_BLEU-n, CE micro/macro F1) are
recomputed on each resample from per-case sufficient statistics (n-gram counts, label matrices), vectorised.
CIs are percentile intervals (2.5th, 97.5th) from `numpy.random.default_rng(seed)`.
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

    p_value is two-sided: twice the share of resamples whose difference has the other sign than the observed one
    (capped at 1), i.e. how often B would not beat A (or vice versa) if the test set were redrawn.
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
    return {"A": float(a_value), "B": float(b_value), "delta": delta, "ci95": [low, high], "p_value": min(p, 1.0)}
