"""The statistics of the experiment report: bootstrap intervals over users and the sample-ratio check.

Standard library and NumPy only (no SciPy in the serving image).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

BOOTSTRAP_CHUNK_CELLS = 4_000_000  # resampled indices held at once: memory bounded whatever the users


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square with `df` degrees of freedom (closed forms for integer df)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    x = max(float(statistic), 0.0)
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= (x / 2) / i
            total += term
        return min(1.0, math.exp(-x / 2) * total)
    total = math.erfc(math.sqrt(x / 2))
    if df > 1:
        term = math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= x / (2 * k - 1)
            total += term
    return min(1.0, total)


def sample_ratio_check(counts: Sequence[int], shares: Sequence[float]) -> tuple[float, float]:
    """Pearson's chi-square of the users per arm against the configured shares: `(statistic, p_value)`."""
    counts_array = np.asarray(counts, dtype=np.float64)
    share_array = np.asarray(shares, dtype=np.float64)
    expected = counts_array.sum() * share_array / share_array.sum()
    if len(counts_array) < 2 or counts_array.sum() == 0:
        return 0.0, 1.0
    statistic = float(((counts_array - expected) ** 2 / np.where(expected > 0, expected, 1.0)).sum())
    return statistic, chi2_sf(statistic, len(counts_array) - 1)


def bootstrap_sums(values: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Column sums of `values` (`[n_users, n_columns]`) over `replicates` resamples of its rows with
    replacement: `[replicates, n_columns]`. Resampled in chunks of bounded size."""
    n = values.shape[0]
    out = np.zeros((replicates, values.shape[1]))
    if n == 0:
        return out
    per_chunk = max(1, BOOTSTRAP_CHUNK_CELLS // n)
    for start in range(0, replicates, per_chunk):
        stop = min(replicates, start + per_chunk)
        rows = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[rows].sum(axis=1)
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of `samples` (NaN ignored)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def difference_intervals(
    treatment: np.ndarray,
    control: np.ndarray,
    statistic: Callable[[np.ndarray, int], np.ndarray],
    replicates: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates of `statistic` (column sums `[B, c]`, n users -> `[B]`) for each arm, resampling
    each arm's users independently: `(treatment_replicates, control_replicates)`."""
    t = statistic(bootstrap_sums(treatment, replicates, rng), treatment.shape[0])
    c = statistic(bootstrap_sums(control, replicates, rng), control.shape[0])
    return t, c
