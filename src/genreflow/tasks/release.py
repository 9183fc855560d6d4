"""Release steps: the champion/challenger gate and the publish to the registry."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from importlib import metadata

from genreflow import registry
from genreflow.config import Settings
from genreflow.storage import open_store
from genreflow.tasks import run_key
from genreflow.tasks.training import read_valid

log = logging.getLogger(__name__)

PACKAGES = (
    "genreflow", "apache-airflow", "librosa", "numpy", "pandas", "scikit-learn",
    "imbalanced-learn", "scipy", "skops",
)


def gate(settings: Settings, metrics: dict, margin: float, force: bool) -> dict:
    """Promote unless the champion, re-scored on today's valid.csv, beats us by > margin."""
    from genreflow.evaluation import evaluate

    store = open_store(settings.store)
    latest = registry.read_latest(store)
    if force:
        decision = {"promote": True, "reason": "forced by the force_publish param"}
    elif latest is None:
        decision = {"promote": True, "reason": "first model: no champion yet"}
    else:
        try:
            champion, _ = registry.load_model(store, latest["version"])
            valid, _ = read_valid(settings)
            champion_auc = evaluate(champion, valid)["roc_auc_ovo"]
        except (registry.RegistryError, ValueError) as exc:
            decision = {"promote": True,
                        "reason": f"champion {latest['version']} cannot be scored: {exc}"}
        else:
            challenger_auc = metrics["roc_auc_ovo"]
            promote = challenger_auc >= champion_auc - margin
            verdict = "not worse" if promote else "worse"
            decision = {
                "promote": promote, "champion": latest["version"],
                "champion_roc_auc_ovo": champion_auc,
                "reason": f"challenger ROC-AUC {challenger_auc:.4f} is {verdict} than champion "
                f"{latest['version']} {champion_auc:.4f} within margin {margin}",
            }
    log.info("gate: %s: %s", "PROMOTE" if decision["promote"] else "REFUSE", decision["reason"])
    return decision


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def publish(
    settings: Settings, snapshot: dict, trained: dict, metrics: dict, decision: dict,
    run_id: str,
) -> dict:
    """Store the version (always) and move latest only when the gate promoted it."""
    from genreflow.features.names import FEATURE_NAMES

    store = open_store(settings.store)
    run = run_key(run_id)
    files = {
        registry.MODEL_FILE: store.read_bytes(trained["model_key"]),
        "metrics.json": json.dumps(metrics, indent=2, sort_keys=True).encode(),
        "checks.json": store.read_bytes(f"runs/{run}/checks.json"),
    }
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "genres": trained["classes"],
        "feature_names": FEATURE_NAMES,
        "model_config": trained["config"],
        "training_counts": trained["training_counts"],
        "snapshot_key": snapshot["snapshot_key"],
        "snapshot_fingerprint": snapshot["fingerprint"],
        "n_training_tracks": snapshot["n_tracks"],
        "valid_csv": settings.valid_csv,
        "valid_sha256": metrics["valid_sha256"],
        "metrics": {k: v for k, v in metrics.items() if k != "per_genre"},
        "gate": decision,
        "packages": _package_versions(),
    }
    version = registry.new_version()
    registry.publish(store, version, files, manifest, promote=decision["promote"])
    where = store.location(registry.version_key(version, ""))
    log.info(
        "published %s to %s (%s); ROC-AUC ovo %.4f, song accuracy %.4f",
        version, where, "promoted to latest" if decision["promote"] else "NOT promoted",
        metrics["roc_auc_ovo"], metrics["song_accuracy"],
    )
    return {"version": version, "location": where, "promoted": decision["promote"],
            "roc_auc_ovo": metrics["roc_auc_ovo"], "song_accuracy": metrics["song_accuracy"]}
