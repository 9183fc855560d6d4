"""The registry under hostile or broken stores (issue 10), on a local folder and on S3
over HTTP (moto): forged manifest file names, a champion whose manifest is gone, a
corrupt latest.json, a version killed before promotion, an untrusted model on pull."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import test_registry
from test_cli import run
from test_registry import GENRES, HookedStore, Sneaky, publish_model

from genreflow import gate, registry
from genreflow.config import Settings
from genreflow.storage import StoreError, open_store
from genreflow.tasks import release, training

models = test_registry.models  # two fitted pipelines (a module-scoped fixture)
PAYLOAD = b"written by whoever can write to the bucket\n"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("GENREFLOW_CACHE", str(path))
    return path


def forge(store, version: str, name: str) -> None:
    """What anyone with write access to the bucket can do: list one more file in a
    version's manifest (with the right sha256), upload it, and re-point latest.json at
    the new manifest bytes, so every checksum on the chain matches."""
    key = registry.version_key(version, registry.MANIFEST_FILE)
    manifest = store.read_json(key)
    manifest["files"][name] = {"sha256": registry.sha256_hex(PAYLOAD), "bytes": len(PAYLOAD)}
    with contextlib.suppress(ValueError):  # a local store refuses keys leaving its root
        store.write_bytes(registry.version_key(version, name), PAYLOAD)
    data = registry.json_bytes(manifest)
    store.write_bytes(key, data)
    pointer = store.read_json(registry.LATEST_KEY)
    store.write_json(registry.LATEST_KEY, {**pointer, "manifest_sha256": registry.sha256_hex(data)})


def escape_names(tmp_path: Path) -> dict[str, Path]:
    """Forged name -> where it lands when joined to ``tmp_path/D/a/b/dest`` unchecked."""
    return {
        "./../../ESCAPED.txt": tmp_path / "D" / "a" / "ESCAPED.txt",
        "../" * 40 + str(tmp_path / "DEEP.txt").lstrip("/"): tmp_path / "DEEP.txt",
        str(tmp_path / "ABSOLUTE.txt"): tmp_path / "ABSOLUTE.txt",
    }


@pytest.mark.parametrize("which", [0, 1, 2], ids=["dot-dot", "many-dot-dot", "absolute"])
def test_pull_refuses_manifest_names_that_leave_dest(store_uri, models, tmp_path, cache,
                                                     capsys, which):
    store = open_store(store_uri)
    version = publish_model(store, models[0])
    name, target = list(escape_names(tmp_path).items())[which]
    forge(store, version, name)
    dest = tmp_path / "D" / "a" / "b" / "dest"

    code, out, err = run(capsys, "pull", "--store", store_uri, "--dest", str(dest))
    assert code == 1, out
    assert err.count("\n") == 1 and "TamperedFile" in err and "unsafe file name" in err, err
    assert not target.exists() and not dest.exists()
    code, _, err = run(capsys, "pull", "--store", store_uri, "--version", version)
    assert code == 1 and "unsafe file name" in err and not target.exists()
    assert not cache.exists()

    with pytest.raises(registry.TamperedFile, match="unsafe file name"):
        registry.resolve(store)
    manifest = store.read_json(registry.version_key(version, registry.MANIFEST_FILE))
    with pytest.raises(registry.TamperedFile, match="unsafe file name"):
        registry.verify_files(store, version, manifest)
    row = registry.version_summaries(store)[0]
    assert "unsafe file name" in row["error"]
    champion = registry.read_champion(store)  # what the DAG's has_new_data and gate see
    assert champion.manifest is None and "unsafe file name" in champion.problem


def test_registry_page_shows_a_forged_version_as_broken(tmp_path, models):
    from fastapi.testclient import TestClient

    from genreflow.registry_view import create_app

    store = open_store(str(tmp_path / "store"))
    version = publish_model(store, models[0])
    forge(store, version, "../../forged.png")
    client = TestClient(create_app(store.uri))
    page = client.get("/").text
    assert "unsafe file name" in page and "forged.png</a>" not in page
    assert client.get(f"/versions/{version}/files/..%2F..%2Fforged.png").status_code == 404
    row = client.get("/api/versions").json()[0]
    assert row["version"] == version and "unsafe file name" in row["error"]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, store=str(tmp_path / "store"), inbox="", valid_csv="",
                    genres=GENRES)


def test_champion_without_manifest_trains_and_is_listed(settings, models, capsys):
    store = open_store(settings.store)
    old = publish_model(store, models[0])
    champion = publish_model(store, models[1])
    store.delete(registry.version_key(champion, registry.MANIFEST_FILE))
    snapshot = {"fingerprint": "f", "snapshot_key": "snapshots/f.parquet"}

    assert training.needs_training(settings, snapshot, retrain_unchanged=False) is True
    assert gate.previous_snapshot_key(registry.read_champion(store).manifest, snapshot) is None
    decision = release.gate(settings, {"roc_auc_ovo": 0.1, "valid_sha256": "v1"}, 0.0, False)
    assert decision["promote"] and decision["champion"] == champion
    assert "no usable champion" in decision["reason"] and "no manifest" in decision["reason"]
    fresh = publish_model(store, models[0], expected_champion=decision["champion"])
    assert registry.read_latest(store)["version"] == fresh

    code, out, _ = run(capsys, "models", "--store", settings.store)
    lines = {line[2:].split()[0]: line for line in out.splitlines()
             if not line.startswith("    ")}  # a version's detail line is indented
    assert code == 0 and set(lines) == {old, champion, fresh}
    assert "BROKEN" in lines[champion] and "no manifest" in lines[champion]
    code, out, _ = run(capsys, "models", "--store", settings.store, "--json")
    rows = {row["version"]: row for row in json.loads(out)}
    assert "no manifest" in rows[champion]["error"] and rows[fresh]["latest"]


@pytest.mark.parametrize("garbage", [b"{not json", b"{}", b"[]", b'{"version": "../x"}'],
                         ids=["garbage", "empty-object", "list", "path"])
def test_broken_pointer_is_one_line_and_rollback_repairs_it(store_uri, models, cache,
                                                            tmp_path, capsys, garbage):
    store = open_store(store_uri)
    version = publish_model(store, models[0])
    store.write_bytes(registry.LATEST_KEY, garbage)
    song = tmp_path / "song.wav"
    song.write_bytes(b"not reached")
    for argv in (["models"], ["pull"], ["predict", str(song)]):
        code, _, err = run(capsys, *argv, "--store", store_uri)
        assert code == 1 and err.count("\n") == 1, (argv, err)
        assert "BrokenPointer" in err and "genreflow rollback" in err, (argv, err)
    settings = Settings(home=tmp_path, store=store_uri, inbox="", valid_csv="", genres=GENRES)
    decision = release.gate(settings, {"roc_auc_ovo": 0.1, "valid_sha256": "v1"}, 0.0, False)
    assert decision["promote"] and decision["champion"] is None
    assert "no usable champion" in decision["reason"]

    code, out, _ = run(capsys, "rollback", version, "--store", store_uri)
    assert code == 0 and f"broken -> {version}" in out
    assert registry.read_latest(store)["version"] == version
    assert run(capsys, "models", "--store", store_uri)[0] == 0


def test_rollback_repairs_a_dangling_pointer_by_compare_and_swap(store_uri, models):
    inner = open_store(store_uri)
    good = publish_model(inner, models[0])
    gone = publish_model(inner, models[1])
    for key in inner.list_keys(registry.version_key(gone, "")):
        inner.delete(key)
    assert registry.read_champion(inner).manifest is None
    row = {r["version"]: r for r in registry.version_summaries(inner)}[gone]
    assert row["latest"] and "unknown version" in row["error"]

    def meddle(key):  # someone else repairs the pointer between our read and our write
        if key == registry.LATEST_KEY:
            inner.write_bytes(key, b'{"version": "someone-else"}')

    with pytest.raises(registry.PromotionConflict):
        registry.rollback(HookedStore(inner, meddle), good)
    assert registry.read_latest(inner)["version"] == "someone-else"
    done = registry.rollback(inner, good)
    assert done["previous"] == "someone-else" and registry.read_latest(inner)["version"] == good


def test_promoted_comes_from_the_pointer_history(store_uri, models, capsys):
    inner = open_store(store_uri)
    first = publish_model(inner, models[0])

    def killed(key):  # the process dies after the manifest, before latest.json moves
        if key == registry.LATEST_KEY:
            raise StoreError("killed")

    with pytest.raises(StoreError):
        publish_model(HookedStore(inner, killed), models[1])
    ghost = next(v for v in registry.list_versions(inner) if v != first)
    assert registry.read_manifest(inner, ghost)["promoted"] is True  # only the intent
    second = publish_model(inner, models[1])

    def promoted() -> dict[str, bool]:
        return {r["version"]: r["promoted"] for r in registry.version_summaries(inner)}

    assert promoted() == {first: True, ghost: False, second: True}
    assert registry.read_latest(inner)["history"] == [first]
    code, out, _ = run(capsys, "models", "--store", store_uri)
    ghost_line = next(line for line in out.splitlines() if line[2:].startswith(ghost))
    assert "  not promoted  " in ghost_line
    registry.rollback(inner, ghost)
    assert promoted() == {first: True, ghost: True, second: True}
    assert registry.read_latest(inner)["history"] == [first, second]


def test_pull_refuses_an_untrusted_model(tmp_path, cache, capsys):
    store = open_store(str(tmp_path / "store"))
    registry.publish(store, registry.new_version(),
                     {registry.MODEL_FILE: registry.dump_model(Sneaky())}, {}, promote=True)
    dest = tmp_path / "pulled"
    code, out, err = run(capsys, "pull", "--store", store.uri, "--dest", str(dest))
    assert code == 1 and "UntrustedModel" in err and "Sneaky" in err
    assert "verified" not in out and not dest.exists()
