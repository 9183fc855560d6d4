"""The study's "quantisation" feature: which KMeans cluster a segment falls in."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


class ClusterFeature(TransformerMixin, BaseEstimator):
    """Append a one-hot of the nearest KMeans centre to the input columns.

    Placed after SMOTE in the pipeline, it is fitted on the resampled training matrix;
    new rows get the id of the nearest centre (Euclidean), the same columns they were
    fitted on, so the study's column-mismatch flaw cannot happen.
    """

    def __init__(self, n_clusters: int = 10, n_init: int = 20, random_state: int = 0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X, y=None):
        from sklearn.cluster import KMeans

        X = validate_data(self, X, reset=True, dtype=np.float64)
        self.kmeans_ = KMeans(
            n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.random_state
        ).fit(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "kmeans_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        labels = self.kmeans_.predict(X)
        return np.hstack([X, np.eye(self.n_clusters)[labels]])

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "kmeans_")
        if input_features is None:
            input_features = getattr(
                self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)]
            )
        clusters = [f"cluster_{i}" for i in range(self.n_clusters)]
        return np.asarray(list(input_features) + clusters, dtype=object)
