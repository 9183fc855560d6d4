"""The catalog table: one row per key, newest record wins, first_seen survives rewrites."""

from __future__ import annotations

from genreflow import catalog
from genreflow.storage import LocalStore


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
