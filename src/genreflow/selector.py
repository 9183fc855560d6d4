"""The model's first step: the columns of its feature sets, whatever else a table holds.

A snapshot or a serving request may carry more columns than a configuration uses (both
feature sets, key columns); this step picks the configuration's sets by column name, so
one fitted pipeline says by itself what it needs (``sets``), and candidates that use
different sets are compared on the same table.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class FeatureSetSelector(TransformerMixin, BaseEstimator):
    """Keep the columns of ``sets`` (names in genreflow.features.sets), in set order.

    Needs a DataFrame (columns are found by name); the names are fixed at ``fit``
    (``columns_``), so a model keeps asking for what it was trained on.
    """

    def __init__(self, *, sets: tuple[str, ...] = ("librosa",)):
        self.sets = sets

    def fit(self, X, y=None):
        from genreflow.features.sets import columns, resolve

        self.columns_ = np.asarray(columns(resolve(self.sets)), dtype=object)
        self._check(X)
        self.n_features_in_ = len(self.columns_)
        return self

    def _check(self, X) -> None:
        if not hasattr(X, "columns"):
            raise TypeError("FeatureSetSelector needs a DataFrame with named columns")
        missing = [c for c in self.columns_ if c not in X.columns]
        if missing:
            raise ValueError(f"{len(missing)} column(s) of feature sets {list(self.sets)} "
                             f"missing, first {missing[:3]}")

    def transform(self, X):
        check_is_fitted(self, "columns_")
        self._check(X)
        return X[list(self.columns_)].to_numpy(dtype=np.float64)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "columns_")
        return self.columns_.copy()
