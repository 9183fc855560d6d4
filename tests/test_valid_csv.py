"""valid.csv edge cases (issue 10 item 7): checked before training, refused at once
(PermanentError: no retry) with the reason; two genres are scored, not a crash."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import test_registry
from conftest import segment_table

from genreflow.config import Settings
from genreflow.dataset import (
    FEATURE_FINGERPRINT,
    KEY_COLUMNS,
    VERSION_COLUMN,
    TableError,
    check_valid,
    write_valid_table,
)
from genreflow.errors import PermanentError
from genreflow.evaluation import evaluate
from genreflow.features.names import FEATURE_NAMES
from genreflow.storage import LocalStore
from genreflow.tasks import training

GENRES = test_registry.GENRES
models = test_registry.models  # two fitted pipelines (a module-scoped fixture)


def pairwise_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Mann-Whitney by hand: the share of (positive, negative) pairs ranked right."""
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_two_genres_are_scored_by_the_one_pair(models):
    valid = test_registry.random_table(7, tracks_per_genre=2)
    valid = valid[valid["genre"].isin(["classical", "metal"])]
    metrics = evaluate(models[0], valid)
    proba = models[0].predict_proba(valid[FEATURE_NAMES])
    classes = list(models[0].classes_)
    share = proba[:, classes.index("metal")] / (
        proba[:, classes.index("metal")] + proba[:, classes.index("classical")])
    is_metal = (valid["genre"] == "metal").to_numpy()
    expected = pairwise_auc(share[is_metal], share[~is_metal])
    assert metrics["roc_auc_ovo"] == pytest.approx(expected, abs=1e-6)
    assert metrics["n_songs"] == 4


def test_one_genre_is_refused_not_nan(models):
    valid = test_registry.random_table(7, tracks_per_genre=2)
    with pytest.raises(TableError, match="needs 2"):
        evaluate(models[0], valid[valid["genre"] == "metal"])


def shifted(table: pd.DataFrame) -> pd.DataFrame:
    """The same header over values one column off, as another feature version wrote."""
    rolled = np.roll(table[FEATURE_NAMES].to_numpy(), 1, axis=1)
    features = pd.DataFrame(rolled, columns=FEATURE_NAMES, index=table.index)
    return pd.concat([table[KEY_COLUMNS], features], axis=1).assign(
        **{VERSION_COLUMN: "v0-0123456789ab"})


TRAINED = ("classical", "metal")


def valid_table(genres=TRAINED) -> pd.DataFrame:
    return segment_table(genres, tracks=2, prefix="v")


def edited(change):
    """A current valid.csv with one edit made by ``change(table)`` (a hand-edited file)."""
    def write(path):
        table = valid_table().assign(**{VERSION_COLUMN: FEATURE_FINGERPRINT})
        change(table)
        table.to_csv(path, index=False)
    return write


def two_genres(table):
    """The first song's last segment relabelled: one song under two genres."""
    table.loc[4, "genre"] = "metal"


def repeated(table):
    table.loc[3, ["segment", *FEATURE_NAMES]] = table.loc[2, ["segment", *FEATURE_NAMES]]


CASES = {  # case -> (valid.csv written by it, or None for no file; the reason it fails)
    "one-genre": (lambda path: write_valid_table(valid_table(("metal",)), path),
                  "at least 2"),
    "no-fingerprint": (lambda path: valid_table().to_csv(path, index=False),
                       f"no {VERSION_COLUMN} column"),
    "other-feature-version": (lambda path: shifted(valid_table()).to_csv(path, index=False),
                              re.escape("made with features v0-0123456789ab, the model needs v1-")),
    "genre-not-in-training": (lambda path: write_valid_table(valid_table(GENRES), path),
                              r"genre\(s\) \['electronic'\] have no training tracks"),
    "missing-file": (None, "valid.csv not found"),
    # issue 19 item 5: a traceback retried for two minutes, or a wrong score, before
    "non-numeric-cell": (edited(lambda t: t.__setitem__(FEATURE_NAMES[3], t[FEATURE_NAMES[3]]
                                                        .astype(object).where(t.index != 6,
                                                                              "abc"))),
                         re.escape(f"non-numeric value 'abc' in column {FEATURE_NAMES[3]} "
                                   "(row 6)")),
    "a-folder": (lambda path: path.mkdir(), "is a folder, not a file"),
    "song-under-two-genres": (edited(two_genres),
                              re.escape("1 song(s) labelled with 2+ genres: vclassical0")),
    "duplicated-rows": (edited(repeated),
                        re.escape("1 duplicated (track_id, segment) row(s), first "
                                  "vclassical0 segment 2")),
    "empty-track-id": (edited(lambda t: t.__setitem__("track_id", t["track_id"].where(
        t.index != 7, ""))), re.escape("1 row(s) without a track_id, first row 7")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_valid_csv_fails_the_checks_step_before_training(tmp_path, case):
    store = LocalStore(tmp_path / "store")
    store.write_frame("snapshots/s.parquet", segment_table(TRAINED))
    valid_csv = tmp_path / "elsewhere" / "valid.csv"
    write, reason = CASES[case]
    if write:
        valid_csv.parent.mkdir()
        write(valid_csv)
    settings = Settings(home=tmp_path, store=str(tmp_path / "store"), inbox="",
                        valid_csv=str(valid_csv), genres=GENRES)
    with pytest.raises(TableError, match=reason) as failure:
        training.check(settings, {"snapshot_key": "snapshots/s.parquet", "fingerprint": "f"},
                       "manual__1")
    assert isinstance(failure.value, PermanentError)
    assert store.list_keys("runs/") == []  # failed before any report or model
    assert write or not valid_csv.parent.exists()  # a missing file creates no folder


def test_a_current_table_passes(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.write_frame("snapshots/s.parquet", segment_table(GENRES))
    write_valid_table(segment_table(GENRES[:2], tracks=2, prefix="v"), tmp_path / "valid.csv")
    assert pd.read_csv(tmp_path / "valid.csv")[VERSION_COLUMN].unique().tolist() == [
        FEATURE_FINGERPRINT]
    settings = Settings(home=tmp_path, store=str(tmp_path / "store"), inbox="",
                        valid_csv=str(tmp_path / "valid.csv"), genres=GENRES)
    check_valid(settings, store.read_frame("snapshots/s.parquet"))
