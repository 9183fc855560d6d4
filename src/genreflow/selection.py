"""Model choice: GridSearchCV over genreflow.model.candidates(), grouped by track, bounded.

Segments of one track never sit on both sides of a split (StratifiedGroupKFold on
track_id, repeated with different shuffles), and valid.csv is never looked at here: it
is kept for the final report and the gate. On 60-90 real clips the candidates' CV scores
differ by less than their spread, and the CV winner was not the best on audio from other
sources (bench/RESULTS.md), so the choice is the one-standard-error rule: the first
candidate (the default, measured best out-of-domain) unless another beats it by more
than one standard error of the best score. Cost is bounded for the weekly 10k-track
run: the search sees at most ``SELECT_SEGMENTS`` segments (whole tracks, stratified by
genre), then the chosen configuration is fitted once on everything.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from genreflow.model import candidates, small_data_params, usable
from genreflow.parallel import allow_child_processes

log = logging.getLogger(__name__)

N_SPLITS = 3
REPEATS = 2  # shuffles of the folds: 6 scores per candidate
SELECT_SEGMENTS = 6000  # rows the search sees; measured cost in bench/RESULTS.md


def cv_splits(table, n_splits: int = N_SPLITS, repeats: int = REPEATS) -> list:
    """Grouped, stratified folds over ``repeats`` shuffles; fewer folds when a genre has
    fewer tracks; [] below 2."""
    from sklearn.model_selection import StratifiedGroupKFold

    tracks = table.groupby("genre")["track_id"].nunique()
    n_splits = min(n_splits, int(tracks.min()))
    if n_splits < 2:
        return []
    y, groups = table["genre"].astype(str), table["track_id"]
    return [split for seed in range(repeats) for split in StratifiedGroupKFold(
        n_splits=n_splits, shuffle=True, random_state=seed).split(table, y, groups=groups)]


def track_sample(table, max_rows: int, seed: int = 0):
    """Whole tracks, the same share of every genre, at most ~``max_rows`` segments."""
    if len(table) <= max_rows:
        return table
    share = max_rows / len(table)
    rng = np.random.default_rng(seed)
    kept = [t for _, tracks in table.groupby("genre")["track_id"].unique().items()
            for t in rng.permutation(sorted(tracks))[: max(2, round(share * len(tracks)))]]
    return table[table["track_id"].isin(kept)].reset_index(drop=True)


def one_standard_error(means: np.ndarray, stds: np.ndarray, n_scores: int) -> int:
    """The first (simplest, or the default) candidate within one standard error of the
    best mean score."""
    best = int(np.argmax(means))
    threshold = means[best] - stds[best] / np.sqrt(n_scores)
    return int(np.flatnonzero(means >= threshold)[0])


def grid_search(names: list[str], splits: list, workers: int = 1, smallest_y=None):
    """GridSearchCV whose grid is exactly ``candidates()[name]`` for ``names``, in order,
    on the base pipeline (every step on), shrunk for the smallest training fold."""
    from sklearn.model_selection import GridSearchCV

    from genreflow.model import base_pipeline

    pool = candidates()
    base = base_pipeline()
    if smallest_y is not None:
        base.set_params(**small_data_params(base, smallest_y))
    return GridSearchCV(base, [{k: [v] for k, v in pool[n].items()} for n in names],
                        scoring="roc_auc_ovo", cv=splits, refit=False, n_jobs=workers,
                        error_score="raise")


def select(table, workers: int = 1, names: list[str] | None = None,
           max_rows: int = SELECT_SEGMENTS) -> tuple[str, dict]:
    """(chosen candidate name, record of the search) by GridSearchCV on ``table``."""
    from threadpoolctl import threadpool_limits

    from genreflow.features.sets import present_in

    available = {s.name for s in present_in(table.columns)}
    names = usable(list(candidates()) if names is None else names, available)
    if not names:
        raise ValueError(f"no candidate uses only the table's feature sets {sorted(available)}")
    sample = track_sample(table, max_rows)
    splits = cv_splits(sample)
    record = {"rule": "one standard error toward the first candidate", "n_splits": len(splits),
              "n_segments": int(len(sample)), "n_tracks": int(sample["track_id"].nunique()),
              "candidates": []}
    if not splits or len(names) == 1:
        log.info("model selection skipped (%s); using %s",
                 "a genre has < 2 tracks" if not splits else "one candidate", names[0])
        return names[0], record
    allow_child_processes()
    X, y = sample, sample["genre"].astype(str).to_numpy()
    smallest = min((y[train] for train, _ in splits),
                   key=lambda v: np.unique(v, return_counts=True)[1].min())
    log.info("model selection: %d candidates (those using the feature sets %s) x %d grouped "
             "folds on %d segments of %d tracks", len(names), ", ".join(sorted(available)),
             len(splits), len(sample), record["n_tracks"])
    started = time.perf_counter()
    means, stds = [], []
    for number, name in enumerate(names, start=1):  # one search each: a progress line each
        search = grid_search([name], splits, workers, smallest)
        with threadpool_limits(limits=1):
            search.fit(X, y)
        results = search.cv_results_
        means.append(float(results["mean_test_score"][0]))
        stds.append(float(results["std_test_score"][0]))
        record["candidates"].append({
            "name": name, "roc_auc_ovo": round(means[-1], 4),
            "roc_auc_ovo_std": round(stds[-1], 4),
            "fit_seconds": round(float(results["mean_fit_time"][0]), 2)})
        log.info("CV %d/%d %s: ROC-AUC ovo %.4f +- %.4f (%.0f s so far)", number, len(names),
                 name, means[-1], stds[-1], time.perf_counter() - started)
    chosen = one_standard_error(np.array(means), np.array(stds), len(splits))
    record["chosen"] = chosen
    log.info("selected %s by %d grouped folds on %d segments of %d tracks in %.0f s "
             "(one-standard-error rule)", names[chosen], len(splits), len(sample),
             record["n_tracks"], time.perf_counter() - started)
    return names[chosen], record
