"""Training steps: decide whether to train, check the data, fit, and score on valid.csv."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from genreflow import registry
from genreflow.config import Settings
from genreflow.layout import (
    CHECKS_FILE,
    CONFUSION_FILE,
    MODEL_FILE,
    TRACKS_FILE,
    UMAP_FILE,
    run_dir,
    run_file,
)
from genreflow.storage import open_store, split_uri

log = logging.getLogger(__name__)

CHECKS_POLICY = "include/checks.toml"


def needs_training(settings: Settings, snapshot: dict, retrain_unchanged: bool) -> bool:
    """Skip the rest of the run when the champion was trained on this very snapshot.

    A champion that cannot be read (manifest deleted, pointer broken) counts as none:
    read_champion logs why, and the run trains and publishes a usable one.
    """
    champion = registry.read_champion(open_store(settings.store)).manifest
    if champion and champion.get("snapshot_fingerprint") == snapshot["fingerprint"]:
        if not retrain_unchanged:
            log.info(
                "no new data: champion %s was trained on snapshot %s already; nothing to "
                "retrain (set retrain_unchanged to force)", champion["version"],
                snapshot["fingerprint"],
            )
            return False
        log.info("same snapshot as champion %s; retraining as asked", champion["version"])
    elif champion:
        log.info("new data since champion %s (snapshot %s -> %s): training",
                 champion["version"], champion.get("snapshot_fingerprint"),
                 snapshot["fingerprint"])
    else:
        log.info("no champion yet: training the first model on snapshot %s",
                 snapshot["fingerprint"])
    return True


def previous_snapshot_key(settings: Settings, snapshot: dict) -> str | None:
    """The champion's training snapshot (None if no champion, or it is this snapshot)."""
    champion = registry.read_champion(open_store(settings.store)).manifest
    key = champion.get("snapshot_key") if champion else None
    return key if key and key != snapshot["snapshot_key"] else None


def check(
    settings: Settings, snapshot: dict, run_id: str, previous_key: str | None = None
) -> dict:
    """Run the statistical checks, store the JSON report, fail on the policy's hard findings.

    valid.csv is checked here too, before any training: a table that train/validate
    would choke on fails the run now, with the reason, and is not retried.
    ``previous_key``: snapshot to measure drift against; default the champion's.
    """
    from genreflow.catalog import conflicts, read_catalog
    from genreflow.checks import load_policy, raise_on_failures, run_checks, validation_overlap
    from genreflow.dataset import REBUILD_HINT
    from genreflow.storage import KeyNotFound

    store = open_store(settings.store)
    table = store.read_frame(snapshot["snapshot_key"])
    valid = check_valid(settings, table)
    known = read_catalog(store)
    overlap = validation_overlap(valid, table, known)
    if not overlap["checked"]:
        log.warning("valid.csv %s has no audio_sha256 column, so its songs cannot be looked "
                    "for in the training data; %s", settings.valid_csv, REBUILD_HINT)
    previous_key = previous_key or previous_snapshot_key(settings, snapshot)
    previous = None
    if previous_key:
        try:
            previous = store.read_frame(previous_key)
        except KeyNotFound:
            log.warning("previous snapshot %s is gone; no drift check", previous_key)
    report = run_checks(table, settings.genres, load_policy(settings.home / CHECKS_POLICY),
                        previous, label_conflicts=conflicts(known),
                        validation_overlap=overlap)
    report["previous_snapshot_key"] = previous_key if previous is not None else None
    key = run_file(run_dir(run_id), CHECKS_FILE)
    store.write_json(key, report)
    raise_on_failures(report, store.location(key))
    return {"report_key": key, "significant_share": report["kruskal"]["significant_share"],
            "warnings": [f["message"] for f in report["findings"]]}


def train(settings: Settings, snapshot: dict, run_id: str) -> dict:
    """Choose the configuration by grouped CV (training data only, bounded), fit it on all;
    record the training tracks with their licences as the catalog has them now."""
    from genreflow.attribution import record_bytes
    from genreflow.model import candidates, fit_model, needed_sets
    from genreflow.selection import select

    started = time.monotonic()
    store = open_store(settings.store)
    table = store.read_frame(snapshot["snapshot_key"])
    name, selection = select(table, settings.workers)
    model = fit_model(table, candidates()[name])
    key = run_file(run_dir(run_id), MODEL_FILE)
    store.write_bytes(key, registry.dump_model(model))
    tracks_key = run_file(run_dir(run_id), TRACKS_FILE)  # for `genreflow licences`
    store.write_bytes(tracks_key, record_bytes(store, table["track_id"].unique()))
    log.info("trained %s in %.1f s -> %s", name, time.monotonic() - started,
             store.location(key))
    chosen = selection["candidates"][selection["chosen"]] if selection["candidates"] else {}
    return {
        "model_key": key, "tracks_key": tracks_key, "run_dir": run_dir(run_id),
        "snapshot_key": snapshot["snapshot_key"],
        "model_name": name,
        "feature_sets": needed_sets(model),
        "config": {"steps": {step: str(obj) for step, obj in model.steps},
                   "selection": selection},
        "cv_roc_auc_ovo": chosen.get("roc_auc_ovo"),
        "cv_roc_auc_ovo_std": chosen.get("roc_auc_ovo_std"),
        "n_training_segments": int(len(table)),
        "synthetic_demo": is_demo_inbox(settings),
        "classes": [str(c) for c in model.classes_],
        "training_counts": {str(g): int(n) for g, n in table["genre"].value_counts().items()},
    }


def is_demo_inbox(settings: Settings) -> bool:
    """Whether the inbox is the synthetic corpus `genreflow demo` writes (the default when
    GENREFLOW_INBOX is unset): a model trained on it has never heard real music."""
    inbox = settings.inbox.removeprefix("file://")
    return "://" not in inbox and Path(inbox).resolve() == (settings.demo_dir / "inbox").resolve()


def read_valid(settings: Settings, sets):
    """(table, sha256) of valid.csv with the feature ``sets``; a missing or broken table
    (or one without those sets, or of another version) fails here with the reason."""
    from genreflow.dataset import TableError, read_valid_table
    from genreflow.storage import KeyNotFound

    valid_store, valid_name = split_uri(settings.valid_csv)
    try:
        data = valid_store.read_bytes(valid_name)
    except KeyNotFound as exc:
        raise TableError(f"valid.csv not found: {exc}") from exc
    return (read_valid_table(data, settings.genres, settings.valid_csv, sets),
            registry.sha256_hex(data))


def check_valid(settings: Settings, training):
    """valid.csv, checked usable with a model trained on ``training``: readable, this
    code's features, 2+ genres, and every one of its genres has training tracks."""
    from genreflow.dataset import TableError
    from genreflow.features.sets import present_in

    valid, _ = read_valid(settings, [s.name for s in present_in(training.columns)])
    untrained = sorted(set(valid["genre"]) - set(training["genre"].astype(str)))
    if untrained:
        raise TableError(f"{settings.valid_csv}: genre(s) {untrained} have no training tracks "
                         "in this snapshot, so the model could not score them")
    log.info("valid.csv %s: %d songs of %d genres, features match this code",
             settings.valid_csv, valid["track_id"].nunique(), valid["genre"].nunique())
    return valid


def umap_figure(model, table) -> bytes:
    """UMAP of the training matrix coloured by cluster.

    The matrix is the one the classifier's input is built from (generated + scaled
    columns, real segments only: samplers act in fit). A model without a cluster step
    gets clusters of the same kind (ClusterFeature defaults) fitted for the figure only.
    """
    from genreflow.cluster import ClusterFeature
    from genreflow.model import input_frame
    from genreflow.plots import umap_png

    before_smote = [name for name, _ in model.steps].index("smote")  # then cluster
    X = model[:before_smote].transform(input_frame(model, table))
    cluster = model.named_steps["cluster"]
    if cluster == "passthrough":
        cluster = ClusterFeature().fit(X)
    return umap_png(X, table["genre"].astype(str).to_numpy(), cluster.assign(X))


def metrics_block(metrics: dict, valid_csv: str) -> str:
    """The validation result as a few short lines, one per measure, for the task log."""
    per_genre = metrics["per_genre"]  # sklearn's report: genres, then averages
    worst = min(((g, per_genre[g]) for g in metrics["confusion_matrix"]["labels"]
                 if g in per_genre), key=lambda item: item[1]["f1-score"], default=None)
    lines = [
        f"validation on {valid_csv}: {metrics['n_songs']} songs, "
        f"{metrics['n_segments']} segments",
        f"  ROC-AUC ovo      {metrics['roc_auc_ovo']:.4f}",
        f"  song accuracy    {metrics['song_accuracy']:.4f}",
        f"  song macro-F1    {metrics['song_macro_f1']:.4f}",
    ]
    if worst:
        lines.append(f"  weakest genre    {worst[0]} (F1 {worst[1]['f1-score']:.2f})")
    return "\n".join(lines)


def validate(settings: Settings, trained: dict) -> dict:
    """Score on valid.csv and store the confusion matrix; lists the report files in
    report_files (the UMAP figure is its own step: :func:`figure`)."""
    from genreflow.evaluation import evaluate
    from genreflow.plots import confusion_matrix_png

    store = open_store(settings.store)
    valid, valid_sha = read_valid(settings, trained["feature_sets"])
    log.info("scoring %s on %d songs of valid.csv", trained["model_name"],
             valid["track_id"].nunique())
    model = registry.load_model_bytes(store.read_bytes(trained["model_key"]))
    metrics = evaluate(model, valid)
    metrics["valid_sha256"] = valid_sha
    log.info("%s", metrics_block(metrics, settings.valid_csv))
    folder = trained["run_dir"]
    files = {name: run_file(folder, name) for name in (CHECKS_FILE,)
             if store.exists(run_file(folder, name))}
    matrix = metrics["confusion_matrix"]
    store.write_bytes(run_file(folder, CONFUSION_FILE), confusion_matrix_png(
        matrix["songs"], matrix["labels"], "Songs of valid.csv (soft vote)"))
    files[CONFUSION_FILE] = run_file(folder, CONFUSION_FILE)
    metrics["report_files"] = files
    log.info("report files in %s: %s", store.location(folder), ", ".join(files))
    return metrics


def figure(settings: Settings, trained: dict) -> dict[str, str]:
    """The UMAP figure of the training segments, stored in the run's folder; {name: key}.

    Best effort: a figure is not worth a failed run, so any error is logged with its
    reason and the figure skipped ({}); the version is then published without it.
    """
    started = time.monotonic()
    store = open_store(settings.store)
    key = run_file(trained["run_dir"], UMAP_FILE)
    try:
        model = registry.load_model_bytes(store.read_bytes(trained["model_key"]))
        store.write_bytes(key, umap_figure(model, store.read_frame(trained["snapshot_key"])))
    except Exception as exc:  # noqa: BLE001 (any failure: skip the figure, keep the run)
        log.warning("UMAP figure skipped: %s: %s", type(exc).__name__, exc)
        return {}
    log.info("UMAP figure in %.1f s -> %s", time.monotonic() - started, store.location(key))
    return {UMAP_FILE: key}
