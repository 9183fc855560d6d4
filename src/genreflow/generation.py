"""The study's generated features as a scikit-learn transformer, with bounded memory.

From the top-``k`` base columns by Kruskal-Wallis H (on training data) it builds the odd
5th root ``r = sign(x)*|x|**(1/5)``, ``r**2``, ``r**3``, the pairwise products
``r_i*r_j`` (i < j), and ``sin`` and ``exp`` of each of those, then keeps the ``n_keep``
candidates with the largest H. Candidates are scored chunk by chunk, so at most
``chunk_size`` of them exist at a time (k = 45 gives 3375 candidates).

``exp`` is applied to its argument clipped to +-``EXP_CLIP`` so it can never overflow.
H is a rank statistic, so a strictly increasing transform has exactly the H of its
argument: exp(v) ties with v, and cube(root(x)) with root(x) (and with x). With
``rank_distinct`` (the default) these duplicates are not candidates, so the top-N is
not filled with copies of one ranking; set it False to rank every candidate.
"""

from __future__ import annotations

import logging
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

log = logging.getLogger(__name__)

EXP_CLIP = 20.0  # exp(20) ~ 4.9e8: finite, and rank ties only beyond it
INNER = ("root", "square", "cube", "product")  # of the roots; product needs a second column
OUTER = ("", "sin", "exp")
ROW_BLOCK = 10000
_POWER = np.array([1.0, 2.0, 3.0, 1.0])


def odd_root(x: np.ndarray) -> np.ndarray:
    """sign(x) * |x| ** (1/5): pulls heavy tails in, keeps the sign."""
    return np.sign(x) * np.abs(x) ** 0.2


def candidate_specs(k: int, rank_distinct: bool = True) -> np.ndarray:
    """(outer, inner, i, j) over base positions 0..k-1, simplest forms first; without
    the rank-equivalent exp(v) and cube(root(x)) when ``rank_distinct``."""
    single = [(inner, i, i) for inner in range(3) for i in range(k)]
    pairs = [(3, i, j) for i in range(k) for j in range(i + 1, k)]
    specs = np.array([(outer, *s) for outer in range(len(OUTER)) for s in single + pairs],
                     dtype=np.int64).reshape(-1, 4)
    if rank_distinct:
        outer, inner = specs[:, 0], specs[:, 1]
        specs = specs[(outer != 2) & ~((outer == 0) & (inner == 2))]
    return specs


def evaluate_specs(roots: np.ndarray, specs: np.ndarray) -> np.ndarray:
    """Columns of ``specs`` (positions into ``roots``' columns): the one formula used by
    both fit (scoring) and transform."""
    outer, inner, i, j = specs.T
    ri = roots[:, i]
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.where(inner == 3, ri * roots[:, j], ri ** _POWER[inner])
        values = np.where(outer == 1, np.sin(values), values)
        return np.where(outer == 2, np.exp(np.clip(values, -EXP_CLIP, EXP_CLIP)), values)


def spec_name(spec, names) -> str:
    outer, inner, i, j = (int(v) for v in spec)
    core = (f"root({names[i]})*root({names[j]})" if INNER[inner] == "product"
            else f"root({names[i]})" if INNER[inner] == "root"
            else f"{INNER[inner]}(root({names[i]}))")
    return f"{OUTER[outer]}({core})" if OUTER[outer] else core


class FeatureGenerator(TransformerMixin, BaseEstimator):
    """Append the ``n_keep`` generated columns with the largest Kruskal-Wallis H.

    ``k``: base columns (top by H) the candidates are built from. ``score_rows``: rows
    (a seeded random subset) used to score candidates, bounding fit time on big
    snapshots. ``keep_original``: output the input columns too. ``rank_distinct``: leave
    out candidates whose ranks (so H) equal a simpler one's (see the module doc).
    """

    _parameter_constraints: dict = {
        "k": [Interval(Integral, 1, None, closed="left")],
        "n_keep": [Interval(Integral, 0, None, closed="left")],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "score_rows": [Interval(Integral, 2, None, closed="left")],
        "keep_original": ["boolean"],
        "rank_distinct": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, *, k: int = 45, n_keep: int = 350, chunk_size: int = 256,
                 score_rows: int = 20000, keep_original: bool = True,
                 rank_distinct: bool = True, random_state: int = 0):
        self.k = k
        self.n_keep = n_keep
        self.chunk_size = chunk_size
        self.score_rows = score_rows
        self.keep_original = keep_original
        self.rank_distinct = rank_distinct
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        from genreflow.stats import kruskal_columns

        X = validate_data(self, X, reset=True, dtype=np.float64)
        _, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(X) > self.score_rows:
            rows = np.random.default_rng(self.random_state).choice(
                len(X), self.score_rows, replace=False)
            X, codes = X[np.sort(rows)], codes[np.sort(rows)]
        base_h, _ = kruskal_columns(X, codes)
        self.base_columns_ = np.sort(np.argsort(-base_h, kind="stable")[: self.k])
        roots = odd_root(X[:, self.base_columns_])
        specs = candidate_specs(len(self.base_columns_), self.rank_distinct)
        scores = np.concatenate([
            kruskal_columns(evaluate_specs(roots, specs[s: s + self.chunk_size]), codes)[0]
            for s in range(0, len(specs), self.chunk_size)
        ])
        kept = np.argsort(-scores, kind="stable")[: self.n_keep]
        self.specs_ = specs[kept]
        self.scores_ = scores[kept]
        log.info("feature generation: %d candidates from %d base columns, kept %d (H %.1f..%.1f)",
                 len(specs), len(self.base_columns_), len(kept), self.scores_.max(initial=0),
                 self.scores_.min(initial=0))
        return self

    def transform(self, X):
        check_is_fitted(self, "specs_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        roots = odd_root(X[:, self.base_columns_])
        generated = np.vstack([  # row blocks bound the temporaries of evaluate_specs
            evaluate_specs(roots[s: s + ROW_BLOCK], self.specs_)
            for s in range(0, max(len(roots), 1), ROW_BLOCK)
        ])
        return np.hstack([X, generated]) if self.keep_original else generated

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "specs_")
        if input_features is None:
            input_features = getattr(
                self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)])
        base = [str(input_features[c]) for c in self.base_columns_]
        names = [spec_name(s, base) for s in self.specs_]
        if self.keep_original:
            names = [str(n) for n in input_features] + names
        return np.asarray(names, dtype=object)
