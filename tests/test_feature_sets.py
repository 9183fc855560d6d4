"""Training rows one can vouch for: snapshots checked against their record, lost features
files rebuilt from raw/, and a new feature set added to a live store by upgrade runs."""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd
import pytest
from test_ingest import inbox_settings, run

from genreflow import catalog, layout, snapshot
from genreflow.features.sets import SETS
from genreflow.layout import features_key
from genreflow.snapshot import NoUsableTracks
from genreflow.storage import LocalStore
from genreflow.tasks import ingest
from genreflow.track_features import missing_sets

BOTH = ("librosa", "musicnn")


def full_rebuild(settings, key: str) -> pd.DataFrame:
    """The snapshot as reading every features file gives it."""
    store = LocalStore(settings.store)
    store.delete(layout.SNAPSHOT_POINTER)
    store.delete(key)
    ingest.assemble(settings, [], "rebuild")
    return store.read_frame(key)


def test_a_tampered_earlier_snapshot_is_not_taken_as_is(tmp_path, short_clips, caplog):
    """The pointer names a snapshot whose values were scaled by 1.3 (another extractor):
    its tracks are read again from their files, so training never sees those rows."""
    settings = inbox_settings(tmp_path, short_clips)
    store = LocalStore(settings.store)
    first = run(settings, "r1", max_new=2)
    tampered = store.read_frame(first["snapshot_key"])
    columns = SETS["librosa"].columns
    tampered[columns] = tampered[columns] * 1.3
    store.write_frame(first["snapshot_key"], tampered)
    caplog.set_level(logging.INFO, logger="genreflow")
    second = run(settings, "r2")  # adds metal_000
    assert "2 tracks of the earlier snapshot do not match its record" in caplog.text
    built = store.read_frame(second["snapshot_key"])
    pd.testing.assert_frame_equal(built, full_rebuild(settings, second["snapshot_key"]))


def test_an_earlier_snapshot_of_another_feature_version_is_not_reused(tmp_path, short_clips,
                                                                       caplog):
    settings = inbox_settings(tmp_path, short_clips)
    store = LocalStore(settings.store)
    first = run(settings, "r1", max_new=2)
    record_key = first["snapshot_key"].replace(".parquet", ".json")
    record = store.read_json(record_key)
    store.write_json(record_key, {**record, "feature_sets": "v0-0123456789ab"})
    caplog.set_level(logging.INFO, logger="genreflow")
    second = run(settings, "r2")
    assert "holds feature sets v0-0123456789ab, this run needs v1-" in caplog.text
    assert "tracks taken from the earlier snapshot" not in caplog.text
    assert second["n_tracks"] == 3


def test_a_snapshot_changed_in_place_is_rebuilt_not_reused(tmp_path, short_clips, caplog):
    settings = inbox_settings(tmp_path, short_clips)
    store = LocalStore(settings.store)
    first = run(settings, "r1")
    good = store.read_frame(first["snapshot_key"])
    other = good.copy()
    other.loc[other["genre"] == "metal", SETS["librosa"].columns] = \
        good.loc[good["genre"] == "classical", SETS["librosa"].columns].to_numpy()[:1]
    store.write_frame(first["snapshot_key"], other)  # another genre's features on metal
    caplog.set_level(logging.INFO, logger="genreflow")
    again = ingest.assemble(settings, [], "r2")
    assert again == {**first, "new_tracks": 0}
    assert "does not match its record" in caplog.text
    pd.testing.assert_frame_equal(store.read_frame(first["snapshot_key"]), good)


def test_a_lost_features_file_is_extracted_again_from_raw(tmp_path, short_clips, caplog):
    settings = inbox_settings(tmp_path, short_clips)
    store = LocalStore(settings.store)
    first = run(settings, "r1")
    table = catalog.read_catalog(store).set_index("key")
    lost = table.loc["inbox:metal/metal_000.wav"]
    store.delete(lost["features_key"])
    store.delete(first["snapshot_key"])
    caplog.set_level(logging.INFO, logger="genreflow")
    second = run(settings, "r2", max_upgrade=10)
    assert "upgrade: 1 catalogued tracks lack feature sets (librosa)" in caplog.text
    assert store.exists(lost["features_key"])
    assert second == {**first, "new_tracks": 0}
    # raw audio gone as well: the track is failed with the reason, the run goes on
    store.delete(lost["features_key"])
    store.delete(lost["raw_key"])
    third = run(settings, "r3", max_upgrade=10)
    row = catalog.read_catalog(store).set_index("key").loc["inbox:metal/metal_000.wav"]
    assert row["status"] == catalog.FAILED
    assert f"raw audio {lost['raw_key']} is gone" in row["reason"]
    assert third["n_tracks"] == 2


def test_a_new_feature_set_reaches_every_catalogued_track_in_bounded_runs(tmp_path,
                                                                          short_clips, caplog):
    """A store built with librosa only; musicnn configured: each run upgrades at most
    ``max_upgrade`` tracks from raw/, tracks enter the snapshot once complete, none lost."""
    settings = inbox_settings(tmp_path, short_clips)
    store = LocalStore(settings.store)
    before = run(settings, "r1")
    both = dataclasses.replace(settings, feature_sets=BOTH)
    caplog.set_level(logging.INFO, logger="genreflow")
    with pytest.raises(NoUsableTracks, match="3 waiting for an upgrade"):
        run(both, "r2", max_upgrade=0)
    partial = run(both, "r3", max_upgrade=2)
    assert "2 taken this run (max_upgrade_tracks 2), 1 left for later runs" in caplog.text
    assert partial["n_tracks"] == 2 and partial["feature_sets"] == ["librosa-v1", "musicnn-v1"]
    done = run(both, "r4", max_upgrade=2)
    assert done["n_tracks"] == before["n_tracks"] == 3
    ok = catalog.read_catalog(store)
    assert (ok["status"] == catalog.OK).all()
    for track_id in ok["track_id"]:
        assert store.exists(features_key("musicnn-v1", track_id))
    snapshot = store.read_frame(done["snapshot_key"])
    assert set(SETS["musicnn"].columns) <= set(snapshot.columns)
    assert missing_sets(store, ok, BOTH) == {}


def test_row_digests_of_no_rows_are_empty(make_table):
    table = make_table(tracks=1, segments=2)
    assert snapshot.row_digests(table.iloc[:0]) == {}
    assert len(snapshot.row_digests(table)) == table["track_id"].nunique()
