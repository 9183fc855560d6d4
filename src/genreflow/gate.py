"""Champion against challenger: whether a run trains at all, and whether its model is
promoted.

A champion that cannot be read (deleted manifest, broken latest.json) is no usable
champion: :func:`genreflow.registry.read_champion` logs why, the run trains, and the
challenger is promoted with the reason naming the problem.
"""

from __future__ import annotations

import logging

from genreflow import registry
from genreflow.layout import MODEL_FILE
from genreflow.workspace import Workspace

log = logging.getLogger(__name__)


def needs_training(champion: dict | None, snapshot: dict, retrain_unchanged: bool) -> bool:
    """False when the champion (its manifest) was trained on this very snapshot, unless
    ``retrain_unchanged``."""
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


def previous_snapshot_key(champion: dict | None, snapshot: dict) -> str | None:
    """The champion's training snapshot (None if no champion, or it is this snapshot)."""
    key = champion.get("snapshot_key") if champion else None
    return key if key and key != snapshot["snapshot_key"] else None


def decide(ws: Workspace, metrics: dict, margin: float, force: bool) -> dict:
    """Promote unless the champion beats the challenger by more than ``margin`` ROC-AUC.

    Both are scored on the same valid.csv: when the champion's recorded valid_sha256
    equals today's, its recorded ROC-AUC is used (scoring is deterministic, so it is the
    same number, without loading the model); otherwise the champion is re-scored on
    today's valid.csv. ``champion`` in the decision is what publish checks latest against.
    """
    current = ws.champion
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
            champion_auc, basis = _champion_score(ws, metrics["valid_sha256"])
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


def _champion_score(ws: Workspace, valid_sha256: str) -> tuple[float, str]:
    """(champion ROC-AUC on today's valid.csv, how it was obtained)."""
    from genreflow.dataset import read_valid
    from genreflow.evaluation import evaluate
    from genreflow.features.sets import ids, manifest_sets

    version, manifest = ws.champion.version, ws.champion.manifest
    if manifest.get("valid_sha256") == valid_sha256:
        return manifest["metrics"]["roc_auc_ovo"], "recorded on the same valid.csv"
    files = registry.verify_files(ws.store, version, manifest, [MODEL_FILE])
    model = registry.load_model_bytes(files[MODEL_FILE])
    valid, _ = read_valid(ws.settings, ids(manifest_sets(manifest)))
    return evaluate(model, valid)["roc_auc_ovo"], "re-scored on today's valid.csv"
