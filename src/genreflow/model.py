"""The genre model: ONE imbalanced-learn Pipeline, so training and serving cannot disagree.

Fixed steps, always in this order and always present (an unused one is
``"passthrough"``): select (the columns of the configuration's feature sets) ->
compress (power features to dB) -> generate -> scale -> SMOTE -> cluster feature ->
classifier. A configuration is a dict of ``set_params`` values on
these steps; ``CANDIDATES`` names the few configurations the train step chooses among,
and the same dict is the GridSearchCV grid (genreflow.selection), the benchmark's rows
and the documentation's list. SMOTE is a sampler: imbalanced-learn runs it in ``fit``
only, so ``predict`` on N rows returns N rows.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SEED = 0
LIBROSA, MUSICNN = "librosa", "musicnn"
STEPS = ("select", "compress", "generate", "scale", "smote", "cluster", "classifier")
DEFAULT = "musicnn + SMOTE + cluster | logreg C=0.001"
LIBROSA_DEFAULT = "dB + SMOTE + cluster | logreg C=0.01"  # the default before musicnn


def _logreg(C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000, random_state=SEED)


def _svm(C: float):
    from sklearn.svm import SVC

    return SVC(C=C, probability=True, random_state=SEED)


def _hist_gb():
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=SEED)


def _extra_trees():
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(n_estimators=300, random_state=SEED)


def _sets(*names: str):
    from genreflow.selector import FeatureSetSelector

    return FeatureSetSelector(sets=names)


def candidates() -> dict[str, dict]:
    """Name -> ``set_params`` of the base pipeline; the default first (the 1-s.e. rule
    prefers earlier rows). Measured out-of-domain in both directions and by grouped CV
    in bench/RESULTS.md ("## Model"): the musicnn embedding roughly doubles song
    accuracy on other sources over the hand-made features. Candidates whose feature sets
    a snapshot lacks are left out (`usable`). All are linear: the RBF SVM and boosting
    (variants) are quadratic or slow at 100k segments and lost out of domain."""
    off = "passthrough"
    return {
        DEFAULT: {"select": _sets(MUSICNN), "compress": off, "generate": off,
                  "classifier": _logreg(0.001)},
        "dB + musicnn + SMOTE + cluster | logreg C=0.001": {
            "select": _sets(LIBROSA, MUSICNN), "generate": off, "classifier": _logreg(0.001)},
        LIBROSA_DEFAULT: {"generate": off, "classifier": _logreg(0.01)},
        "dB + generated + SMOTE + cluster | logreg C=0.01": {"classifier": _logreg(0.01)},
    }


def candidate_sets(params: dict) -> tuple[str, ...]:
    """The feature set names a candidate's ``select`` step reads."""
    from genreflow.selector import FeatureSetSelector

    return tuple(params.get("select", FeatureSetSelector()).sets)


def usable(names: list[str], available: set[str]) -> list[str]:
    """The candidates among ``names`` whose feature sets are all ``available``."""
    pool = candidates()
    return [n for n in names if set(candidate_sets(pool[n])) <= available]


def variants() -> dict[str, dict]:
    """Benchmark-only configurations (ablations and the old default), never selected."""
    off = "passthrough"
    return {
        "dB + generated + SMOTE + cluster | logreg C=0.03": {"classifier": _logreg(0.03)},
        "old default: raw | generated + SMOTE + cluster | logreg C=0.03": {
            "compress": off, "classifier": _logreg(0.03)},
        "raw | plain logreg C=0.03": {
            "compress": off, "generate": off, "smote": off, "cluster": off,
            "classifier": _logreg(0.03)},
        "dB | plain logreg C=0.01": {
            "generate": off, "smote": off, "cluster": off, "classifier": _logreg(0.01)},
        "dB + generated | logreg C=0.01 (no SMOTE or cluster)": {
            "smote": off, "cluster": off, "classifier": _logreg(0.01)},
        "dB + generated + cluster | logreg C=0.01 (no SMOTE)": {
            "smote": off, "classifier": _logreg(0.01)},
        "dB + generated + SMOTE | logreg C=0.01 (no cluster)": {
            "cluster": off, "classifier": _logreg(0.01)},
        "dB + generated + SMOTE + cluster | logreg C=0.1": {"classifier": _logreg(0.1)},
        "dB + SMOTE + cluster | RBF SVM C=0.3": {"generate": off, "classifier": _svm(0.3)},
        "dB + SMOTE + cluster | hist gradient boosting": {
            "generate": off, "classifier": _hist_gb()},
        "dB + SMOTE + cluster | extra trees": {"generate": off, "classifier": _extra_trees()},
        "raw | plain extra trees": {
            "compress": off, "generate": off, "smote": off, "cluster": off,
            "classifier": _extra_trees()},
    }


def base_pipeline():
    """Every step at its default; candidates change steps with ``set_params``."""
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from genreflow.cluster import ClusterFeature
    from genreflow.compression import PowerToDb
    from genreflow.generation import FeatureGenerator
    from genreflow.selector import FeatureSetSelector

    return Pipeline([
        ("select", FeatureSetSelector()),
        ("compress", PowerToDb()),
        ("generate", FeatureGenerator(k=45, n_keep=350, random_state=SEED)),
        ("scale", StandardScaler()),
        ("smote", SMOTE(k_neighbors=5, random_state=SEED)),
        ("cluster", ClusterFeature(n_clusters=10, n_init=20, random_state=SEED)),
        ("classifier", _logreg(0.01)),
    ])


def build_model(params: dict | None = None):
    """The unfitted pipeline with ``params`` (default: the default candidate)."""
    from sklearn.base import clone

    params = candidates()[DEFAULT] if params is None else params
    return base_pipeline().set_params(**clone(params, safe=False))


def default_for(table) -> str:
    """The first candidate whose feature sets ``table`` holds."""
    from genreflow.features.sets import SETS

    present = {name for name, s in SETS.items() if set(s.columns) <= set(table.columns)}
    found = usable(list(candidates()), present)
    if not found:
        raise ValueError("the table holds no feature set a candidate uses")
    return found[0]


def small_data_params(model, y) -> dict:
    """``set_params`` that let ``model`` fit ``y``: SMOTE needs more rows per genre than
    neighbours (off below 2), KMeans no more clusters than rows."""
    import numpy as np

    _, counts = np.unique(np.asarray(y), return_counts=True)
    params: dict = {}
    smote, cluster = model.named_steps["smote"], model.named_steps["cluster"]
    if smote != "passthrough" and smote.k_neighbors >= counts.min():
        if counts.min() >= 2:
            params["smote__k_neighbors"] = int(counts.min()) - 1
        else:
            params["smote"] = "passthrough"
    if cluster != "passthrough" and cluster.n_clusters > counts.sum():
        params["cluster__n_clusters"] = int(counts.sum())
    if params:
        log.info("small training set (%d rows, smallest genre %d): %s", counts.sum(),
                 counts.min(), params)
    return params


def needed_sets(model) -> list[str]:
    """Feature set ids a fitted pipeline reads (pipelines published before feature sets
    read the 311 librosa columns)."""
    from genreflow.features.sets import DEFAULT_SETS, ids, resolve

    select = model.named_steps.get("select")
    return ids(resolve(select.sets if select is not None else DEFAULT_SETS))


def input_frame(model, table):
    """The columns of ``table`` that ``model`` reads, by name."""
    from genreflow.features.names import FEATURE_NAMES

    select = model.named_steps.get("select")
    return table if select is not None else table[FEATURE_NAMES]


def fit_model(table, params: dict | None = None):
    """Fit on a segment table (shared schema; any feature sets the configuration needs);
    returns the fitted pipeline.

    BLAS/OpenMP run single-threaded: on these small matrices extra threads only contend
    (measured 10-20x slower on 2 busy cores).
    """
    from threadpoolctl import threadpool_limits

    y = table["genre"].astype(str).to_numpy()
    model = build_model(candidates()[default_for(table)] if params is None else params)
    model.set_params(**small_data_params(model, y))
    log.info("training on %d segments of %d tracks", len(table), table["track_id"].nunique())
    with threadpool_limits(limits=1):
        model.fit(table, y)
    return model
