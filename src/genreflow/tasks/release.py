"""Release steps: the champion/challenger gate and the publish to the registry."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from genreflow import registry
from genreflow.config import Settings
from genreflow.storage import open_store
from genreflow.tasks.training import read_valid

log = logging.getLogger(__name__)



def gate(settings: Settings, metrics: dict, margin: float, force: bool) -> dict:
    """Promote unless the champion beats the challenger by more than ``margin`` ROC-AUC.

    Both are scored on the same valid.csv: when the champion's recorded valid_sha256
    equals today's, its recorded ROC-AUC is used (scoring is deterministic, so it is the
    same number, without loading the model); otherwise the champion is re-scored on
    today's valid.csv. ``champion`` in the decision is what publish checks latest against.
    A champion that cannot be read (deleted manifest, broken latest.json) is no usable
    champion: the challenger is promoted and the reason names the problem.
    """
    store = open_store(settings.store)
    current = registry.read_champion(store)
    champion = current.version
    challenger_auc = metrics["roc_auc_ovo"]
    if force:
        decision = {"promote": True, "reason": "forced by the force_publish param"}
    elif current.problem:
        decision = {"promote": True, "reason": f"no usable champion: {current.problem}"}
    elif champion is None:
        decision = {"promote": True, "reason": "first model: no champion yet"}
    else:
        try:
            champion_auc, basis = _champion_score(store, settings, champion, current.manifest,
                                                  metrics["valid_sha256"])
        except (registry.RegistryError, ValueError, KeyError, TypeError) as exc:
            decision = {"promote": True, "reason": f"champion {champion} cannot be scored: {exc}"}
        else:
            promote = challenger_auc >= champion_auc - margin
            decision = {
                "promote": promote, "champion_roc_auc_ovo": champion_auc,
                "reason": f"challenger ROC-AUC {challenger_auc:.4f} is "
                f"{'not worse' if promote else 'worse'} than champion {champion} "
                f"{champion_auc:.4f} ({basis}) within margin {margin}",
            }
    decision.update(champion=champion, margin=margin, challenger_roc_auc_ovo=challenger_auc)
    log.info("gate: %s: %s", "PROMOTE" if decision["promote"] else "REFUSE", decision["reason"])
    return decision


def _champion_score(
    store, settings: Settings, champion: str, manifest: dict, valid_sha256: str
) -> tuple[float, str]:
    """(champion ROC-AUC on today's valid.csv, how it was obtained)."""
    from genreflow.evaluation import evaluate

    if manifest.get("valid_sha256") == valid_sha256:
        return manifest["metrics"]["roc_auc_ovo"], "recorded on the same valid.csv"
    from genreflow.features.sets import ids, manifest_sets

    model, _ = registry.load_model(store, champion)
    valid, _ = read_valid(settings, ids(manifest_sets(manifest)))
    return evaluate(model, valid)["roc_auc_ovo"], "re-scored on today's valid.csv"


def publish(
    settings: Settings, snapshot: dict, trained: dict, metrics: dict, decision: dict,
    run_id: str, figures: dict[str, str] | None = None,
) -> dict:
    """Store the version (always) and move latest only when the gate promoted it.
    ``figures``: {file name: store key} drawn after validate (none when skipped)."""
    from genreflow.features.sets import resolve

    store = open_store(settings.store)
    report_files = dict(metrics.get("report_files") or {}) | dict(figures or {})
    clashing = sorted(registry.RESERVED_FILES & set(report_files))
    if clashing:
        raise registry.RegistryError(f"report files may not be named {clashing}")
    metrics = {k: v for k, v in metrics.items() if k != "report_files"}
    files = {name: store.read_bytes(key) for name, key in report_files.items()}
    files[registry.MODEL_FILE] = store.read_bytes(trained["model_key"])
    files[registry.METRICS_FILE] = registry.json_bytes(metrics)
    if trained.get("tracks_key"):  # absent from a run trained before records were kept
        files[registry.TRACKS_FILE] = store.read_bytes(trained["tracks_key"])
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "genres": trained["classes"],
        "feature_sets": trained["feature_sets"],
        "feature_fingerprints": [s.fingerprint for s in resolve(trained["feature_sets"])],
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
        "valid_csv": settings.valid_csv,
        "valid_sha256": metrics["valid_sha256"],
        "metrics": {k: v for k, v in metrics.items() if k != "per_genre"},
        "gate": decision,
        "packages": registry.package_versions(),
    }
    version = registry.new_version()
    registry.publish(store, version, files, manifest, promote=decision["promote"],
                     expected_champion=decision["champion"])
    where = store.location(registry.version_key(version, ""))
    log.info(
        "published %s to %s (%s); ROC-AUC ovo %.4f, song accuracy %.4f",
        version, where, "promoted to latest" if decision["promote"] else "NOT promoted",
        metrics["roc_auc_ovo"], metrics["song_accuracy"],
    )
    return {"version": version, "location": where, "promoted": decision["promote"],
            "roc_auc_ovo": metrics["roc_auc_ovo"], "song_accuracy": metrics["song_accuracy"]}
