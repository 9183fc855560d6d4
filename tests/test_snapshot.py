"""Training snapshots from features files written by hand: what a snapshot holds, the
record it is vouched by, and which rows of the last snapshot a new one may take."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd
import pytest

from genreflow import layout, snapshot
from genreflow.dataset import track_frame
from genreflow.features.sets import SETS, resolve
from genreflow.features.sets import fingerprint as sets_fingerprint
from genreflow.layout import features_key
from genreflow.storage import LocalStore, PermanentStoreError, StoreError

LIBROSA = resolve(["librosa"])
BOTH = resolve(["librosa", "musicnn"])


class CountingStore(LocalStore):
    """A local store that lists the keys it read, in order."""

    def __init__(self, root):
        super().__init__(root)
        self.reads: list[str] = []

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read_bytes(key)

    def features_read(self) -> list[str]:
        return sorted(k for k in self.reads if k.startswith("features/"))


class BlinkingStore(CountingStore):
    """The first read of each key (until ``failed`` is cleared) fails as a store blip does."""

    def __init__(self, root):
        super().__init__(root)
        self.failed: set[str] = set()

    def read_bytes(self, key: str) -> bytes:
        if key not in self.failed:
            self.failed.add(key)
            raise StoreError("connection reset")
        return super().read_bytes(key)


def write_features(store, track_id: str, genre: str, segments: int, seed: int,
                   sets=LIBROSA) -> dict[str, pd.DataFrame]:
    """One features file per set, as extraction writes them; {set id: its frame}."""
    rng = np.random.default_rng(seed)
    files = {}
    for feature_set in sets:
        frame = track_frame(track_id, genre,
                            rng.standard_normal((segments, len(feature_set.columns))),
                            [feature_set.name])
        store.write_frame(features_key(feature_set.id, track_id), frame)
        files[feature_set.id] = frame
    return files


def catalog_rows(*rows: tuple[str, str, int]) -> pd.DataFrame:
    """The ok rows of a catalog: (track id, genre, segment count)."""
    return pd.DataFrame(rows, columns=["track_id", "genre", "n_segments"])


def full_build(store, ok, sets=LIBROSA) -> pd.DataFrame:
    """The snapshot as reading every features file gives it (no earlier snapshot)."""
    store.delete(layout.SNAPSHOT_POINTER)
    return snapshot.build(store, ok, sets)[0]


def test_a_snapshot_is_every_track_sorted_labelled_by_the_catalog_and_recorded(tmp_path):
    store = LocalStore(tmp_path)
    late = write_features(store, "t2", "metal", 3, seed=1)["librosa-v1"]
    early = write_features(store, "t1", "jazz", 2, seed=2)["librosa-v1"]
    ok = catalog_rows(("t2", "classical", 3), ("t1", "jazz", 2))  # t2 relabelled
    key, found, frame = snapshot.assemble(store, ok, LIBROSA)
    assert (key, found) == (f"snapshots/{snapshot.fingerprint(ok, LIBROSA)}.parquet",
                            snapshot.fingerprint(ok, LIBROSA))
    assert frame["track_id"].tolist() == ["t1", "t1", "t2", "t2", "t2"]
    assert frame["segment"].tolist() == [0, 1, 0, 1, 2]
    assert frame["genre"].tolist() == ["jazz", "jazz", "classical", "classical", "classical"]
    assert isinstance(frame.index, pd.RangeIndex) and frame.index.tolist() == list(range(5))
    columns = SETS["librosa"].columns
    np.testing.assert_array_equal(frame[columns].to_numpy(),
                                  np.vstack([early[columns], late[columns]]))
    pd.testing.assert_frame_equal(store.read_frame(key), frame)
    assert store.read_json("snapshots/" + found + ".json") == {
        "feature_sets": sets_fingerprint(LIBROSA), "digests": snapshot.row_digests(frame)}
    assert set(snapshot.row_digests(frame)) == {"t1", "t2"}
    assert store.read_json(layout.SNAPSHOT_POINTER) == {"snapshot_key": key}


def test_fingerprints_name_tracks_genres_and_feature_sets():
    """librosa-only snapshots keep the fingerprints (and so the keys) they had before
    feature sets existed; other sets add a line."""
    ok = catalog_rows(("t1", "metal", 2), ("t2", "jazz", 3))
    labelled = "t1\tmetal\nt2\tjazz"
    assert snapshot.fingerprint(ok, LIBROSA) == \
        hashlib.sha256(labelled.encode()).hexdigest()[:16]
    both = f"{labelled}\nfeatures\t{sets_fingerprint(BOTH)}"
    assert snapshot.fingerprint(ok, BOTH) == hashlib.sha256(both.encode()).hexdigest()[:16]
    relabelled = catalog_rows(("t1", "metal", 2), ("t2", "blues", 3))
    assert snapshot.fingerprint(relabelled, LIBROSA) != snapshot.fingerprint(ok, LIBROSA)


def test_row_digests_are_sha256_of_each_tracks_segment_numbers_and_values(make_table):
    table = make_table(genres=("metal",), tracks=2, segments=3)
    digests = snapshot.row_digests(table)
    columns = SETS["librosa"].columns
    first = table[table["track_id"] == "tmetal0"]
    expected = hashlib.sha256(first["segment"].to_numpy(np.int64).tobytes()
                              + first[columns].to_numpy(np.float64).tobytes())
    assert digests == {"tmetal0": expected.hexdigest()[:32],
                       "tmetal1": snapshot.row_digests(table.iloc[3:])["tmetal1"]}
    changed = table.copy()
    changed.loc[5, columns[-1]] += 1e-9
    assert snapshot.row_digests(changed) == {**digests,
                                             "tmetal1": snapshot.row_digests(changed)["tmetal1"]}
    assert snapshot.row_digests(changed)["tmetal1"] != digests["tmetal1"]
    renumbered = table.assign(segment=table["segment"] + 1)
    assert not set(snapshot.row_digests(renumbered).values()) & set(digests.values())


def test_a_stored_snapshot_that_matches_its_record_is_reused_without_reading(tmp_path,
                                                                             caplog):
    store = CountingStore(tmp_path)
    write_features(store, "t1", "jazz", 2, seed=1)
    ok = catalog_rows(("t1", "jazz", 2))
    key, _, built = snapshot.assemble(store, ok, LIBROSA)
    store.reads.clear()
    caplog.set_level(logging.INFO, logger="genreflow")
    again = snapshot.assemble(store, ok, LIBROSA)
    assert again[0] == key
    pd.testing.assert_frame_equal(again[2], built)
    assert store.features_read() == []
    assert f"snapshot {store.location(key)} already exists and matches its record: reused" \
        in caplog.messages


@pytest.mark.parametrize(("record", "message"), [
    (None, "snapshot {where} has no record of what it was built from: not trusted"),
    (b"[]", "snapshot {where}: its record cannot be read (not a snapshot record): not trusted"),
    (b'{"feature_sets": "v1", "digests": []}',
     "snapshot {where}: its record cannot be read (not a snapshot record): not trusted"),
    (b"{not json", "snapshot {where}: its record cannot be read (Expecting property name "
     "enclosed in double quotes: line 1 column 2 (char 1)): not trusted"),
    (b'{"feature_sets": "v0-0123456789ab", "digests": {}}',
     "snapshot {where} holds feature sets v0-0123456789ab, this run needs {version}: not "
     "reused"),
], ids=["missing", "a-list", "digests-a-list", "not-json", "other-feature-sets"])
def test_a_snapshot_without_a_record_of_its_feature_sets_is_rebuilt(tmp_path, caplog,
                                                                    record, message):
    store = LocalStore(tmp_path)
    write_features(store, "t1", "jazz", 2, seed=1)
    ok = catalog_rows(("t1", "jazz", 2))
    key, _, built = snapshot.assemble(store, ok, LIBROSA)
    record_key = layout.snapshot_record_key(key)
    if record is None:
        store.delete(record_key)
    else:
        store.write_bytes(record_key, record)
    stale = built.assign(genre="metal")
    store.write_frame(key, stale)
    caplog.set_level(logging.INFO, logger="genreflow")
    assert snapshot.verified(store, key, sets_fingerprint(LIBROSA)) is None
    assert message.format(where=store.location(key), version=sets_fingerprint(LIBROSA)) \
        in caplog.messages
    pd.testing.assert_frame_equal(snapshot.assemble(store, ok, LIBROSA)[2], built)
    pd.testing.assert_frame_equal(store.read_frame(key), built)
    assert store.read_json(record_key)["digests"] == snapshot.row_digests(built)


def test_a_snapshot_whose_rows_changed_since_its_record_is_rebuilt(tmp_path, caplog):
    store = LocalStore(tmp_path)
    write_features(store, "t1", "jazz", 2, seed=1)
    ok = catalog_rows(("t1", "jazz", 2))
    key, _, built = snapshot.assemble(store, ok, LIBROSA)
    changed = built.copy()
    changed.loc[0, SETS["librosa"].columns[0]] *= 1.3
    store.write_frame(key, changed)
    caplog.set_level(logging.INFO, logger="genreflow")
    assert snapshot.verified(store, key, sets_fingerprint(LIBROSA)) is None
    assert (f"snapshot {store.location(key)} does not match its record (rows changed since "
            "it was built): rebuilding it from the features files") in caplog.messages
    pd.testing.assert_frame_equal(snapshot.assemble(store, ok, LIBROSA)[2], built)
    pd.testing.assert_frame_equal(store.read_frame(key), built)


def test_a_new_snapshot_reads_only_the_features_files_of_tracks_new_since_the_last(tmp_path,
                                                                                 caplog):
    store = CountingStore(tmp_path)
    write_features(store, "t1", "jazz", 2, seed=1)
    write_features(store, "t2", "metal", 3, seed=2)
    snapshot.assemble(store, catalog_rows(("t1", "jazz", 2), ("t2", "metal", 3)), LIBROSA)
    write_features(store, "t0", "blues", 1, seed=3)
    ok = catalog_rows(("t1", "jazz", 2), ("t2", "metal", 3), ("t0", "blues", 1))
    store.reads.clear()
    caplog.set_level(logging.INFO, logger="genreflow")
    key, _, frame = snapshot.assemble(store, ok, LIBROSA)
    assert store.features_read() == [features_key("librosa-v1", "t0")]
    assert "snapshot: 2 of 3 tracks taken from the earlier snapshot" in caplog.messages
    assert "snapshot: reading the features files of 1 tracks (1 feature sets)" \
        in caplog.messages
    assert "do not match its record" not in caplog.text
    record = store.read_json(layout.snapshot_record_key(key))
    assert record["digests"] == snapshot.row_digests(frame)
    assert store.read_json(layout.SNAPSHOT_POINTER) == {"snapshot_key": key}
    pd.testing.assert_frame_equal(frame, full_build(store, ok))


def test_earlier_rows_are_taken_only_where_segment_count_and_record_agree(tmp_path, caplog):
    """t1 now has 3 segments in the catalog, t2's rows differ from the record, t3 is
    unchanged, t4 left the catalog: only t3 is taken, t1 and t2 are read again, the
    genres are the catalog's."""
    store = CountingStore(tmp_path)
    for seed, track_id in enumerate(("t1", "t2", "t3", "t4")):
        write_features(store, track_id, "jazz", 2, seed=seed)
    first = catalog_rows(*((t, "jazz", 2) for t in ("t1", "t2", "t3", "t4")))
    key = snapshot.assemble(store, first, LIBROSA)[0]
    record = store.read_json(layout.snapshot_record_key(key))
    record["digests"]["t2"] = "0" * 32
    store.write_json(layout.snapshot_record_key(key), record)
    write_features(store, "t1", "jazz", 3, seed=5)
    ok = catalog_rows(("t1", "jazz", 3), ("t2", "jazz", 2), ("t3", "metal", 2))
    store.reads.clear()
    caplog.set_level(logging.INFO, logger="genreflow")
    frame, digests = snapshot.build(store, ok, LIBROSA)
    assert store.features_read() == [features_key("librosa-v1", t) for t in ("t1", "t2")]
    assert ("snapshot: 1 tracks of the earlier snapshot do not match its record (changed "
            "since it was built): read again from their features files") in caplog.messages
    assert "snapshot: 1 of 3 tracks taken from the earlier snapshot" in caplog.messages
    assert frame["track_id"].tolist() == ["t1"] * 3 + ["t2"] * 2 + ["t3"] * 2
    assert frame.loc[frame["track_id"] == "t3", "genre"].tolist() == ["metal", "metal"]
    assert digests == snapshot.row_digests(frame)
    pd.testing.assert_frame_equal(frame, full_build(store, ok))


@pytest.mark.parametrize(("pointer", "message"), [
    (None, "snapshot: no earlier snapshot to start from"),
    (b"{not json", "snapshot: the earlier snapshot cannot be read (Expecting property name "
     "enclosed in double quotes: line 1 column 2 (char 1)); reading every features file"),
    (b"{}", "snapshot: the earlier snapshot cannot be read ('snapshot_key'); reading every "
     "features file"),
    (b"[]", "snapshot: the earlier snapshot cannot be read (list indices must be integers or "
     "slices, not str); reading every features file"),
    (b'{"snapshot_key": "snapshots/gone.parquet"}',
     "snapshot {gone} has no record of what it was built from: not trusted"),
], ids=["missing", "not-json", "no-key", "a-list", "gone"])
def test_without_a_usable_earlier_snapshot_every_features_file_is_read(tmp_path, caplog,
                                                                        pointer, message):
    store = CountingStore(tmp_path)
    write_features(store, "t1", "jazz", 2, seed=1)
    write_features(store, "t2", "metal", 1, seed=2)
    ok = catalog_rows(("t1", "jazz", 2), ("t2", "metal", 1))
    snapshot.assemble(store, catalog_rows(("t1", "jazz", 2)), LIBROSA)
    if pointer is None:
        store.delete(layout.SNAPSHOT_POINTER)
    else:
        store.write_bytes(layout.SNAPSHOT_POINTER, pointer)
    store.reads.clear()
    caplog.set_level(logging.INFO, logger="genreflow")
    frame, _ = snapshot.build(store, ok, LIBROSA)
    assert message.format(gone=store.location("snapshots/gone.parquet")) in caplog.messages
    assert "taken from the earlier snapshot" not in caplog.text
    assert store.features_read() == [features_key("librosa-v1", t) for t in ("t1", "t2")]
    assert frame["track_id"].tolist() == ["t1", "t1", "t2"]


def test_a_track_joins_the_columns_of_every_feature_set(tmp_path):
    store = LocalStore(tmp_path)
    files = write_features(store, "t1", "jazz", 2, seed=1, sets=BOTH)
    frame, digests = snapshot.build(store, catalog_rows(("t1", "jazz", 2)), BOTH)
    assert list(frame.columns) == ["track_id", "genre", "segment",
                                   *SETS["librosa"].columns, *SETS["musicnn"].columns]
    np.testing.assert_array_equal(frame[SETS["musicnn"].columns].to_numpy(),
                                  files["musicnn-v1"][SETS["musicnn"].columns].to_numpy())
    assert digests == snapshot.row_digests(frame)


def test_feature_sets_of_other_segments_are_refused_not_joined(tmp_path):
    store = LocalStore(tmp_path)
    write_features(store, "t1", "jazz", 2, seed=1, sets=BOTH)
    write_features(store, "t1", "jazz", 3, seed=1, sets=resolve(["musicnn"]))
    with pytest.raises(PermanentStoreError) as raised:
        snapshot.build(store, catalog_rows(("t1", "jazz", 2)), BOTH)
    assert str(raised.value) == \
        "features of t1: musicnn-v1 has other segments than librosa-v1"


def test_a_read_that_fails_for_a_moment_is_retried_and_named(tmp_path, caplog):
    store = BlinkingStore(tmp_path)
    write_features(store, "t1", "jazz", 2, seed=1)
    write_features(store, "t2", "metal", 1, seed=2)
    first = catalog_rows(("t1", "jazz", 2))
    caplog.set_level(logging.INFO, logger="genreflow")
    key = snapshot.assemble(store, first, LIBROSA)[0]
    store.failed.clear()
    snapshot.assemble(store, first, LIBROSA)  # reused: its record and rows are read
    store.failed.clear()
    ok = catalog_rows(("t1", "jazz", 2), ("t2", "metal", 1))
    frame = snapshot.assemble(store, ok, LIBROSA)[2]  # t1 from the last snapshot
    retried = {m.split(": connection reset")[0] for m in caplog.messages
               if ": connection reset; attempt 1 of 4" in m}
    assert retried == {"read the snapshot pointer", f"read {features_key('librosa-v1', 't1')}",
                       f"read {features_key('librosa-v1', 't2')}", f"read {key}",
                       f"read {layout.snapshot_record_key(key)}"}
    assert "snapshot: 1 of 2 tracks taken from the earlier snapshot" in caplog.messages
    pd.testing.assert_frame_equal(frame, full_build(LocalStore(tmp_path), ok))
