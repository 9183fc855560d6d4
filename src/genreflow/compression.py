"""Power-scale features in decibels, so scaling and feature generation see even steps.

Mel band energies and RMS (means and standard deviations over a segment) span many
orders of magnitude: a quiet classical segment and a loud metal one differ by 1e4 in a
high band. Standardised raw, a few loud segments dominate each column and the
generated products; as decibels the same column is a level, and a different recording
gain is a shift, not a factor. Measured on real clips of other sources it is the
single largest out-of-domain gain (bench/RESULTS.md, "Out-of-domain").
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from genreflow.features.names import FEATURE_NAMES

POWER_FEATURES: tuple[str, ...] = tuple(
    name for name in FEATURE_NAMES if name.startswith(("mel", "rms_"))
)
POWER_COLUMNS: tuple[int, ...] = tuple(FEATURE_NAMES.index(n) for n in POWER_FEATURES)


class PowerToDb(TransformerMixin, BaseEstimator):
    """``10 * log10(max(x, floor))`` on ``columns`` (indices; None: every column).

    Values below ``floor`` (zeros, rounding noise) map to the floor's level, so the
    output is always finite. Stateless apart from checking the column count.
    """

    _parameter_constraints: dict = {
        "columns": ["array-like", None],
        "floor": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, columns=POWER_COLUMNS, floor: float = 1e-10):
        self.columns = columns
        self.floor = floor

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        X = validate_data(self, X, reset=True, dtype=np.float64)
        columns = (np.arange(X.shape[1]) if self.columns is None
                   else np.asarray(self.columns, dtype=np.int64).reshape(-1))
        if columns.size and (columns.min() < 0 or columns.max() >= X.shape[1]):
            raise ValueError(f"columns must be indices below {X.shape[1]}, got "
                             f"{columns.min()}..{columns.max()}")
        self.columns_ = columns
        return self

    def transform(self, X):
        check_is_fitted(self, "columns_")
        X = validate_data(self, X, reset=False, dtype=np.float64, copy=True)
        X[:, self.columns_] = 10.0 * np.log10(np.maximum(X[:, self.columns_], self.floor))
        return X

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "columns_")
        if input_features is None:
            input_features = getattr(
                self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)])
        names = np.asarray(input_features, dtype=object).copy()
        names[self.columns_] = [f"db({n})" for n in names[self.columns_]]
        return names
