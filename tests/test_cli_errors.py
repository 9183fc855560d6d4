"""The ``genreflow`` command ends in one ``genreflow: error: ...`` line, never a traceback,
for bad configuration, a bad catalog, an unusable output path, a closed pipe and a
version that holds no model (issue 19 item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_registry
from conftest import segment_table
from test_cli import run

from genreflow import catalog, registry
from genreflow.storage import open_store

GENREFLOW = Path(sys.executable).parent / "genreflow"
models = test_registry.models  # two fitted pipelines (a module-scoped fixture)


def one_line(code: int, err: str, *words: str) -> None:
    assert code == 1 and err.count("\n") == 1 and err.startswith("genreflow: error: "), err
    assert all(word in err for word in words), err


def trained_store(root: Path):
    """A store with one version whose training snapshot and catalog rows exist."""
    store = open_store(str(root))
    snapshot = segment_table(("classical", "metal"), tracks=2)
    store.write_frame("snapshots/s.parquet", snapshot)
    records = [dict.fromkeys(catalog.COLUMNS, "") | {
        "key": f"inbox:{genre}/{track}.wav", "source": "inbox", "genre": genre,
        "track_id": track, "status": catalog.OK, "n_segments": 5}
        for track, genre in snapshot.groupby("track_id")["genre"].first().items()]
    catalog.record_all(store, records)
    version = registry.new_version()
    registry.publish(store, version, {registry.MODEL_FILE: registry.dump_model({"not": 1})},
                     {"snapshot_key": "snapshots/s.parquet"}, promote=True)
    return store, version


def test_endpoint_without_a_scheme(monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "localhost:9000")
    code, _, err = run(capsys, "models", "--store", "s3://bucket/store")
    one_line(code, err, "BadStoreUri", "AWS_ENDPOINT_URL", "http://")


def test_garbage_catalog_under_licences(tmp_path, capsys):
    store, _ = trained_store(tmp_path / "store")
    store.write_bytes(catalog.CATALOG_KEY, b"not parquet at all")
    code, _, err = run(capsys, "licences", "--store", store.uri)
    one_line(code, err, "CatalogError", catalog.CATALOG_KEY)


@pytest.mark.parametrize("variable, value, words", [
    ("GENREFLOW_WORKERS", "abc", ("ConfigError", "GENREFLOW_WORKERS", "'abc'")),
    ("GENREFLOW_CONFIG", "bad.toml", ("ConfigError", "bad.toml", "not valid TOML")),
    ("GENREFLOW_CONFIG", "missing.toml", ("ConfigError", "missing.toml")),
])
def test_bad_settings(tmp_path, monkeypatch, capsys, variable, value, words):
    (tmp_path / "bad.toml").write_text("genres = [classical\n")
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "genreflow.toml").write_text('genres = ["classical", "metal"]\n')
    monkeypatch.setenv("GENREFLOW_HOME", str(tmp_path))
    monkeypatch.setenv(variable, value)
    code, _, err = run(capsys, "models")  # the store comes from the settings
    one_line(code, err, *words)


def test_valid_table_output_checked_before_any_extraction(tmp_path, demo_corpus, capsys,
                                                          caplog, monkeypatch, genres_config):
    monkeypatch.setenv("GENREFLOW_CONFIG", str(genres_config))
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    for output in (tmp_path, a_file / "valid.csv"):
        code, _, err = run(capsys, "valid-table", str(demo_corpus["inbox"]), "-o", str(output))
        one_line(code, err, str(output))
    assert "features:" not in caplog.text  # refused before extracting a single song
    assert a_file.read_text() == "mine"


def test_closed_pipe_is_no_traceback(tmp_path):
    store, version = trained_store(tmp_path / "store")
    read, write = os.pipe()
    os.close(read)  # `genreflow licences | head -1`, once head has exited
    done = subprocess.run([str(GENREFLOW), "licences", "--store", store.uri], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141  # as a command killed by SIGPIPE


def test_rollback_refuses_a_version_without_a_fitted_model(tmp_path, models, capsys):
    store = open_store(str(tmp_path / "store"))
    good = test_registry.publish_model(store, models[0])
    _, not_a_model = trained_store(tmp_path / "store")  # its model.skops is a dict
    assert run(capsys, "rollback", good, "--store", store.uri)[0] == 0
    code, _, err = run(capsys, "rollback", not_a_model, "--store", store.uri)
    one_line(code, err, "NotAModel", "dict", not_a_model)
    assert registry.read_latest(store)["version"] == good


def test_pull_refuses_a_non_empty_destination(tmp_path, models, capsys):
    """Issue 19 item 7: the user's own model.skops is not replaced unless asked."""
    store = open_store(str(tmp_path / "store"))
    version = test_registry.publish_model(store, models[0])
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "model.skops").write_bytes(b"my own model")
    (dest / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "pull", "--store", store.uri, "--dest", str(dest))
    one_line(code, err, "BadArgument", "not empty", "--replace")
    assert (dest / "model.skops").read_bytes() == b"my own model"
    assert sorted(p.name for p in dest.iterdir()) == ["model.skops", "notes.txt"]

    code, out, _ = run(capsys, "pull", "--store", store.uri, "--dest", str(dest), "--replace")
    assert code == 0 and version in out
    published = store.read_bytes(registry.version_key(version, registry.MODEL_FILE))
    assert (dest / "model.skops").read_bytes() == published
    assert (dest / "notes.txt").read_text() == "mine"  # only the version's files replaced


def test_pull_into_a_file_or_under_one(tmp_path, models, capsys):
    store = open_store(str(tmp_path / "store"))
    test_registry.publish_model(store, models[0])
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    for dest in (a_file, a_file / "sub"):
        for extra in ([], ["--replace"]):
            code, _, err = run(capsys, "pull", "--store", store.uri, "--dest", str(dest),
                               *extra)
            one_line(code, err, "BadArgument", str(a_file))
    assert a_file.read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, "pull", "--store", store.uri, "--dest", str(empty))[0] == 0


def test_valid_table_of_a_missing_folder(tmp_path, capsys, monkeypatch, genres_config):
    monkeypatch.setenv("GENREFLOW_CONFIG", str(genres_config))
    code, _, err = run(capsys, "valid-table", str(tmp_path / "nope"), "-o",
                       str(tmp_path / "valid.csv"))
    one_line(code, err, "BadArgument", f"{tmp_path / 'nope'} does not exist")
