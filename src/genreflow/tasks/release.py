"""Release steps: the champion/challenger gate and the publish to the registry."""

from __future__ import annotations

import logging

from genreflow import publishing, registry
from genreflow.config import Settings
from genreflow.gate import decide
from genreflow.layout import version_key
from genreflow.workspace import Workspace

log = logging.getLogger(__name__)


def gate(settings: Settings, metrics: dict, margin: float, force: bool) -> dict:
    """Promote unless the champion beats the challenger by more than ``margin`` ROC-AUC
    on today's valid.csv (genreflow.gate)."""
    return decide(Workspace.open(settings), metrics, margin, force)


def publish(
    settings: Settings, snapshot: dict, trained: dict, metrics: dict, decision: dict,
    run_id: str, figures: dict[str, str] | None = None,
) -> dict:
    """Store the version (always) and move latest only when the gate promoted it.
    ``figures``: {file name: store key} drawn after validate (none when skipped)."""
    ws = Workspace.open(settings, run_id)
    files = publishing.version_files(ws, trained, metrics, figures)
    manifest = publishing.manifest(ws, snapshot, trained, metrics, decision)
    version = registry.new_version()
    registry.publish(ws.store, version, files, manifest, promote=decision["promote"],
                     expected_champion=decision["champion"])
    where = ws.store.location(version_key(version, ""))
    log.info(
        "published %s to %s (%s); ROC-AUC ovo %.4f, song accuracy %.4f",
        version, where, "promoted to latest" if decision["promote"] else "NOT promoted",
        metrics["roc_auc_ovo"], metrics["song_accuracy"],
    )
    return {"version": version, "location": where, "promoted": decision["promote"],
            "roc_auc_ovo": metrics["roc_auc_ovo"], "song_accuracy": metrics["song_accuracy"]}
