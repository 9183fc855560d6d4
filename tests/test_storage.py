"""Contract of the Store interface, run against both backends: a local folder and S3
spoken over HTTP to the moto server."""

from __future__ import annotations

import json
import threading

import pytest

from genreflow.storage import (
    AlreadyExists,
    KeyNotFound,
    LocalStore,
    S3Store,
    StoreError,
    WriteConflict,
    open_store,
    split_uri,
)


@pytest.fixture
def store(store_uri):
    return open_store(store_uri)


def test_round_trip_and_listing(store):
    store.write_bytes("a/b/one.bin", b"1")
    store.write_json("a/two.json", {"x": 2})
    store.write_bytes("c.bin", b"3")
    assert store.read_bytes("a/b/one.bin") == b"1"
    assert store.read_json("a/two.json") == {"x": 2}
    assert store.list_keys("a/") == ["a/b/one.bin", "a/two.json"]
    assert store.list_keys() == ["a/b/one.bin", "a/two.json", "c.bin"]
    assert store.exists("c.bin") and not store.exists("nope.bin")
    store.delete("c.bin")
    assert not store.exists("c.bin")
    assert store.location("a/two.json") == f"{store.uri}/a/two.json"


def test_missing_key_is_key_not_found(store):
    with pytest.raises(KeyNotFound, match="nope.bin"):
        store.read_bytes("nope.bin")
    with pytest.raises(KeyNotFound):
        store.read_bytes_with_etag("nope.bin")


def test_overwrite_false_refuses_an_existing_key(store):
    store.write_bytes("k.bin", b"first", overwrite=False)
    with pytest.raises(AlreadyExists, match="already exists"):
        store.write_bytes("k.bin", b"second", overwrite=False)
    assert store.read_bytes("k.bin") == b"first"
    store.write_bytes("k.bin", b"third")
    assert store.read_bytes("k.bin") == b"third"


def test_if_match_is_a_compare_and_swap(store):
    store.write_bytes("p.json", b"v1")
    data, etag = store.read_bytes_with_etag("p.json")
    assert data == b"v1"
    store.write_bytes("p.json", b"v2", if_match=etag)
    assert store.read_bytes("p.json") == b"v2"
    with pytest.raises(WriteConflict, match="changed since it was read"):
        store.write_bytes("p.json", b"stale writer", if_match=etag)
    assert store.read_bytes("p.json") == b"v2"
    store.delete("p.json")
    with pytest.raises(WriteConflict):
        store.write_bytes("p.json", b"gone", if_match=etag)
    assert not store.exists("p.json")
    with pytest.raises(ValueError):
        store.write_bytes("p.json", b"x", overwrite=False, if_match=etag)


def test_conditional_writes_leave_no_stray_keys(store):
    store.write_bytes("q.json", b"1")
    _, etag = store.read_bytes_with_etag("q.json")
    store.write_bytes("q.json", b"2", if_match=etag)
    with pytest.raises(WriteConflict):
        store.write_bytes("q.json", b"3", if_match=etag)
    assert store.list_keys() == ["q.json"]


def test_local_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        LocalStore(tmp_path).read_bytes("../outside")


def test_s3_server_down_is_a_store_error(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    store = S3Store("bucket")
    with pytest.raises(StoreError, match="S3 get"):
        store.read_bytes("k")


def test_uris(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(tmp_path.as_uri()), LocalStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_store("ftp://x/y")
    store, key = split_uri(str(tmp_path / "valid.csv"))
    assert key == "valid.csv" and store.root == tmp_path.resolve()


def test_local_compare_and_swap_counts_every_win(tmp_path):
    """Threads increment a counter by read-ETag + conditional write: no lost update."""
    store = LocalStore(tmp_path)
    store.write_json("counter.json", {"n": 0})
    wins, conflicts = [], []

    def bump():
        for _ in range(20):
            data, etag = store.read_bytes_with_etag("counter.json")
            value = json.loads(data)["n"] + 1
            try:
                store.write_bytes("counter.json", json.dumps({"n": value}).encode(),
                                  if_match=etag)
                wins.append(value)
            except WriteConflict:
                conflicts.append(value)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.read_json("counter.json")["n"] == len(wins) == 80 - len(conflicts)
    assert sorted(wins) == list(range(1, len(wins) + 1))
    assert store.list_keys() == ["counter.json"]
