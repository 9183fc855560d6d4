"""Training steps: decide whether to train, check the data, fit, score on valid.csv,
draw the UMAP figure."""

from __future__ import annotations

import logging
import time

from genreflow import gate, registry
from genreflow.config import Settings
from genreflow.layout import (
    CHECKS_FILE,
    CONFUSION_FILE,
    MODEL_FILE,
    TRACKS_FILE,
    UMAP_FILE,
    run_file,
)
from genreflow.workspace import Workspace

log = logging.getLogger(__name__)


def needs_training(settings: Settings, snapshot: dict, retrain_unchanged: bool) -> bool:
    """Skip the rest of the run when the champion was trained on this very snapshot."""
    champion = Workspace.open(settings).champion.manifest
    return gate.needs_training(champion, snapshot, retrain_unchanged)


def check(settings: Settings, snapshot: dict, run_id: str, previous_key: str | None = None,
          ) -> dict:
    """Run the statistical checks, store the JSON report, fail on the policy's hard findings.

    valid.csv is checked here too, before any training: a table that train/validate
    would choke on fails the run now, with the reason, and is not retried.
    ``previous_key``: snapshot to measure drift against; default the champion's.
    """
    from genreflow.checks import check_snapshot, raise_on_failures
    from genreflow.dataset import check_valid

    ws = Workspace.open(settings, run_id)
    table = ws.store.read_frame(snapshot["snapshot_key"])
    valid = check_valid(settings, table)
    previous_key = previous_key or gate.previous_snapshot_key(ws.champion.manifest, snapshot)
    report = check_snapshot(ws.store, table, valid, settings, previous_key)
    key = run_file(ws.run_dir, CHECKS_FILE)
    ws.store.write_json(key, report)
    raise_on_failures(report, ws.store.location(key))
    return {"report_key": key, "significant_share": report["kruskal"]["significant_share"],
            "warnings": [f["message"] for f in report["findings"]]}


def train(settings: Settings, snapshot: dict, run_id: str) -> dict:
    """Choose the configuration by grouped CV (training data only, bounded), fit it on all;
    record the training tracks with their licences as the catalog has them now."""
    from genreflow.attribution import record_bytes
    from genreflow.model import candidates, fit_model, needed_sets
    from genreflow.selection import select

    started = time.monotonic()
    ws = Workspace.open(settings, run_id)
    table = ws.store.read_frame(snapshot["snapshot_key"])
    name, selection = select(table, settings.workers)
    model = fit_model(table, candidates()[name])
    key, tracks_key = run_file(ws.run_dir, MODEL_FILE), run_file(ws.run_dir, TRACKS_FILE)
    ws.store.write_bytes(key, registry.dump_model(model))
    ws.store.write_bytes(tracks_key, record_bytes(ws.store, table["track_id"].unique()))
    log.info("trained %s in %.1f s -> %s", name, time.monotonic() - started,
             ws.store.location(key))
    chosen = selection["candidates"][selection["chosen"]] if selection["candidates"] else {}
    return {
        "model_key": key, "tracks_key": tracks_key, "run_dir": ws.run_dir,
        "snapshot_key": snapshot["snapshot_key"], "model_name": name,
        "feature_sets": needed_sets(model),
        "config": {"steps": {step: str(obj) for step, obj in model.steps},
                   "selection": selection},
        "cv_roc_auc_ovo": chosen.get("roc_auc_ovo"),
        "cv_roc_auc_ovo_std": chosen.get("roc_auc_ovo_std"),
        "n_training_segments": int(len(table)), "synthetic_demo": settings.is_demo_inbox,
        "classes": [str(c) for c in model.classes_],
        "training_counts": {str(g): int(n) for g, n in table["genre"].value_counts().items()},
    }


def validate(settings: Settings, trained: dict) -> dict:
    """Score on valid.csv and store the confusion matrix; lists the report files in
    report_files (the UMAP figure is its own step: :func:`figure`)."""
    from genreflow.dataset import read_valid
    from genreflow.evaluation import evaluate, metrics_block
    from genreflow.plots import confusion_matrix_png

    store, folder = Workspace.open(settings).store, trained["run_dir"]
    valid, valid_sha = read_valid(settings, trained["feature_sets"])
    log.info("scoring %s on %d songs of valid.csv", trained["model_name"],
             valid["track_id"].nunique())
    metrics = evaluate(registry.load_model_bytes(store.read_bytes(trained["model_key"])), valid)
    metrics["valid_sha256"] = valid_sha
    log.info("%s", metrics_block(metrics, settings.valid_csv))
    files = {name: run_file(folder, name) for name in (CHECKS_FILE,)
             if store.exists(run_file(folder, name))}
    matrix = metrics["confusion_matrix"]
    files[CONFUSION_FILE] = run_file(folder, CONFUSION_FILE)
    store.write_bytes(files[CONFUSION_FILE], confusion_matrix_png(
        matrix["songs"], matrix["labels"], "Songs of valid.csv (soft vote)"))
    metrics["report_files"] = files
    log.info("report files in %s: %s", store.location(folder), ", ".join(files))
    return metrics


def figure(settings: Settings, trained: dict) -> dict[str, str]:
    """The UMAP figure of the training segments, stored in the run's folder; {name: key}.
    Best effort, in the DAG: a failure skips the figure, not the run."""
    from genreflow.plots import umap_figure

    started = time.monotonic()
    store = Workspace.open(settings).store
    key = run_file(trained["run_dir"], UMAP_FILE)
    model = registry.load_model_bytes(store.read_bytes(trained["model_key"]))
    store.write_bytes(key, umap_figure(model, store.read_frame(trained["snapshot_key"])))
    log.info("UMAP figure in %.1f s -> %s", time.monotonic() - started, store.location(key))
    return {UMAP_FILE: key}
