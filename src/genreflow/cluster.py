"""The study's "quantisation" feature: which KMeans cluster a segment falls in."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

ENCODINGS = ("onehot", "ordinal")


class ClusterFeature(TransformerMixin, BaseEstimator):
    """Append the nearest KMeans centre's id (one-hot, or one ordinal column) to the input.

    Placed after SMOTE in the pipeline, it is fitted on the resampled training matrix;
    new rows get the id of the nearest centre (Euclidean), on the same columns it was
    fitted on, so the study's column-mismatch flaw cannot happen. One-hot is the default:
    cluster ids are unordered categories, and an ordinal column would make a linear
    model read "cluster 7 > cluster 3". ``fit_rows``: KMeans is fitted on a seeded random
    subset of at most this many rows, which bounds fit time on big snapshots (the
    centres of 20k rows are as good as of 100k for 10 clusters).
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "encoding": [StrOptions(set(ENCODINGS))],
        "fit_rows": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, n_clusters: int = 10, n_init: int = 20, encoding: str = "onehot",
                 fit_rows: int = 20000, random_state: int = 0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.encoding = encoding
        self.fit_rows = fit_rows
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        from sklearn.cluster import KMeans

        X = validate_data(self, X, reset=True, dtype=np.float64)
        if len(X) > self.fit_rows:
            rng = np.random.default_rng(self.random_state)
            X = X[np.sort(rng.choice(len(X), self.fit_rows, replace=False))]
        self.kmeans_ = KMeans(
            n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.random_state
        ).fit(X)
        return self

    def assign(self, X) -> np.ndarray:
        """Id of the nearest centre of each row."""
        check_is_fitted(self, "kmeans_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.kmeans_.predict(X)

    def transform(self, X):
        labels = self.assign(X)
        X = np.asarray(X, dtype=np.float64)
        if self.encoding == "ordinal":
            return np.hstack([X, labels[:, None].astype(np.float64)])
        return np.hstack([X, np.eye(self.n_clusters)[labels]])

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "kmeans_")
        if input_features is None:
            input_features = getattr(
                self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)]
            )
        clusters = (["cluster"] if self.encoding == "ordinal"
                    else [f"cluster_{i}" for i in range(self.n_clusters)])
        return np.asarray(list(input_features) + clusters, dtype=object)
