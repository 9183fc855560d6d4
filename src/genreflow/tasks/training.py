"""Training steps: decide whether to train, check the data, fit, and score on valid.csv."""

from __future__ import annotations

import logging
import time

from genreflow import registry
from genreflow.config import Settings
from genreflow.storage import open_store, split_uri
from genreflow.tasks import run_key

log = logging.getLogger(__name__)


def needs_training(settings: Settings, snapshot: dict, retrain_unchanged: bool) -> bool:
    """Skip the rest of the run when the champion was trained on this very snapshot."""
    champion = registry.champion_manifest(open_store(settings.store))
    if champion and champion.get("snapshot_fingerprint") == snapshot["fingerprint"]:
        if not retrain_unchanged:
            log.info(
                "no new data: champion %s was trained on snapshot %s already; nothing to "
                "retrain (set retrain_unchanged to force)", champion["version"],
                snapshot["fingerprint"],
            )
            return False
        log.info("same snapshot as champion %s; retraining as asked", champion["version"])
    return True


def check(settings: Settings, snapshot: dict, run_id: str) -> dict:
    from genreflow.checks import CheckFailed, run_checks

    store = open_store(settings.store)
    table = store.read_frame(snapshot["snapshot_key"])
    report = run_checks(table, settings.genres)
    key = f"runs/{run_key(run_id)}/checks.json"
    store.write_json(key, report)
    if report["failures"]:
        failures = "; ".join(report["failures"])
        raise CheckFailed(f"data checks failed: {failures} (report: {store.location(key)})")
    return {"report_key": key, "significant_share": report["kruskal_significant_share"]}


def train(settings: Settings, snapshot: dict, run_id: str) -> dict:
    from genreflow.model import ModelConfig, fit_model

    started = time.monotonic()
    store = open_store(settings.store)
    table = store.read_frame(snapshot["snapshot_key"])
    config = ModelConfig()
    model = fit_model(table, config)
    key = f"runs/{run_key(run_id)}/{registry.MODEL_FILE}"
    store.write_bytes(key, registry.dump_model(model))
    log.info("trained in %.1f s -> %s", time.monotonic() - started, store.location(key))
    return {
        "model_key": key, "config": config.to_dict(), "classes": [str(c) for c in model.classes_],
        "training_counts": {str(g): int(n) for g, n in table["genre"].value_counts().items()},
    }


def read_valid(settings: Settings):
    """(table, sha256) of valid.csv; a broken table fails here with the reason."""
    from genreflow.dataset import read_valid_table

    valid_store, valid_name = split_uri(settings.valid_csv)
    data = valid_store.read_bytes(valid_name)
    return read_valid_table(data, settings.genres, settings.valid_csv), registry.sha256_hex(data)


def validate(settings: Settings, trained: dict) -> dict:
    from genreflow.evaluation import evaluate

    store = open_store(settings.store)
    valid, valid_sha = read_valid(settings)
    model = registry.load_model_bytes(store.read_bytes(trained["model_key"]))
    metrics = evaluate(model, valid)
    metrics["valid_sha256"] = valid_sha
    log.info(
        "validation on %s (%d songs, %d segments): ROC-AUC ovo %.4f, song accuracy %.4f, "
        "song macro-F1 %.4f", settings.valid_csv, metrics["n_songs"], metrics["n_segments"],
        metrics["roc_auc_ovo"], metrics["song_accuracy"], metrics["song_macro_f1"],
    )
    return metrics
