"""Vouch for a published version later: retrain it from what it recorded and compare.

A version's manifest records its training snapshot, the configuration chosen
(``model_name``, a row of genreflow.model.candidates), the valid.csv it was scored on
(by sha256) and the package versions. Seeds are fixed, so the same snapshot, the same
configuration and the same packages give the same model: the same metrics and the same
probabilities for every validation segment. Anything that stops that from holding is
reported by name: a snapshot gone or changed since, a configuration this code no longer
has, another library version, another valid.csv.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from genreflow import registry
from genreflow.storage import KeyNotFound, Store

log = logging.getLogger(__name__)

METRICS = ("roc_auc_ovo", "song_accuracy", "song_macro_f1")
TOLERANCE = 1e-9  # probabilities of one deterministic fit on one machine agree exactly


@dataclass
class Reproduction:
    version: str
    reproduced: bool = False
    differences: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    max_probability_difference: float | None = None

    def as_dict(self) -> dict:
        return {"version": self.version, "reproduced": self.reproduced,
                "differences": self.differences, "metrics": self.metrics,
                "max_probability_difference": self.max_probability_difference}


def reproduce(store: Store, version: str, valid_data: bytes, genres) -> Reproduction:
    """Retrain ``version`` from its snapshot and configuration; score both models on the
    valid.csv bytes given (the one the version recorded, if its sha256 matches)."""
    import numpy as np

    from genreflow.dataset import read_valid_table
    from genreflow.evaluation import evaluate
    from genreflow.features.sets import manifest_sets
    from genreflow.model import candidates, fit_model, input_frame

    model, manifest = registry.load_model(store, version)
    result = Reproduction(version)
    name = manifest.get("model_name")
    if name not in candidates():
        result.differences.append(f"configuration {name!r} is not among this code's "
                                  "candidates, so it cannot be rebuilt")
        return result
    try:
        snapshot = store.read_frame(manifest["snapshot_key"])
    except (KeyNotFound, KeyError) as exc:
        result.differences.append(f"training snapshot {manifest.get('snapshot_key')} is gone "
                                  f"({exc}); the version cannot be retrained")
        return result
    if len(snapshot) != manifest.get("n_training_segments"):
        result.differences.append(f"snapshot has {len(snapshot)} segments, the version was "
                                  f"trained on {manifest.get('n_training_segments')}")
    now = registry.package_versions()
    for package, then in sorted((manifest.get("packages") or {}).items()):
        if now.get(package) != then:
            result.differences.append(f"{package} {then} then, {now.get(package)} now")
    if registry.sha256_hex(valid_data) != manifest.get("valid_sha256"):
        result.differences.append("valid.csv is not the one the version was scored on "
                                  "(sha256 differs): metrics are not comparable")
    log.info("reproduce %s: refitting %s on %d segments", version, name, len(snapshot))
    retrained = fit_model(snapshot, candidates()[name])
    valid = read_valid_table(valid_data, genres, "valid.csv",
                             [s.name for s in manifest_sets(manifest)])
    result.metrics = {k: evaluate(retrained, valid)[k] for k in METRICS}
    for key in METRICS:
        recorded = manifest.get("metrics", {}).get(key)
        if recorded is None or abs(recorded - result.metrics[key]) > TOLERANCE:
            result.differences.append(f"{key}: recorded {recorded}, retrained "
                                      f"{result.metrics[key]}")
    difference = np.abs(retrained.predict_proba(input_frame(retrained, valid))
                        - model.predict_proba(input_frame(model, valid)))
    result.max_probability_difference = float(difference.max())
    if result.max_probability_difference > TOLERANCE:
        result.differences.append("predicted probabilities differ by up to "
                                  f"{result.max_probability_difference:.3g}")
    result.reproduced = not result.differences
    return result
