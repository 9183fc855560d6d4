"""Statistical checks on a training snapshot: what must hold before a model is trained on it.

Every test is vectorised over the feature columns (scipy's ``axis=0``; the statistics
themselves are in :mod:`genreflow.stats`), so a snapshot of a few thousand segments is
checked in well under a second. Which finding
stops a run (:class:`CheckFailed`) and which only warns is a :class:`CheckPolicy`,
optionally read from ``include/checks.toml``.

Segments of one track are not independent samples; p-values over segments are therefore
optimistic. The per-genre confidence intervals use one value per track (its mean) for
that reason.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genreflow.dataset import check_table
from genreflow.errors import PermanentError
from genreflow.features.sets import columns, present_in
from genreflow.stats import adjust_p, confidence_intervals, finite, kruskal_columns
from genreflow.storage import KeyNotFound, Store

if TYPE_CHECKING:
    from genreflow.config import Settings

log = logging.getLogger(__name__)

FINDINGS = (
    "too_few_tracks", "imbalance", "duplicate_segments", "low_separability", "drift",
    "label_conflicts", "validation_leak",
)
CORRECTIONS = ("bh", "holm")
POLICY_FILE = "include/checks.toml"  # in the project home


class CheckFailed(PermanentError, RuntimeError):
    """A hard check failed: training on this snapshot would mislead."""


@dataclass(frozen=True)
class CheckPolicy:
    """Thresholds of the checks and which findings stop a run (the others only warn).

    ``correction``: multiple-testing correction of the per-feature p-values, "bh"
    (Benjamini-Hochberg, controls the false discovery rate) or "holm" (family-wise).
    """

    alpha: float = 0.05
    correction: str = "bh"
    min_tracks_per_genre: int = 2
    max_imbalance_ratio: float = 5.0
    max_duplicate_share: float = 0.01
    min_significant_share: float = 0.5
    max_drift_share: float = 0.25
    shapiro_max_rows: int = 500  # per genre; Shapiro-Wilk is subsampled above this
    top_features: int = 10
    fail_on: tuple[str, ...] = ("too_few_tracks",)

    def __post_init__(self):
        if self.correction not in CORRECTIONS:
            raise CheckFailed(f"checks policy: correction must be one of {CORRECTIONS}")
        unknown = sorted(set(self.fail_on) - set(FINDINGS))
        if unknown:
            raise CheckFailed(f"checks policy: unknown finding(s) in fail_on: {unknown}; "
                              f"known: {list(FINDINGS)}")


def load_policy(path: Path | None) -> CheckPolicy:
    """The ``[checks]`` table of a TOML file over the defaults; no file, the defaults."""
    if path is None or not Path(path).is_file():
        return CheckPolicy()
    with Path(path).open("rb") as fh:
        values = tomllib.load(fh).get("checks", {})
    known = {f.name for f in fields(CheckPolicy)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CheckFailed(f"{path}: unknown [checks] key(s) {unknown}; known: {sorted(known)}")
    if "fail_on" in values:
        values["fail_on"] = tuple(values["fail_on"])
    return replace(CheckPolicy(), **values)


def _anova(groups: list[np.ndarray], names: list[str], policy: CheckPolicy, rng) -> dict:
    """One-way ANOVA beside its assumption tests and their pass rates (share of features).

    A genre of one segment has no variance: numpy warns (not a floating-point error) and
    the tests give NaN, which counts as failed; the warning is kept out of the task log.
    """
    import warnings

    from scipy.stats import bartlett, f_oneway, levene, shapiro

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f, p = f_oneway(*groups, axis=0)
        levene_p = levene(*groups, axis=0).pvalue
        bartlett_p = bartlett(*groups, axis=0).pvalue
        normal = np.ones(groups[0].shape[1], dtype=bool)
        for g in groups:
            if len(g) < 3:
                continue
            rows = g if len(g) <= policy.shapiro_max_rows else g[
                rng.choice(len(g), policy.shapiro_max_rows, replace=False)]
            normal &= shapiro(rows - rows.mean(axis=0), axis=0).pvalue >= policy.alpha
    equal_var = (levene_p >= policy.alpha) & (bartlett_p >= policy.alpha)
    significant = adjust_p(p, policy.correction) < policy.alpha
    return {
        "significant_share": float(significant.mean()),
        "shapiro_pass_share": float(normal.mean()),
        "levene_pass_share": float(np.mean(levene_p >= policy.alpha)),
        "bartlett_pass_share": float(np.mean(bartlett_p >= policy.alpha)),
        "assumptions_hold_share": float((normal & equal_var).mean()),
        "shapiro_max_rows_per_genre": policy.shapiro_max_rows,
        "F": {n: finite(v) for n, v in zip(names, f, strict=True)},
    }


def drift(previous, current, policy: CheckPolicy) -> dict:
    """Two-sample KS per feature: new tracks (or the whole snapshot) vs the previous one."""
    from scipy.stats import ks_2samp

    new = current[~current["track_id"].isin(set(previous["track_id"]))]
    compared = new if len(new) else current
    in_previous = present_in(previous.columns)
    names = columns([s for s in present_in(current.columns) if s in in_previous])
    with np.errstate(all="ignore"):
        result = ks_2samp(previous[names].to_numpy(np.float64),
                          compared[names].to_numpy(np.float64), axis=0)
    adjusted = adjust_p(result.pvalue, policy.correction)
    drifted = adjusted < policy.alpha
    order = np.argsort(-np.nan_to_num(result.statistic))
    return {
        "compared": "new tracks" if len(new) else "whole snapshot (no new tracks)",
        "n_previous_segments": int(len(previous)),
        "n_compared_segments": int(len(compared)),
        "drifted_share": float(drifted.mean()),
        "drifted_features": [names[i] for i in order if drifted[i]],
        "ks": {n: {"D": finite(d), "p_adj": finite(pa)} for n, d, pa in
               zip(names, result.statistic, adjusted, strict=True)},
    }


def _findings(report: dict, policy: CheckPolicy) -> list[dict]:
    """Everything outside the policy's thresholds, each marked "fail" or "warn"."""
    found = [("too_few_tracks", f"genre {g!r} has {n} track(s), fewer than "
              f"{policy.min_tracks_per_genre}")
             for g, n in report["tracks_per_genre"].items() if n < policy.min_tracks_per_genre]
    if report["imbalance_ratio"] > policy.max_imbalance_ratio:
        found.append(("imbalance", f"segments per genre differ {report['imbalance_ratio']:.1f}x "
                      f"(> {policy.max_imbalance_ratio}x)"))
    if report["duplicate_share"] > policy.max_duplicate_share:
        found.append(("duplicate_segments", f"{report['duplicate_segments']} segment(s) repeat "
                      f"another's features exactly ({report['duplicate_share']:.1%})"))
    share = report["kruskal"]["significant_share"]
    if share < policy.min_significant_share:
        found.append(("low_separability", f"only {share:.0%} of features differ by genre "
                      f"(Kruskal-Wallis, {policy.correction}-adjusted p<{policy.alpha})"))
    if report["drift"] and report["drift"]["drifted_share"] > policy.max_drift_share:
        found.append(("drift", f"{report['drift']['drifted_share']:.0%} of features drifted "
                      f"from the previous snapshot (KS, {policy.correction}-adjusted)"))
    leaks = report["validation_overlap"]["songs"]
    if leaks:
        keys = ", ".join(f"{s['valid_track_id']} = {s['key']}" for s in leaks[:10])
        found.append(("validation_leak", f"{len(leaks)} song(s) of valid.csv are in the "
                      f"training snapshot (same audio sha256), so the validation scores and "
                      f"the gate overrate the model: {keys}"))
    conflicts = report["label_conflicts"]
    if conflicts:
        keys = ", ".join(f"{c['key']} ({c['genre']})" for c in conflicts)
        found.append(("label_conflicts", f"{len(conflicts)} catalog key(s) share their audio "
                      f"with a key of another genre and are kept out of training until the "
                      f"wrong file is removed: {keys}"))
    return [{"finding": name, "severity": "fail" if name in policy.fail_on else "warn",
             "message": message} for name, message in found]


def run_checks(
    table, genres: Sequence[str], policy: CheckPolicy = CheckPolicy(), previous=None,
    seed: int = 0, label_conflicts: Sequence[dict] = (),
    validation_overlap: dict | None = None,
) -> dict:
    """The checks report (JSON-able). Schema/dtype/NaN problems raise TableError at once;
    policy findings are listed in ``findings``; the caller raises on the "fail" ones.
    ``label_conflicts``: the catalog's rows in conflict (:func:`genreflow.catalog.conflicts`),
    reported as they are (they are not in ``table``). ``validation_overlap``: from
    :func:`validation_overlap`; None when valid.csv was not compared."""
    sets = present_in(table.columns)
    names = columns(sets)
    check_table(table, genres, "training snapshot", [s.name for s in sets])
    X = table[names].to_numpy(np.float64)
    genre = table["genre"].astype(str).to_numpy()
    present = sorted(set(genre))
    codes = np.searchsorted(present, genre)
    tracks = table.groupby("genre")["track_id"].nunique().reindex(genres, fill_value=0)
    segments = table["genre"].value_counts().reindex(genres, fill_value=0)
    duplicates = int(table.duplicated(subset=names).sum())

    h, p = kruskal_columns(X, codes)
    p_adj = adjust_p(p, policy.correction)
    top = [names[i] for i in np.argsort(-h)[: policy.top_features]]
    groups = [X[codes == c] for c in range(len(present))]
    report = {
        "policy": {f.name: getattr(policy, f.name) for f in fields(CheckPolicy)},
        "feature_sets": [s.id for s in sets],
        "n_features": len(names),
        "n_segments": int(len(table)),
        "n_tracks": int(table["track_id"].nunique()),
        "tracks_per_genre": {g: int(n) for g, n in tracks.items()},
        "segments_per_genre": {g: int(n) for g, n in segments.items()},
        "imbalance_ratio": float(segments.max() / max(segments.min(), 1)),
        "duplicate_segments": duplicates,
        "duplicate_share": duplicates / len(table),
        "kruskal": {
            "correction": policy.correction,
            "significant_share": float(np.mean(p_adj < policy.alpha)),
            "top_features": top,
            "per_feature": {n: {"H": float(hv), "p": float(pv), "p_adj": finite(pa)}
                            for n, hv, pv, pa in zip(names, h, p, p_adj, strict=True)},
        },
        "anova": (_anova(groups, names, policy, np.random.default_rng(seed))
                  if len(groups) > 1 else None),
        "confidence_intervals": confidence_intervals(table, top),
        "drift": drift(previous, table, policy) if previous is not None else None,
        "label_conflicts": list(label_conflicts),
        "validation_overlap": validation_overlap or {"checked": False, "songs": []},
    }
    report["findings"] = _findings(report, policy)
    log.info("%s", summary(report))
    return report


def check_snapshot(store: Store, table, valid, settings: Settings,
                   previous_key: str | None) -> dict:
    """The report of :func:`run_checks` on a run's snapshot ``table``: with the catalog's
    label conflicts, valid.csv's songs found in training, drift against the snapshot at
    ``previous_key`` (none if it is gone), the policy of ``include/checks.toml``."""
    from genreflow.catalog import conflicts, read_catalog
    from genreflow.dataset import REBUILD_HINT

    known = read_catalog(store)
    overlap = validation_overlap(valid, table, known)
    if not overlap["checked"]:
        log.warning("valid.csv %s has no audio_sha256 column, so its songs cannot be looked "
                    "for in the training data; %s", settings.valid_csv, REBUILD_HINT)
    previous = None
    if previous_key:
        try:
            previous = store.read_frame(previous_key)
        except KeyNotFound:
            log.warning("previous snapshot %s is gone; no drift check", previous_key)
    report = run_checks(table, settings.genres, load_policy(settings.home / POLICY_FILE),
                        previous, label_conflicts=conflicts(known),
                        validation_overlap=overlap)
    report["previous_snapshot_key"] = previous_key if previous is not None else None
    return report


def validation_overlap(valid, training, catalog) -> dict:
    """valid.csv songs whose audio (``audio_sha256``) a training track has: {"checked",
    "songs": [{valid_track_id, key, genre, sha256}]}; not checked for a valid.csv made
    before the column existed."""
    from genreflow.catalog import OK
    from genreflow.dataset import HASH_COLUMN

    if HASH_COLUMN not in valid.columns:
        return {"checked": False, "songs": []}
    trained = catalog[catalog["track_id"].isin(set(training["track_id"]))
                      & (catalog["status"] == OK)]
    by_sha = dict(zip(trained["sha256"], zip(trained["key"], trained["genre"], strict=True),
                      strict=True))
    songs = valid.drop_duplicates("track_id")
    return {"checked": True, "songs": [
        {"valid_track_id": str(track_id), "key": by_sha[sha][0], "genre": by_sha[sha][1],
         "sha256": sha}
        for track_id, sha in zip(songs["track_id"], songs[HASH_COLUMN], strict=True)
        if sha in by_sha]}


def summary(report: dict) -> str:
    """A few readable lines for the task log."""
    kw, anova, drift_ = report["kruskal"], report["anova"], report["drift"]
    lines = [
        f"checks: {report['n_tracks']} tracks, {report['n_segments']} segments; imbalance "
        f"{report['imbalance_ratio']:.2f}x; {report['duplicate_segments']} duplicate segment(s)",
        f"  Kruskal-Wallis: {kw['significant_share']:.0%} of {report['n_features']} features "
        f"differ by genre ({kw['correction']}-adjusted); top: {', '.join(kw['top_features'][:5])}",
    ]
    if anova:
        lines.append(
            f"  ANOVA (do not trust without its assumptions): {anova['significant_share']:.0%} "
            f"significant; assumptions hold for {anova['assumptions_hold_share']:.0%} "
            f"(Shapiro {anova['shapiro_pass_share']:.0%}, Levene "
            f"{anova['levene_pass_share']:.0%}, Bartlett {anova['bartlett_pass_share']:.0%})")
    lines.append(
        f"  drift vs previous snapshot ({drift_['compared']}): "
        f"{drift_['drifted_share']:.0%} of features" if drift_ else
        "  drift: no previous snapshot to compare with")
    lines += [f"  {f['severity'].upper()}: {f['finding']}: {f['message']}"
              for f in report["findings"]]
    return "\n".join(lines)


def raise_on_failures(report: dict, where: str) -> None:
    """CheckFailed naming every finding the policy marks as fatal."""
    failed = [f["message"] for f in report["findings"] if f["severity"] == "fail"]
    if failed:
        raise CheckFailed(f"data checks failed: {'; '.join(failed)} (report: {where})")
