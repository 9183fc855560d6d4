"""Data checks on a training snapshot: what must hold before a model is trained on it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from genreflow.dataset import check_table
from genreflow.errors import PermanentError
from genreflow.features.names import FEATURE_NAMES

log = logging.getLogger(__name__)

MIN_TRACKS_PER_GENRE = 2
ALPHA = 0.05


class CheckFailed(PermanentError, RuntimeError):
    """A hard check failed: training on this snapshot would mislead."""


def kruskal_per_feature(table) -> dict[str, dict[str, float]]:
    """H and p of the Kruskal-Wallis test of each feature against the genre."""
    from scipy.stats import kruskal

    groups = [g[FEATURE_NAMES].to_numpy() for _, g in table.groupby("genre")]
    result = {}
    for i, name in enumerate(FEATURE_NAMES):
        samples = [g[:, i] for g in groups]
        if len(samples) < 2 or np.ptp(np.concatenate(samples)) == 0:
            result[name] = {"H": 0.0, "p": 1.0}
            continue
        h, p = kruskal(*samples)
        result[name] = {"H": float(h), "p": float(p)}
    return result


def run_checks(
    table, genres: Sequence[str], min_tracks_per_genre: int = MIN_TRACKS_PER_GENRE
) -> dict:
    """The checks report; raises CheckFailed (after logging it) on a hard failure."""
    check_table(table, genres, "training snapshot")
    tracks = table.groupby("genre")["track_id"].nunique().reindex(genres, fill_value=0)
    segments = table["genre"].value_counts().reindex(genres, fill_value=0)
    failures = [
        f"genre {g!r} has {n} track(s), fewer than {min_tracks_per_genre}"
        for g, n in tracks.items()
        if n < min_tracks_per_genre
    ]
    kruskal = kruskal_per_feature(table)
    significant = sum(v["p"] < ALPHA for v in kruskal.values())
    top = sorted(kruskal, key=lambda f: kruskal[f]["H"], reverse=True)[:10]
    report = {
        "n_segments": int(len(table)),
        "n_tracks": int(table["track_id"].nunique()),
        "tracks_per_genre": {g: int(n) for g, n in tracks.items()},
        "segments_per_genre": {g: int(n) for g, n in segments.items()},
        "imbalance_ratio": float(segments.max() / max(segments.min(), 1)),
        "kruskal": kruskal,
        "kruskal_significant_share": significant / len(FEATURE_NAMES),
        "kruskal_top_features": top,
        "failures": failures,
    }
    log.info(
        "checks: %d tracks, %d segments, imbalance %.2f, %d/%d features differ by genre "
        "(Kruskal-Wallis p<%.2f); top: %s",
        report["n_tracks"], report["n_segments"], report["imbalance_ratio"], significant,
        len(FEATURE_NAMES), ALPHA, ", ".join(top[:5]),
    )
    return report
