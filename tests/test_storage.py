"""Contract of the Store interface, run against both backends: a local folder and S3
spoken over HTTP to the moto server."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genreflow.errors import PermanentError
from genreflow.storage import (
    AlreadyExists,
    BadStoreUri,
    KeyNotFound,
    LocalStore,
    PermanentStoreError,
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


def every_object(store) -> list[str]:
    """Every file or object the store holds, hidden ones included: list_keys skips
    names starting with "." (as the local temp and lock files do), so it cannot show
    one that leaked."""
    if isinstance(store, LocalStore):
        return sorted(p.relative_to(store.root).as_posix()
                      for p in store.root.rglob("*") if p.is_file())
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=f"{store.prefix}/")
    return sorted(obj["Key"].removeprefix(f"{store.prefix}/")
                  for page in pages for obj in page.get("Contents", []))


def test_conditional_writes_leave_no_stray_files(store):
    """Won and lost writes of every mode leave no temp or lock file behind."""
    store.write_bytes("q.json", b"1")
    _, etag = store.read_bytes_with_etag("q.json")
    store.write_bytes("q.json", b"2", if_match=etag)
    with pytest.raises(WriteConflict):
        store.write_bytes("q.json", b"3", if_match=etag)
    with pytest.raises(AlreadyExists):
        store.write_bytes("q.json", b"4", overwrite=False)
    with pytest.raises(WriteConflict):
        store.write_bytes("gone.json", b"5", if_match=etag)
    store.write_bytes("r.json", b"6", overwrite=False)
    assert every_object(store) == ["q.json", "r.json"]
    assert store.read_bytes("q.json") == b"2"


def test_local_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        LocalStore(tmp_path).read_bytes("../outside")


def test_s3_server_down_is_a_store_error(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    store = S3Store("bucket")
    with pytest.raises(StoreError, match=re.escape(
            "S3 get s3://bucket/k failed: Could not connect to the endpoint URL: "
            '"http://127.0.0.1:9/bucket/k"')) as failure:
        store.read_bytes("k")
    assert not isinstance(failure.value, PermanentError)


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
    assert every_object(store) == ["counter.json"]


@pytest.fixture
def s3_error_server(monkeypatch):
    """A real HTTP server on loopback answering every S3 request with one error, as S3
    does for bad keys or a 503; counts the requests (retries included)."""
    reply, hits = {"status": 403, "code": "InvalidAccessKeyId"}, []

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            hits.append(self.command)
            body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{reply["code"]}'
                    "</Code><Message>injected</Message></Error>").encode()
            self.send_response(reply["status"])
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_DELETE = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    yield reply, hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, code", [
    (403, "InvalidAccessKeyId"), (403, "SignatureDoesNotMatch"), (403, "AccessDenied"),
    (404, "NoSuchBucket"),
])
def test_permanent_s3_errors_fail_at_once(s3_error_server, status, code):
    reply, hits = s3_error_server
    reply.update(status=status, code=code)
    store = S3Store("bucket", "store")
    with pytest.raises(PermanentStoreError, match=code) as failure:
        store.read_bytes("valid.csv")
    assert isinstance(failure.value, PermanentError)
    with pytest.raises(PermanentStoreError):
        store.write_bytes("k", b"x")
    assert hits == ["GET", "PUT"]  # one request each: nothing retried


def test_transient_s3_errors_stay_retryable(s3_error_server, monkeypatch):
    reply, hits = s3_error_server
    reply.update(status=503, code="SlowDown")
    with pytest.raises(StoreError, match="SlowDown") as failure:
        S3Store("bucket").read_bytes("k")
    assert not isinstance(failure.value, PermanentError)
    assert len(hits) > 1  # the client retried (bounded), and Airflow will retry the task
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # connection refused
    with pytest.raises(StoreError) as failure:
        S3Store("bucket").read_bytes("k")
    assert not isinstance(failure.value, PermanentError)


def test_missing_bucket_on_moto_is_permanent(s3_bucket):
    with pytest.raises(PermanentStoreError, match="NoSuchBucket"):
        open_store("s3://no-such-bucket-genreflow/store").read_bytes("latest.json")


def test_bad_uris_are_one_permanent_error(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for uri in ("", "   ", "s3://", "s3:///prefix", "http://example.com/store", str(a_file),
                a_file.as_uri()):
        with pytest.raises(BadStoreUri) as failure:
            open_store(uri)
        assert isinstance(failure.value, PermanentError), uri
    for uri in ("s3://bucket", "", "http://x/valid.csv"):
        with pytest.raises(BadStoreUri):
            split_uri(uri)
    with pytest.raises(BadStoreUri, match="does not exist"):
        open_store(str(tmp_path / "unset" / "inbox"), must_exist=True)
    under_a_file = open_store(str(a_file / "store"))
    with pytest.raises(PermanentStoreError, match="cannot write"):
        under_a_file.write_bytes("k", b"x")
    assert a_file.read_text() == "x"


def test_bad_uris_say_what_a_store_uri_is(tmp_path):
    for uri, message in (
        ("", "empty store URI: set the variable or param to a path or s3://"),
        (" ", "empty store URI: set the variable or param to a path or s3://"),
        ("s3://", "'s3://': an S3 URI needs a bucket (s3://bucket/prefix)"),
        ("http://x/y", "unsupported store URI 'http://x/y': use a path, file:// or s3://"),
        (str(tmp_path / "unset"),
         f"{tmp_path / 'unset'} does not exist (is a variable in the path unset?)"),
    ):
        with pytest.raises(BadStoreUri) as failure:
            open_store(uri, must_exist=True)
        assert str(failure.value) == message


def test_if_match_cannot_go_with_overwrite_false(store):
    with pytest.raises(ValueError) as failure:
        store.write_bytes("k", b"x", overwrite=False, if_match="etag")
    assert str(failure.value) == \
        "if_match replaces an existing object; it cannot go with overwrite=False"
    assert not store.exists("k")


def test_a_store_at_the_bucket_root_names_keys_without_a_double_slash():
    for uri in ("s3://bucket", "s3://bucket/"):
        store = open_store(uri)
        assert (store.bucket, store.prefix, store.uri) == ("bucket", "", "s3://bucket")
        assert store.location("a/k") == "s3://bucket/a/k"
    assert S3Store("bucket", "/p/", client=object()).uri == "s3://bucket/p"


def test_a_local_path_with_a_hash_is_a_folder_not_a_url(tmp_path):
    store = open_store(str(tmp_path / "a#1" / "store"))
    assert store.root == (tmp_path / "a#1" / "store").resolve()


def test_an_unreadable_local_file_is_a_permanent_error(tmp_path, monkeypatch):
    """Tests run as root, who may read anything: the permission error is injected."""
    import errno
    from pathlib import Path

    store = LocalStore(tmp_path)
    store.write_bytes("k.bin", b"x")
    real_read = Path.read_bytes

    def denied(path):
        if path.name == "k.bin":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(PermanentStoreError) as failure:
        store.read_bytes("k.bin")
    assert str(failure.value) == f"cannot read {store.location('k.bin')}: permission denied"
    assert isinstance(failure.value.__cause__, PermissionError)


def test_s3_without_credentials_is_permanent_and_names_the_key():
    """A client whose credential chain is empty, as on a machine with none configured."""
    import botocore.session
    from botocore.credentials import CredentialResolver

    session = botocore.session.get_session()
    session.register_component("credential_provider", CredentialResolver([]))
    client = session.create_client("s3", endpoint_url="http://127.0.0.1:9",
                                   region_name="us-east-1")
    with pytest.raises(PermanentStoreError) as failure:
        S3Store("bucket", "store", client=client).read_bytes("k")
    assert str(failure.value) == "S3 get s3://bucket/store/k: Unable to locate credentials"


def test_stamps_change_with_the_content_and_cover_every_key(store):
    """Local: size and mtime in ns; S3: size and ETag (the MD5 of a single-part upload)."""
    import hashlib
    import time

    assert store.stamp("a/k") is None
    store.write_bytes("a/k", b"one")
    store.write_bytes("a/j", b"x")
    first = store.stamp("a/k")
    if isinstance(store, S3Store):
        assert first.tag == f"3-{hashlib.md5(b'one').hexdigest()}"
        assert abs(first.modified - time.time()) < 60
    else:
        stat = (store.root / "a" / "k").stat()
        assert (first.tag, first.modified) == (f"3-{stat.st_mtime_ns}", stat.st_mtime)
    assert store.list_stamps("a/") == {"a/j": store.stamp("a/j"), "a/k": first}
    store.write_bytes("top", b"t")
    assert store.list_stamps() == {"a/j": store.stamp("a/j"), "a/k": first,  # the inbox's call
                                   "top": store.stamp("top")}
    store.write_bytes("a/k", b"four")
    assert store.stamp("a/k").tag.startswith("4-")


def test_an_endpoint_without_a_scheme_is_a_bad_uri(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "minio:9000")
    with pytest.raises(BadStoreUri) as failure:
        S3Store("bucket")
    assert str(failure.value).startswith("AWS_ENDPOINT_URL='minio:9000': ")
    assert str(failure.value).endswith(" (give the scheme: http://host:port or https://host)")


def test_a_store_without_stamps_says_so():
    from test_registry import HookedStore

    store = HookedStore(LocalStore("unused"), lambda key: None)
    for call in (store.list_stamps, lambda: store.stamp("k")):
        with pytest.raises(NotImplementedError) as failure:
            call()
        assert str(failure.value) == "HookedStore keeps no stamps"


def test_opening_and_reading_create_no_folder(tmp_path):
    root = tmp_path / "nowhere" / "store"
    store = open_store(str(root))
    assert store.list_keys() == [] and not store.exists("k")
    with pytest.raises(KeyNotFound):
        store.read_bytes("latest.json")
    split_uri(str(tmp_path / "missing" / "valid.csv"))
    assert list(tmp_path.iterdir()) == []
    store.write_bytes("a/k", b"x")  # the first write creates what it needs
    assert (root / "a" / "k").read_bytes() == b"x"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_local_files_honour_the_umask(tmp_path, umask, mode):
    """Issue 19 item 9: another user or a worker under another uid can read the registry
    when the umask lets it (mkstemp made every file 0600)."""
    import os

    old = os.umask(umask)
    try:
        LocalStore(tmp_path).write_bytes("models/v/model.skops", b"x")
        LocalStore(tmp_path).write_bytes("latest.json", b"{}", overwrite=False)
    finally:
        os.umask(old)
    for path in (tmp_path / "models/v/model.skops", tmp_path / "latest.json"):
        assert path.stat().st_mode & 0o777 == mode


def test_s3_folder_markers_are_no_keys(s3_bucket):
    """A console's "create folder" leaves a 0-byte ``<prefix>/`` object; it is no file."""
    bucket, _ = s3_bucket
    store = open_store(f"s3://{bucket}/inbox")
    store.write_bytes("metal/a.wav", b"audio")
    store.client.put_object(Bucket=bucket, Key="inbox/metal/d.ogg/", Body=b"")
    store.client.put_object(Bucket=bucket, Key="inbox/metal/", Body=b"")
    assert store.list_keys() == ["metal/a.wav"]


def test_json_is_indented_sorted_and_stringifies_the_rest(store):
    """Manifests and pointers are diffable text: two-space indent, sorted keys, dates as
    strings; write_json and write_frame pass ``overwrite`` on."""
    from datetime import date

    import pandas as pd

    store.write_json("j.json", {"b": 1, "a": date(2026, 1, 2)})
    assert store.read_bytes("j.json") == b'{\n  "a": "2026-01-02",\n  "b": 1\n}'
    with pytest.raises(AlreadyExists):
        store.write_json("j.json", {}, overwrite=False)
    frame = pd.DataFrame({"x": [1, 2]}, index=[5, 6])  # the index is not stored
    store.write_frame("f.parquet", frame, overwrite=False)
    with pytest.raises(AlreadyExists):
        store.write_frame("f.parquet", frame, overwrite=False)
    store.write_frame("f.parquet", frame.iloc[:1])
    assert store.read_frame("f.parquet").equals(frame.iloc[:1].reset_index(drop=True))


def test_errors_name_the_key_they_concern(store):
    store.write_bytes("k.bin", b"1")
    _, etag = store.read_bytes_with_etag("k.bin")
    store.write_bytes("k.bin", b"2")
    with pytest.raises(WriteConflict, match=re.escape(f"{store.location('k.bin')} changed")):
        store.write_bytes("k.bin", b"3", if_match=etag)
    with pytest.raises(AlreadyExists, match=re.escape(f"{store.location('k.bin')} already")):
        store.write_bytes("k.bin", b"3", overwrite=False)
    with pytest.raises(KeyNotFound, match=re.escape(f"{store.location('nope')} does not")):
        store.read_bytes("nope")
    store.delete("nope")  # deleting what is not there is no error


def test_prefix_listing_and_a_store_at_the_bucket_root(store_uri, tmp_path):
    """A prefix may end inside a name; a store at the bucket (or folder) root lists
    whole keys."""
    store = open_store(store_uri)
    store.write_bytes("a/two.json", b"2")
    store.write_bytes("a/b/one.bin", b"1")
    assert store.list_keys("a/tw") == ["a/two.json"]
    assert store.list_keys("a/b") == ["a/b/one.bin"]
    root = open_store(store_uri.rsplit("/", 1)[0] if store_uri.startswith("s3") else
                      str(tmp_path))
    assert root.list_keys("store/a/tw") + root.list_keys("registry/a/tw") == [
        f"{store_uri.rsplit('/', 1)[1]}/a/two.json"]


def test_local_listing_hides_dot_files_only(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes("a/k.bin", b"1")
    (tmp_path / "a" / ".k.bin.lock").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x").write_bytes(b"")
    assert store.list_keys() == ["a/k.bin"]


def test_a_transient_local_write_error_stays_retryable(tmp_path, monkeypatch):
    import errno
    import os

    real_open = os.open

    def disk_full(path, *args, **kwargs):
        if "k.bin" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", disk_full)
    with pytest.raises(StoreError, match=r"cannot write .*k\.bin: No space left on device$") \
            as failure:
        LocalStore(tmp_path).write_bytes("k.bin", b"x")
    assert not isinstance(failure.value, PermanentError)


def test_split_uri_of_each_kind(tmp_path):
    store, key = split_uri("s3://bucket/Xa/b/valid.csv")
    assert isinstance(store, S3Store) and key == "valid.csv"
    assert (store.bucket, store.prefix, store.uri) == ("bucket", "Xa/b", "s3://bucket/Xa/b")
    store, key = split_uri(str(tmp_path / "a#1" / "valid.csv"))  # a path, not a URL
    assert key == "valid.csv" and store.root == (tmp_path / "a#1").resolve()
    store, key = split_uri((tmp_path / "v" / "valid.csv").as_uri())
    assert isinstance(store, LocalStore) and key == "valid.csv"
    assert store.root == (tmp_path / "v").resolve()
    for folder_not_file in ("s3:///prefix/valid.csv", "s3://bucket/folder/"):
        with pytest.raises(BadStoreUri, match="an S3 file URI is s3://bucket/prefix/name"):
            split_uri(folder_not_file)
    with pytest.raises(BadStoreUri, match="is not a file path, file:// or s3:// URI"):
        split_uri("ftp://host/valid.csv")


def test_s3_errors_name_the_operation_and_key(s3_error_server):
    reply, _ = s3_error_server
    reply.update(status=403, code="AccessDenied")
    store = S3Store("bucket", "store")
    for call, what in ((lambda: store.exists("k"), "head"), (lambda: store.delete("k"), "delete"),
                       (lambda: store.read_bytes_with_etag("k"), "get")):
        with pytest.raises(PermanentStoreError, match=f"^S3 {what} s3://bucket/store/k failed"):
            call()
    with pytest.raises(PermanentStoreError, match="^S3 list s3://bucket/store/p/ failed"):
        store.list_keys("p/")


def test_a_failing_s3_stamp_names_the_operation_and_key(s3_error_server):
    reply, _ = s3_error_server
    reply.update(status=403, code="AccessDenied")
    with pytest.raises(PermanentStoreError, match="^S3 head s3://bucket/store/k failed"):
        S3Store("bucket", "store").stamp("k")


def test_s3_client_is_bounded_and_configured_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    client = S3Store("bucket").client
    config = client.meta.config
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "us-east-1"
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}  # 3 retries
    assert (config.connect_timeout, config.read_timeout) == (5, 60)
    assert config.s3 == {"addressing_style": "path"}
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    client = S3Store("bucket").client
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"


@pytest.mark.parametrize("status, code, error", [
    (404, "NoSuchKey", KeyNotFound), (404, "NotFound", KeyNotFound),
    (412, "PreconditionFailed", AlreadyExists), (412, "412", AlreadyExists),
    (409, "ConditionalRequestConflict", WriteConflict),
    (400, "BadDigest", StoreError),
])
def test_s3_error_codes_map_to_store_errors(s3_error_server, status, code, error):
    reply, _ = s3_error_server
    reply.update(status=status, code=code)
    with pytest.raises(error, match="s3://bucket/k") as failure:
        S3Store("bucket").write_bytes("k", b"x", overwrite=False)
    assert type(failure.value) is error and not isinstance(failure.value, PermanentError)
    if error is StoreError:
        for mode in ({}, {"if_match": "etag"}):
            with pytest.raises(StoreError, match="^S3 put s3://bucket/k failed"):
                S3Store("bucket").write_bytes("k", b"x", **mode)



def test_only_a_local_key_can_escape(tmp_path):
    """S3 keys are names, never paths: nothing escapes a bucket prefix."""
    assert not S3Store("bucket", "p", client=object()).escapes("../x")
    assert LocalStore(tmp_path).escapes("../x") and not LocalStore(tmp_path).escapes("a/../b")


def test_a_local_write_goes_through_a_hidden_temp_file_beside_the_key(tmp_path, monkeypatch):
    """A listing during a write never shows a half-written key: the temp file is a
    dot-file in the key's own folder (same filesystem, so the rename is atomic)."""
    import os

    renamed, replace = [], os.replace
    monkeypatch.setattr("genreflow.storage.os.replace",
                        lambda src, dst: renamed.append(src) or replace(src, dst))
    LocalStore(tmp_path).write_bytes("a/k.bin", b"x")
    [temp] = renamed
    assert os.path.dirname(temp) == str(tmp_path / "a")
    assert os.path.basename(temp).startswith(".k.bin.")


def test_a_file_is_no_store(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadStoreUri, match="f is a file, not a folder: it cannot be a store"):
        LocalStore(tmp_path / "f")
