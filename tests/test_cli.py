"""The ``genreflow`` registry commands end to end, on a local store and on S3 over HTTP
(moto): publish -> models -> pull -> predict gives the in-memory model's predictions;
tampered, untrusted, missing and unknown models and bad audio fail with exit code 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_registry import TINY, Sneaky, publish_model

from genreflow import registry
from genreflow.cli import main
from genreflow.serving import cache_dir
from genreflow.storage import open_store

GENREFLOW = Path(sys.executable).parent / "genreflow"


@pytest.fixture(scope="module")
def demo_table(demo_corpus):
    from genreflow.dataset import build_table, labelled_audio

    table, failures = build_table(labelled_audio(demo_corpus["inbox"]), workers=1)
    assert not failures
    return table


@pytest.fixture(scope="module")
def trained(demo_table, demo_corpus):
    """A tiny model fitted on the synthetic demo inbox, and the audio files to classify."""
    from genreflow.model import fit_model

    songs = sorted(demo_corpus["root"].joinpath("valid-audio").glob("*/*.wav"))
    return fit_model(demo_table, TINY), songs


@pytest.fixture(scope="module")
def others(demo_table):
    """Two more models of the same data, with other cluster counts: other predictions."""
    from genreflow.model import fit_model

    return [fit_model(demo_table, {**TINY, "cluster__n_clusters": n}) for n in (3, 4)]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("GENREFLOW_CACHE", str(path))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def expected_predictions(model, songs) -> dict[str, dict]:
    """What the in-memory model says: the genre of largest mean segment probability."""
    import pandas as pd

    from genreflow.extraction import extract_audio_features
    from genreflow.features.names import FEATURE_NAMES

    expected = {}
    for song in songs:
        proba = model.predict_proba(pd.DataFrame(extract_audio_features(song),
                                                 columns=FEATURE_NAMES))
        mean = proba.mean(axis=0)
        expected[str(song)] = {
            "genre": str(model.classes_[mean.argmax()]),
            "probabilities": {str(c): round(float(p), 6)
                              for c, p in zip(model.classes_, mean, strict=True)},
        }
    return expected


def test_publish_models_pull_predict_round_trip(store_uri, trained, others, cache, tmp_path,
                                                capsys):
    """Three versions of three different models: each command serves the version asked
    for (the champion by default), told apart by its bytes and its predictions."""
    model, songs = trained
    store = open_store(store_uri)
    old = publish_model(store, others[0], auc=0.8)
    refused = publish_model(store, others[1], promote=False, auc=0.7)
    latest = publish_model(store, model, auc=0.85)
    model_sha = {v: registry.read_manifest(store, v)["files"][registry.MODEL_FILE]["sha256"]
                 for v in (old, refused, latest)}
    assert len(set(model_sha.values())) == 3

    code, out, _ = run(capsys, "models", "--store", store_uri, "--json")
    rows = {row["version"]: row for row in json.loads(out)}
    assert code == 0 and list(rows) == sorted([old, refused, latest], reverse=True)  # newest 1st
    assert [v for v, row in rows.items() if row["latest"]] == [latest]
    assert not rows[refused]["promoted"] and rows[old]["roc_auc_ovo"] == 0.8

    for version, dest in ((None, "p"), (refused, "r")):
        argv = ["--version", version] if version else []
        code, out, _ = run(capsys, "pull", "--store", store_uri, "--dest", str(tmp_path / dest),
                           *argv)
        want = version or latest
        assert code == 0 and want in out
        pulled = tmp_path / dest
        manifest = json.loads((pulled / "manifest.json").read_text())
        assert manifest["version"] == want
        for name, entry in manifest["files"].items():
            assert registry.sha256_hex((pulled / name).read_bytes()) == entry["sha256"]
        assert registry.sha256_hex((pulled / registry.MODEL_FILE).read_bytes()) == \
            model_sha[want]

    expected = expected_predictions(model, songs)
    expected_old = expected_predictions(others[0], songs)
    assert expected_old != expected

    def predictions(*argv: str) -> dict[str, dict]:
        code, out, _ = run(capsys, "predict", *map(str, songs), "--store", store_uri, "--json",
                           *argv)
        assert code == 0
        return {row["file"]: row for row in json.loads(out)}

    results = predictions()
    assert set(results) == set(expected)
    for name, want in expected.items():
        got = results[name]
        assert got["version"] == latest and got["genre"] == want["genre"]
        assert got["probabilities"] == want["probabilities"]  # every genre, ...
        assert list(got["probabilities"].values()) == sorted(
            got["probabilities"].values(), reverse=True)  # ... most likely first
        assert got["synthetic_demo"] is False
    cached = cache_dir(store, latest) / registry.MODEL_FILE
    assert cached.is_file()
    for name, got in predictions("--version", old).items():
        assert got["version"] == old and got["probabilities"] == expected_old[name]["probabilities"]

    cached.write_bytes(b"corrupted cache")  # refreshed from the store, not trusted
    code, out, _ = run(capsys, "predict", str(songs[0]), "--store", store_uri)
    assert code == 0 and expected[str(songs[0])]["genre"] in out
    assert registry.sha256_hex(cached.read_bytes()) == model_sha[latest]

    code, out, _ = run(capsys, "rollback", old, "--store", store_uri)
    assert code == 0 and registry.read_latest(store)["version"] == old
    code, out, _ = run(capsys, "models", "--store", store_uri)
    assert next(line for line in out.splitlines() if line.startswith("*")).split()[1] == old
    for name, got in predictions().items():
        assert got["version"] == old and got["probabilities"] == expected_old[name]["probabilities"]


def test_models_and_predict_show_the_training_record(tmp_path, cache, capsys, caplog, trained):
    """The manifest's model name, CV score and spread and training size are listed; a
    model trained on the synthetic demo corpus is flagged, and predict warns."""
    model, songs = trained
    store = open_store(str(tmp_path / "store"))
    manifest = {"metrics": {"roc_auc_ovo": 0.9, "song_accuracy": 0.8}, "synthetic_demo": True,
                "model_name": "dB + generated | logreg C=0.01", "cv_roc_auc_ovo": 0.97,
                "cv_roc_auc_ovo_std": 0.012, "n_training_segments": 240}
    version = registry.new_version()
    registry.publish(store, version, {registry.MODEL_FILE: registry.dump_model(model)},
                     manifest, promote=True)
    code, out, _ = run(capsys, "models", "--store", store.uri, "--json")
    row = json.loads(out)[0]
    assert code == 0 and row["model_name"] == "dB + generated | logreg C=0.01"
    assert (row["cv_roc_auc_ovo"], row["cv_roc_auc_ovo_std"]) == (0.97, 0.012)
    assert row["n_training_segments"] == 240 and row["synthetic_demo"] is True
    code, out, _ = run(capsys, "models", "--store", store.uri)
    assert ("dB + generated | logreg C=0.01; features librosa-v1; CV 0.9700 +- 0.0120; "
            "240 training segments; SYNTHETIC demo corpus") in out
    code, out, _ = run(capsys, "predict", str(songs[0]), "--store", store.uri, "--json")
    assert code == 0 and json.loads(out)[0]["synthetic_demo"] is True
    assert f"model {version} was trained on the synthetic demo corpus" in caplog.text


def test_tampered_model_in_the_store_is_refused(store_uri, trained, cache, capsys):
    model, songs = trained
    store = open_store(store_uri)
    good = publish_model(store, model)
    bad = publish_model(store, model)
    key = registry.version_key(bad, registry.MODEL_FILE)
    data = bytearray(store.read_bytes(key))
    data[100] ^= 0xFF
    store.write_bytes(key, bytes(data))
    for argv in (["pull"], ["predict", str(songs[0])]):
        code, _, err = run(capsys, *argv, "--store", store_uri)
        assert code == 1 and "TamperedFile" in err and "sha256 mismatch" in err, err
    assert run(capsys, "rollback", good, "--store", store_uri)[0] == 0
    code, _, err = run(capsys, "rollback", bad, "--store", store_uri)
    assert code == 1 and "TamperedFile" in err
    assert registry.read_latest(store)["version"] == good


def test_untrusted_model_is_refused(tmp_path, cache, capsys, trained):
    store = open_store(str(tmp_path / "store"))
    registry.publish(store, registry.new_version(),
                     {registry.MODEL_FILE: registry.dump_model(Sneaky())}, {}, promote=True)
    code, _, err = run(capsys, "predict", str(trained[1][0]), "--store", store.uri)
    assert code == 1 and "UntrustedModel" in err and "Sneaky" in err


def test_no_model_and_unknown_version(tmp_path, cache, capsys, trained):
    uri = str(tmp_path / "empty")
    code, _, err = run(capsys, "predict", str(trained[1][0]), "--store", uri)
    assert code == 1 and "NoModel" in err
    code, out, _ = run(capsys, "models", "--store", uri)
    assert code == 0 and "no models" in out
    publish_model(open_store(uri), trained[0])
    for argv in (["pull", "--version", "20990101T000000Z-000000"], ["rollback", "nope"]):
        code, _, err = run(capsys, *argv, "--store", uri)
        assert code == 1 and "UnknownVersion" in err, err


def test_bad_audio_fails_with_a_clear_error(tmp_path, cache, capsys, trained):
    import soundfile as sf

    model, songs = trained
    uri = str(tmp_path / "store")
    publish_model(open_store(uri), model)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file" * 10)
    short = tmp_path / "short.wav"
    sf.write(short, np.sin(np.arange(22050) / 5.0).astype(np.float32), 22050)
    code, out, err = run(capsys, "predict", str(corrupt), str(short), str(songs[0]),
                         "--store", uri, "--json")
    assert code == 1
    rows = {Path(row["file"]).name: row for row in json.loads(out)}
    assert "UndecodableAudio" in rows["corrupt.wav"]["error"]
    assert "TooShortAudio" in rows["short.wav"]["error"]
    assert "genre" in rows[songs[0].name]
    lines = err.strip().splitlines()  # one plain line per file: path, reason in words
    assert f"genreflow: error: {corrupt}: cannot decode audio: " in lines[0]
    assert f"genreflow: error: {short}: 1.00 s is shorter than one 3.00 s segment" in lines[1]
    assert len(lines) == 2 and "0x" not in err and "Error" not in err


def test_installed_script_over_s3(s3_bucket, trained, tmp_path):
    """The console script, as a user runs it: S3 settings only from the environment."""
    bucket, env = s3_bucket
    model, songs = trained
    uri = f"s3://{bucket}/registry"
    version = publish_model(open_store(uri), model)
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"\x00" * 1000)
    env = {**os.environ, **env, "GENREFLOW_STORE": uri, "GENREFLOW_CACHE": str(tmp_path / "c")}
    done = subprocess.run([str(GENREFLOW), "predict", str(songs[0]), str(corrupt), "--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)
    assert rows[0]["version"] == version
    assert rows[0]["genre"] == expected_predictions(model, songs[:1])[str(songs[0])]["genre"]
    assert "corrupt.mp3" in done.stderr and "error" in rows[1]
    done = subprocess.run([str(GENREFLOW), "models"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and f"* {version}" in done.stdout


def test_bad_store_uris_are_one_line(tmp_path, cache, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for uri in ("s3://", "http://example.com/store", str(a_file)):
        for argv in (["models"], ["pull"], ["rollback", "20990101T000000Z-000000"]):
            code, _, err = run(capsys, *argv, "--store", uri)
            assert code == 1 and err.count("\n") == 1 and "BadStoreUri" in err, (uri, err)
    assert a_file.read_text() == "not a folder"


def test_read_only_commands_create_no_folders(tmp_path, cache, capsys, trained):
    missing = tmp_path / "unset-variable" / "store"
    code, out, _ = run(capsys, "models", "--store", str(missing))
    assert code == 0 and "no models" in out
    for argv in (["pull"], ["pull", "--version", "20990101T000000Z-000000"],
                 ["predict", str(trained[1][0])]):
        code, _, err = run(capsys, *argv, "--store", str(missing))
        assert code == 1 and err.count("\n") == 1, err
    assert not missing.parent.exists() and not cache.exists()
