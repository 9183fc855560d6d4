"""The catalog table: one row per key, newest record wins, first_seen survives rewrites,
and concurrent writers lose nothing."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import re

import pytest

from genreflow import catalog
from genreflow.config import Settings
from genreflow.storage import LocalStore, open_store
from genreflow.tasks import ingest


def record(key: str, status: str, first_seen: str, run_id: str, reason: str = "") -> dict:
    row = dict.fromkeys(catalog.COLUMNS, "")
    source, _, source_id = key.partition(":")
    row.update(key=key, source=source, source_id=source_id, genre="metal", n_segments=0,
               status=status, reason=reason, first_seen=first_seen, run_id=run_id)
    return row


def test_empty_catalog_has_every_column(tmp_path):
    table = catalog.read_catalog(LocalStore(tmp_path))
    assert list(table.columns) == catalog.COLUMNS
    assert table.empty


def test_an_unreadable_catalog_says_how_to_restore_it_and_is_not_overwritten(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes(catalog.CATALOG_KEY, b"not parquet")
    for call in (lambda: catalog.read_catalog(store),
                 lambda: catalog.record_all(store, [record("inbox:metal/a.wav", catalog.OK,
                                                           "t1", "run1")])):
        with pytest.raises(catalog.CatalogError) as refused:
            call()
        message = str(refused.value)
        assert message.startswith(f"{store.location(catalog.CATALOG_KEY)} is not a readable "
                                  "catalog (")
        assert message.endswith("); restore it (a backup, S3 versioning), or delete it to "
                                "record every track again (stored features are reused)")
    assert store.read_bytes(catalog.CATALOG_KEY) == b"not parquet"


def test_rewrite_keeps_first_seen_and_takes_the_rest_from_the_new_record(tmp_path):
    store = LocalStore(tmp_path)
    catalog.record_all(store, [
        record("inbox:metal/a.wav", catalog.FAILED, "2026-01-01T00:00:00+00:00", "run1", "bad"),
        record("inbox:metal/b.wav", catalog.OK, "2026-01-01T00:00:00+00:00", "run1"),
    ])
    catalog.record_all(store, [
        record("inbox:metal/a.wav", catalog.OK, "2026-02-01T00:00:00+00:00", "run2"),
        record("inbox:metal/c.wav", catalog.OK, "2026-02-01T00:00:00+00:00", "run2"),
    ])
    table = catalog.read_catalog(store).set_index("key")
    assert len(table) == 3
    retried = table.loc["inbox:metal/a.wav"]
    assert (retried["status"], retried["reason"], retried["run_id"]) == (catalog.OK, "", "run2")
    assert retried["first_seen"] == "2026-01-01T00:00:00+00:00"
    assert table.loc["inbox:metal/c.wav", "first_seen"] == "2026-02-01T00:00:00+00:00"


def test_no_records_writes_nothing(tmp_path):
    store = LocalStore(tmp_path)
    assert catalog.record_all(store, []).empty
    assert not store.exists(catalog.CATALOG_KEY)


def test_a_write_that_lost_the_race_is_merged_again(tmp_path, caplog):
    """Another writer lands between our read and our write: first while the catalog is
    still absent, then over an existing one; both times nothing is lost, and the log
    says so."""
    store = LocalStore(tmp_path)
    caplog.set_level(logging.INFO, logger="genreflow")
    seen: list[list[str]] = []

    def change(mine: str, theirs: str):
        def apply(table):
            seen.append(sorted(table["key"]))
            if len(seen) in (1, 3):  # the other writer gets in first
                catalog.record_all(store, [record(theirs, catalog.OK, "t0", "other")])
            return catalog.merge_records(table, [record(mine, catalog.OK, "t0", "mine")])
        return apply

    catalog.update(store, change("inbox:metal/a.wav", "inbox:metal/b.wav"))
    table = catalog.update(store, change("inbox:metal/c.wav", "inbox:metal/d.wav"))

    assert seen == [[], ["inbox:metal/b.wav"], ["inbox:metal/a.wav", "inbox:metal/b.wav"],
                    ["inbox:metal/a.wav", "inbox:metal/b.wav", "inbox:metal/d.wav"]]
    assert sorted(table["key"]) == sorted(catalog.read_catalog(store)["key"]) == [
        "inbox:metal/a.wav", "inbox:metal/b.wav", "inbox:metal/c.wav", "inbox:metal/d.wav"]
    merged = "catalog changed since it was read (attempt 1 of 20): merging again"
    assert caplog.messages.count(merged) == 2
    assert (f"catalog: 4 tracks {{'ok': 4}} -> {store.location(catalog.CATALOG_KEY)}"
            in caplog.messages)


ROUNDS, PER_ROUND = 4, 12  # per process: one ok track and 11 failed ones per round


def track_records(worker: int, round_: int) -> list[dict]:
    rows = []
    for j in range(PER_ROUND):
        row = record(f"inbox:metal/w{worker}r{round_}t{j}.wav", catalog.FAILED,
                     "2026-01-01T00:00:00+00:00", f"run{worker}", "too short")
        if j == 0:
            track_id = f"w{worker}r{round_}".ljust(16, "0")
            row.update(status=catalog.OK, reason="", track_id=track_id, sha256=track_id * 4,
                       features_key=f"features/{track_id}.parquet", n_segments=1)
        rows.append(row)
    return rows


def assemble_rounds(settings: Settings, worker: int, barrier) -> None:
    """One process: ROUNDS assembles, each started together with the other process's."""
    for round_ in range(ROUNDS):
        barrier.wait(timeout=120)
        ingest.assemble(settings, [track_records(worker, round_)], f"run{worker}")


def test_concurrent_assembles_lose_no_catalog_row(tmp_path, store_uri):
    import numpy as np

    from genreflow.dataset import track_frame
    from genreflow.features.names import FEATURE_NAMES

    store = open_store(store_uri)
    for worker, round_ in itertools.product(range(2), range(ROUNDS)):
        row = track_records(worker, round_)[0]
        features = np.full((1, len(FEATURE_NAMES)), worker + round_ / 10)
        store.write_frame(row["features_key"], track_frame(row["track_id"], "metal", features))
    settings = Settings(home=tmp_path, store=store_uri, inbox="", valid_csv="",
                        genres=("metal",), workers=1)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=assemble_rounds, args=(settings, w, barrier))
               for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [process.exitcode for process in workers] == [0, 0]

    table = catalog.read_catalog(store)
    assert len(table) == 2 * ROUNDS * PER_ROUND
    assert table["status"].value_counts().to_dict() == {
        catalog.FAILED: 2 * ROUNDS * (PER_ROUND - 1), catalog.OK: 2 * ROUNDS}
    assert {f"run{key[len('inbox:metal/w')]}" for key in table["key"]} == {"run0", "run1"}
    assert all(run == f"run{key[len('inbox:metal/w')]}" for key, run in
               zip(table["key"], table["run_id"], strict=True))


def audio_row(key: str, genre: str, status: str, first_seen: str, sha: str = "x" * 64,
              features: str = "", **fields) -> dict:
    row = record(key, status, first_seen, "run1")
    row.update(genre=genre, sha256=sha, features_key=features,
               raw_key=f"raw/{key}" if features else "", n_segments=3 if features else 0,
               **fields)
    return row


def settled(table) -> dict[str, tuple]:
    return {row["key"]: (row["status"], row["reason"], row["raw_key"], row["features_key"],
                         int(row["n_segments"])) for _, row in table.iterrows()}


def test_same_audio_under_two_genres_is_a_conflict_until_one_key_goes():
    """Both keys are kept out of training, each naming the other; once the wrong one is
    removed, the earliest remaining key is ok again with the audio's stored features and
    the others are duplicates of it. Audio without a sha256 or a status without audio
    (rejected, removed) takes no part."""
    import pandas as pd

    a, b, e = "inbox:metal/a.wav", "inbox:rock/b.wav", "inbox:metal/e.wav"
    rows = [audio_row(a, "metal", catalog.OK, "t2", features="features/x.parquet"),
            audio_row(b, "rock", catalog.OK, "t3"),
            audio_row(e, "metal", catalog.DUPLICATE, "t1", reason=f"same audio as {a}"),
            audio_row("inbox:jazz/r.wav", "jazz", catalog.REJECTED, "t1"),
            audio_row("inbox:jazz/n.wav", "jazz", catalog.OK, "t1", sha=""),
            audio_row("inbox:rock/n.wav", "rock", catalog.OK, "t1", sha=""),
            audio_row("inbox:metal/y.wav", "metal", catalog.OK, "t1", sha="y" * 64)]
    table = pd.DataFrame(rows, columns=catalog.COLUMNS)
    untouched = {k: v for k, v in settled(table).items() if k.endswith(("r.wav", "n.wav",
                                                                        "y.wav"))}
    assert catalog.settle_labels(table) == 3

    def conflict(*others: str) -> str:
        return (f"label conflict: same audio as {'; '.join(others)}; kept out of training "
                "until the wrong file is removed")

    assert settled(table) == {
        a: (catalog.CONFLICT, conflict(f"{b} (rock)", f"{e} (metal)"), f"raw/{a}",
            "features/x.parquet", 3),
        b: (catalog.CONFLICT, conflict(f"{a} (metal)", f"{e} (metal)"), "", "", 0),
        e: (catalog.CONFLICT, conflict(f"{a} (metal)", f"{b} (rock)"), "", "", 0),
        **untouched}
    assert catalog.conflicts(table) == [
        {"key": k, "genre": g, "sha256": "x" * 64, "reason": table.set_index("key").at[k,
                                                                                     "reason"]}
        for k, g in ((a, "metal"), (e, "metal"), (b, "rock"))]
    assert catalog.settle_labels(table) == 0  # settled: nothing changes twice

    table.loc[table["key"] == b, "status"] = catalog.REMOVED
    assert catalog.settle_labels(table) == 2
    assert {k: v for k, v in settled(table).items() if k in (a, e)} == {
        e: (catalog.OK, "", f"raw/{a}", "features/x.parquet", 3),
        a: (catalog.DUPLICATE, f"same audio as {e}", "", "", 0)}
    assert catalog.conflicts(table) == []
    assert catalog.settle_labels(table) == 0


def test_a_conflict_without_stored_features_stays_until_features_exist():
    import pandas as pd

    rows = [audio_row("inbox:metal/a.wav", "metal", catalog.CONFLICT, "t1", reason="old"),
            audio_row("inbox:metal/b.wav", "metal", catalog.CONFLICT, "t2", reason="old")]
    table = pd.DataFrame(rows, columns=catalog.COLUMNS)
    assert catalog.settle_labels(table) == 0
    assert list(table["status"]) == [catalog.CONFLICT, catalog.CONFLICT]


def test_settling_counts_every_audios_changes_and_skips_missing_values(caplog):
    """Changes are counted over all audios settled in one call: a new conflict (a), a
    former conflict now of one genre (b, d: also beside an ok key), an audio whose ok key
    was removed (e); an audio with an ok key and a duplicate is settled (c), even when
    the duplicate came first. A key whose sha256 or features_key is missing (NaN, as in
    rows written before the column) is no audio and no stored features."""
    import pandas as pd

    nan = float("nan")
    rows = [audio_row("inbox:metal/a1.wav", "metal", catalog.OK, "t1", sha="a" * 64),
            audio_row("inbox:rock/a2.wav", "rock", catalog.OK, "t2", sha="a" * 64),
            audio_row("inbox:metal/b1.wav", "metal", catalog.CONFLICT, "t1", sha="b" * 64,
                      reason="old"),
            audio_row("inbox:metal/b2.wav", "metal", catalog.CONFLICT, "t2", sha="b" * 64,
                      features="features/b.parquet", reason="old"),
            audio_row("inbox:metal/c1.wav", "metal", catalog.DUPLICATE, "t1", sha="c" * 64,
                      reason="same audio as inbox:metal/c2.wav"),
            audio_row("inbox:metal/c2.wav", "metal", catalog.OK, "t2", sha="c" * 64,
                      features="features/c.parquet"),
            audio_row("inbox:metal/d1.wav", "metal", catalog.CONFLICT, "t1", sha="d" * 64,
                      reason="old"),
            audio_row("inbox:metal/d2.wav", "metal", catalog.OK, "t2", sha="d" * 64,
                      features="features/d.parquet"),
            audio_row("inbox:metal/e1.wav", "metal", catalog.DUPLICATE, "t2", sha="e" * 64,
                      reason="same audio as inbox:metal/e0.wav"),
            audio_row("inbox:metal/e0.wav", "metal", catalog.REMOVED, "t1", sha="e" * 64,
                      features="features/e.parquet"),
            audio_row("inbox:jazz/n1.wav", "jazz", catalog.OK, "t1", sha=nan),
            audio_row("inbox:rock/n2.wav", "rock", catalog.OK, "t1", sha=nan)]
    table = pd.DataFrame(rows, columns=catalog.COLUMNS)
    table.loc[table["key"] == "inbox:metal/b1.wav", "features_key"] = nan
    caplog.set_level(logging.INFO, logger="genreflow")
    assert catalog.settle_labels(table) == 7
    assert (f"audio {'b' * 16} settled (conflict resolved or its ok key removed): "
            "inbox:metal/b1.wav (metal) is ok again") in caplog.messages
    statuses = dict(zip(table["key"], table["status"], strict=True))
    assert statuses == {"inbox:metal/a1.wav": catalog.CONFLICT,
                        "inbox:rock/a2.wav": catalog.CONFLICT,
                        "inbox:metal/b1.wav": catalog.OK, "inbox:metal/b2.wav": catalog.DUPLICATE,
                        "inbox:metal/c1.wav": catalog.DUPLICATE, "inbox:metal/c2.wav": catalog.OK,
                        "inbox:metal/d1.wav": catalog.OK, "inbox:metal/d2.wav": catalog.DUPLICATE,
                        "inbox:metal/e1.wav": catalog.OK, "inbox:metal/e0.wav": catalog.REMOVED,
                        "inbox:jazz/n1.wav": catalog.OK, "inbox:rock/n2.wav": catalog.OK}
    keeper = table.set_index("key").loc["inbox:metal/b1.wav"]
    assert (keeper["features_key"], keeper["raw_key"], keeper["n_segments"]) == (
        "features/b.parquet", "raw/inbox:metal/b2.wav", 3)


def test_update_starts_from_the_table_given_and_gives_up_after_cas_attempts(tmp_path):
    import pandas as pd
    import pytest

    from genreflow.storage import WriteConflict

    store = LocalStore(tmp_path)
    row = {**record("inbox:metal/a.wav", catalog.FAILED, "t1", "run1"), "n_segments": None,
           "extra": "not a column"}
    given = catalog.merge_records(catalog.read_catalog(store), [row])
    assert list(given.columns) == catalog.COLUMNS
    written = catalog.update(store, lambda table: table, known=(given, None))
    assert list(written["key"]) == ["inbox:metal/a.wav"]
    assert pd.isna(catalog.read_catalog(store).at[0, "n_segments"])

    calls = []

    def always_overtaken(table):
        calls.append(1)
        catalog.record_all(store, [record(f"inbox:metal/other{len(calls)}.wav", catalog.OK,
                                          "t", "other")])  # another writer lands first
        return catalog.merge_records(table, [record("inbox:metal/mine.wav", catalog.OK, "t",
                                                    "mine")])

    with pytest.raises(WriteConflict, match=re.escape(
            f"{store.location(catalog.CATALOG_KEY)}: still changing after "
            f"{catalog.CAS_ATTEMPTS} attempts")):
        catalog.update(store, always_overtaken)
    assert len(calls) == catalog.CAS_ATTEMPTS


def test_a_catalog_from_before_a_column_existed_reads_with_it_empty(tmp_path):
    store = LocalStore(tmp_path)
    catalog.record_all(store, [record("inbox:metal/a.wav", catalog.OK, "t1", "run1")])
    old = catalog.read_catalog(store).drop(columns=["title", "source_url"])
    catalog.write_catalog(store, old, catalog.read_versioned(store)[1])
    table = catalog.read_catalog(store)
    assert list(table["title"]) == [""] and list(table["source_url"]) == [""]
