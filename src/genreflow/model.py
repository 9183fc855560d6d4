"""The genre model: ONE imbalanced-learn Pipeline, so training and serving cannot disagree."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

SEED = 0


@dataclass(frozen=True)
class ModelConfig:
    n_clusters: int = 10
    cluster_n_init: int = 20
    smote_k_neighbors: int = 5
    C: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(config: ModelConfig = ModelConfig()):
    """scale -> SMOTE (fit only) -> cluster one-hot -> classifier."""
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from genreflow.cluster import ClusterFeature

    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("smote", SMOTE(k_neighbors=config.smote_k_neighbors, random_state=SEED)),
            (
                "cluster",
                ClusterFeature(config.n_clusters, config.cluster_n_init, random_state=SEED),
            ),
            ("classifier", LogisticRegression(C=config.C, max_iter=5000, random_state=SEED)),
        ]
    )


def fit_model(table, config: ModelConfig = ModelConfig()):
    """Fit on a segment table (shared schema); returns the fitted pipeline."""
    from genreflow.features.names import FEATURE_NAMES

    counts = table["genre"].value_counts().sort_index()
    log.info("training on %d segments of %d tracks; segments per genre: %s",
             len(table), table["track_id"].nunique(), counts.to_dict())
    model = build_model(config)
    model.fit(table[FEATURE_NAMES], table["genre"].astype(str).to_numpy())
    return model
