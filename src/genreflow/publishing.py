"""What a run publishes as a model version: its files and its manifest, from what the
run's steps passed on (store keys, scores, the gate's decision)."""

from __future__ import annotations

from datetime import UTC, datetime

from genreflow import registry
from genreflow.layout import METRICS_FILE, MODEL_FILE, TRACKS_FILE
from genreflow.workspace import Workspace


def version_files(ws: Workspace, trained: dict, metrics: dict,
                  figures: dict[str, str] | None) -> dict[str, bytes]:
    """{file name: bytes}: the model, its metrics, the training tracks and the report
    files (validate's, and ``figures`` drawn after it: {name: store key})."""
    reports = dict(metrics.get("report_files") or {}) | dict(figures or {})
    clashing = sorted(registry.RESERVED_FILES & set(reports))
    if clashing:
        raise registry.RegistryError(f"report files may not be named {clashing}")
    files = {name: ws.store.read_bytes(key) for name, key in reports.items()}
    files[MODEL_FILE] = ws.store.read_bytes(trained["model_key"])
    files[METRICS_FILE] = registry.json_bytes(scores(metrics))
    if trained.get("tracks_key"):  # absent from a run trained before records were kept
        files[TRACKS_FILE] = ws.store.read_bytes(trained["tracks_key"])
    return files


def scores(metrics: dict) -> dict:
    """The metrics a version records (validate's, without where its reports are)."""
    return {k: v for k, v in metrics.items() if k != "report_files"}


def manifest(ws: Workspace, snapshot: dict, trained: dict, metrics: dict,
             decision: dict) -> dict:
    """What the version was trained on, how, how it scored and what the gate said."""
    from genreflow.features.sets import manifest_entries

    metrics = scores(metrics)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": ws.run_id,
        "genres": trained["classes"],
        **manifest_entries(trained["feature_sets"]),
        "model_name": trained["model_name"],
        "model_config": trained["config"],
        "cv_roc_auc_ovo": trained["cv_roc_auc_ovo"],
        "cv_roc_auc_ovo_std": trained["cv_roc_auc_ovo_std"],
        "n_training_segments": trained["n_training_segments"],
        "synthetic_demo": trained["synthetic_demo"],
        "training_counts": trained["training_counts"],
        "snapshot_key": snapshot["snapshot_key"],
        "snapshot_fingerprint": snapshot["fingerprint"],
        "n_training_tracks": snapshot["n_tracks"],
        "valid_csv": ws.settings.valid_csv,
        "valid_sha256": metrics["valid_sha256"],
        "metrics": {k: v for k, v in metrics.items() if k != "per_genre"},
        "gate": decision,
        "packages": registry.package_versions(),
    }
