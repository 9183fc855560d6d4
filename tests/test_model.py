"""The one pipeline: fixed steps, one definition of candidates, SMOTE at fit only,
determinism, bounded grouped-CV selection with the one-standard-error rule, safe save,
and sklearn's estimator checks for our transformers."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from sklearn.utils.estimator_checks import parametrize_with_checks

from genreflow import registry
from genreflow.cluster import ClusterFeature
from genreflow.compression import POWER_FEATURES, PowerToDb
from genreflow.evaluation import evaluate
from genreflow.features.names import FEATURE_NAMES
from genreflow.generation import FeatureGenerator
from genreflow.model import (
    DEFAULT,
    STEPS,
    build_model,
    candidates,
    fit_model,
    small_data_params,
    usable,
)
from genreflow.selection import (
    cv_splits,
    grid_search,
    one_standard_error,
    select,
    track_sample,
)
from genreflow.trusted_types import TRUSTED_TYPES

GENRES = ("classical", "metal", "electronic")
SHIFT = {c: 2.5 for c in range(0, 40, 4)}
FAST = {"generate__n_keep": 50, "cluster__n_init": 2}


@parametrize_with_checks([PowerToDb(columns=None), FeatureGenerator(k=3, n_keep=5),
                          ClusterFeature(n_clusters=2, n_init=1)])
def test_transformers_pass_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def tables():
    from conftest import segment_table

    train = segment_table(GENRES, tracks=4, shift=SHIFT)
    # imbalanced: electronic has 2 tracks of 5 segments, the others 4
    train = train[~train["track_id"].isin(["telectronic2", "telectronic3"])]
    valid = segment_table(GENRES, tracks=2, seed=9, shift=SHIFT, prefix="v")
    return train.reset_index(drop=True), valid


def test_power_features_become_decibels():
    X = np.array([[1.0, 100.0, -3.0], [1e-3, 0.0, 5.0]])
    out = PowerToDb(columns=[0, 1], floor=1e-10).fit(X).transform(X)
    np.testing.assert_allclose(out, [[0.0, 20.0, -3.0], [-30.0, -100.0, 5.0]])
    assert set(POWER_FEATURES) == {n for n in FEATURE_NAMES if n.startswith(("mel", "rms_"))}
    assert len(POWER_FEATURES) == 2 + 2 * 128
    with pytest.raises(ValueError, match="floor"):
        PowerToDb(floor=0).fit(X)
    with pytest.raises(ValueError, match="indices below 3"):
        PowerToDb(columns=[3]).fit(X)
    with pytest.raises(TypeError):
        PowerToDb([0])  # keyword-only, like scikit-learn's own estimators


def test_every_candidate_is_the_base_pipeline_with_its_params():
    """One definition: the grid's entries are the candidates' set_params, in order, and
    every candidate builds the same fixed steps."""
    pool = candidates()
    assert next(iter(pool)) == DEFAULT
    for name, params in pool.items():
        model = build_model(params)
        assert [n for n, _ in model.steps] == list(STEPS), name
        for key, value in params.items():
            got = model.get_params()[key]
            assert (got == value if isinstance(value, str)
                    else got.get_params() == value.get_params()), (name, key)
    assert [n for n, _ in build_model().steps] == list(STEPS)


def test_the_grid_search_fits_exactly_the_candidates():
    """What GridSearchCV fits for grid entry i (clone of its estimator + the entry's
    params) is build_model(candidate i): same steps, same parameters."""
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid

    search = grid_search(list(candidates()), splits=[])
    entries = list(ParameterGrid(search.param_grid))
    assert len(entries) == len(candidates())
    for entry, params in zip(entries, candidates().values(), strict=True):
        searched = clone(search.estimator).set_params(**clone(entry, safe=False))
        assert repr(searched.get_params()) == repr(build_model(params).get_params())


def test_smote_runs_at_fit_only(tables):
    train, valid = tables
    model = fit_model(train, FAST)
    # fit oversampled electronic from 10 to 20 segments ...
    added = {g: n for g, n in model.named_steps["smote"].sampling_strategy_.items() if n}
    assert added == {"electronic": 10}
    # ... predict and the transform path see exactly the rows they are given
    assert model.predict(valid[FEATURE_NAMES]).shape == (len(valid),)
    assert model[:-1].transform(valid[FEATURE_NAMES]).shape[0] == len(valid)
    assert model.predict_proba(train[FEATURE_NAMES]).shape == (len(train), 3)


def test_same_seed_same_metrics(tables):
    train, valid = tables
    first, second = (evaluate(fit_model(train, FAST), valid) for _ in range(2))
    assert first == second
    assert first["roc_auc_ovo"] > 0.9  # the shifted features are learnable


def test_small_training_sets_shrink_smote_and_clusters():
    model = build_model({"cluster__n_clusters": 20})
    assert small_data_params(model, np.array(["a"] * 3 + ["b"] * 7)) == {
        "smote__k_neighbors": 2, "cluster__n_clusters": 10}
    assert small_data_params(model, np.array(["a", "b", "b"]))["smote"] == "passthrough"
    assert small_data_params(build_model(), np.array(["a"] * 6 + ["b"] * 6)) == {}


def test_one_standard_error_rule_prefers_the_first_candidate():
    stds = np.array([0.02, 0.02, 0.02])
    # 4 scores: s.e. of the best is 0.01; 0.905 is within it, so the first wins
    assert one_standard_error(np.array([0.905, 0.91, 0.80]), stds, 4) == 0
    assert one_standard_error(np.array([0.85, 0.91, 0.905]), stds, 4) == 1
    assert one_standard_error(np.array([0.85, 0.80, 0.91]), stds, 4) == 2


def test_selection_is_grouped_bounded_and_records_scores(tables):
    train, _ = tables
    splits = cv_splits(train)
    assert len(splits) == 2 * 2  # electronic has 2 tracks: 2 folds x 2 shuffles
    for fit_rows, test_rows in splits:
        assert not set(train["track_id"].iloc[fit_rows]) & set(train["track_id"].iloc[test_rows])
    names = usable(list(candidates()), {"librosa"})[:2]  # the table has librosa columns
    name, record = select(train, names=names)
    scores = [(c["roc_auc_ovo"], c["roc_auc_ovo_std"]) for c in record["candidates"]]
    assert [c["name"] for c in record["candidates"]] == names
    assert name == names[record["chosen"]] == names[one_standard_error(
        *map(np.array, zip(*scores, strict=True)), len(splits))]
    assert record["n_segments"] == len(train)
    one_track = train[train["track_id"] != "telectronic1"]
    assert select(one_track, names=names) == (names[0], {
        "rule": record["rule"], "n_splits": 0, "n_segments": len(one_track),
        "n_tracks": 9, "candidates": []})
    # bounded: 30 of the 50 rows, 2 whole tracks per genre, and the search scores exactly
    # that sample (the same scores as selecting on the sample itself)
    name, bounded = select(train, names=names, max_rows=30)
    assert (bounded["n_segments"], bounded["n_tracks"], bounded["n_splits"]) == (30, 6, 4)
    _, on_sample = select(track_sample(train, max_rows=30), names=names)
    assert [(c["roc_auc_ovo"], c["roc_auc_ovo_std"]) for c in bounded["candidates"]] == [
        (c["roc_auc_ovo"], c["roc_auc_ovo_std"]) for c in on_sample["candidates"]]
    assert [(c["roc_auc_ovo"], c["roc_auc_ovo_std"]) for c in bounded["candidates"]] != scores


def test_track_sample_keeps_whole_tracks_of_every_genre(tables):
    train, _ = tables
    sample = track_sample(train, max_rows=30)
    assert len(sample) <= 30 and set(sample["genre"]) == set(GENRES)
    per_track = sample.groupby("track_id").size()
    assert (per_track == 5).all()  # whole tracks only
    assert track_sample(train, max_rows=10_000) is train


def test_trusted_types_are_exactly_what_the_candidates_hold():
    from conftest import segment_table

    both = ("librosa", "musicnn")
    train = segment_table(GENRES, tracks=3, shift=SHIFT, sets=both)
    valid = segment_table(GENRES, tracks=1, seed=9, shift=SHIFT, prefix="v", sets=both)
    untrusted = set()
    for params in candidates().values():
        small = {"cluster__n_init": 1} if "generate" in params else {
            "generate__n_keep": 10, "cluster__n_init": 1}
        model = fit_model(train, {**params, **small})
        data = registry.dump_model(model)
        untrusted |= set(sio.get_untrusted_types(data=data))
        loaded = registry.load_model_bytes(data)
        np.testing.assert_array_equal(loaded.predict_proba(valid), model.predict_proba(valid))
    assert untrusted == set(TRUSTED_TYPES)
