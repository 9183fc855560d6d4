"""The one pipeline: SMOTE at fit only, determinism, selection by grouped CV, safe save."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import skops.io as sio

from genreflow import registry
from genreflow.evaluation import evaluate
from genreflow.features.names import FEATURE_NAMES
from genreflow.model import ModelConfig, build_model, fit_config, fit_model
from genreflow.selection import CANDIDATES, cv_splits, select_config
from genreflow.trusted_types import TRUSTED_TYPES

GENRES = ("classical", "metal", "electronic")
SHIFT = {c: 2.5 for c in range(0, 40, 4)}
FAST = replace(ModelConfig(), smote=True, cluster=True, cluster_n_init=2, gen_keep=50)


@pytest.fixture(scope="module")
def tables():
    from conftest import segment_table

    train = segment_table(GENRES, tracks=4, shift=SHIFT)
    # imbalanced: electronic has 2 tracks of 5 segments, the others 4
    train = train[~train["track_id"].isin(["telectronic2", "telectronic3"])]
    valid = segment_table(GENRES, tracks=2, seed=9, shift=SHIFT, prefix="v")
    return train.reset_index(drop=True), valid


def test_smote_runs_at_fit_only(tables):
    train, valid = tables
    model = fit_model(train, FAST)
    assert [n for n, _ in model.steps] == ["generate", "scale", "smote", "cluster", "classifier"]
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
    y = np.array(["a"] * 3 + ["b"] * 7)
    config = fit_config(ModelConfig(smote=True, n_clusters=20), y)
    assert config.smote_k_neighbors == 2 and config.smote and config.n_clusters == 10
    assert not fit_config(ModelConfig(smote=True), np.array(["a", "b", "b"])).smote


def test_selection_is_grouped_by_track_and_records_scores(tables):
    train, _ = tables
    for fit_rows, test_rows in cv_splits(train):
        assert not set(train["track_id"].iloc[fit_rows]) & set(train["track_id"].iloc[test_rows])
    candidates = (FAST, replace(FAST, C=10.0))
    config, selection = select_config(train, candidates=candidates)
    assert selection["n_splits"] == 2  # electronic has 2 tracks
    scores = [c["roc_auc_ovo"] for c in selection["candidates"]]
    assert config == candidates[int(np.argmax(scores))] == candidates[selection["chosen"]]
    one_track = train[train["track_id"] != "telectronic1"]
    assert select_config(one_track, candidates=candidates) == (
        FAST, {"n_splits": 0, "candidates": []})


def test_trusted_types_are_exactly_what_the_candidates_hold(tables):
    train, valid = tables
    untrusted = set()
    shapes = {replace(c, C=1.0, n_estimators=5) for c in CANDIDATES}  # one fit per shape
    for config in shapes:
        model = fit_model(train, replace(config, cluster_n_init=1, gen_keep=10))
        data = registry.dump_model(model)
        untrusted |= set(sio.get_untrusted_types(data=data))
        loaded = registry.load_model_bytes(data)
        np.testing.assert_array_equal(loaded.predict_proba(valid[FEATURE_NAMES]),
                                      model.predict_proba(valid[FEATURE_NAMES]))
    assert untrusted == set(TRUSTED_TYPES)


def test_steps_can_be_switched_off():
    plain = build_model(replace(ModelConfig(), generate=False, smote=False, cluster=False))
    assert [n for n, _ in plain.steps] == ["scale", "classifier"]
    assert [n for n, _ in build_model().steps] == [
        "generate", "scale", "smote", "cluster", "classifier"]
    with pytest.raises(ValueError, match="classifier"):
        ModelConfig(classifier="catboost")
