"""Statistics over feature columns, vectorised (scipy's ``axis=0``): what the snapshot
checks report and what the generation step ranks features by.

Its own module so an estimator can rank features without importing the checks' policy
and reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def adjust_p(p: np.ndarray, method: str) -> np.ndarray:
    """Multiple-testing adjusted p-values (NaN, from constant columns, stays NaN)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    if method == "bh":
        out[ok] = false_discovery_control(p[ok], method="bh")
        return out
    values = p[ok]
    order = np.argsort(values)
    m = len(values)
    holm = np.maximum.accumulate(values[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(holm, 1.0)
    out[ok] = adjusted
    return out


def kruskal_columns(X: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kruskal-Wallis H and p of every column of ``X`` against integer groups ``codes``.

    A constant column has H = 0 and p = 1 (it cannot separate anything).
    """
    from scipy.stats import kruskal

    groups = [X[codes == c] for c in np.unique(codes)]
    if len(groups) < 2:
        return np.zeros(X.shape[1]), np.ones(X.shape[1])
    with np.errstate(all="ignore"):
        h, p = kruskal(*groups, axis=0)
    constant = ~np.isfinite(h)
    return np.where(constant, 0.0, h), np.where(constant, 1.0, p)


def finite(value) -> float | None:
    """JSON-safe float: NaN/inf (undefined statistics) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def confidence_intervals(table, features: Sequence[str], level: float = 0.95) -> dict:
    """Per genre, mean and CI of each feature over track means (tracks are independent)."""
    from scipy.stats import t

    track_means = table.groupby(["genre", "track_id"])[list(features)].mean()
    result = {}
    for feature in features:
        per_genre = {}
        for genre, values in track_means[feature].groupby(level="genre"):
            n, mean = len(values), float(values.mean())
            half = (t.ppf((1 + level) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
                    if n > 1 else math.nan)
            per_genre[str(genre)] = {"mean": mean, "low": finite(mean - half),
                                     "high": finite(mean + half), "n_tracks": int(n)}
        result[feature] = per_genre
    return result
