"""The musicnn feature set through Airflow: a store written with the hand-made features only
is upgraded by the DAG, trains and publishes with embeddings, and both versions predict."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import BIN, TEST_GENRES

from genreflow import catalog, registry
from genreflow.cli import build_valid_csv
from genreflow.features.sets import SETS
from genreflow.layout import features_key
from genreflow.storage import LocalStore

pytestmark = pytest.mark.airflow
BOTH = ("librosa", "musicnn")


def predict(env: dict[str, str], store, version: str, clip) -> dict:
    done = subprocess.run(
        [str(BIN / "genreflow"), "predict", "--json", "--store", str(store), "--version",
         version, str(clip)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)[0]


def test_an_old_store_is_upgraded_trains_with_embeddings_and_old_versions_still_predict(
    run_dag, demo_corpus, tmp_path
):
    inbox = tmp_path / "inbox"
    shutil.copytree(demo_corpus["inbox"], inbox)
    env = {"GENREFLOW_STORE": str(tmp_path / "store"), "GENREFLOW_INBOX": str(inbox),
           "GENREFLOW_VALID_CSV": str(demo_corpus["valid_csv"])}
    old = run_dag(env)  # the test config names no feature sets: librosa only, as before
    assert old.returncode == 0, old.log[-3000:]
    store = LocalStore(tmp_path / "store")
    old_version = registry.read_latest(store)["version"]
    assert registry.read_manifest(store, old_version)["feature_sets"] == ["librosa-v1"]
    assert store.list_keys("features/musicnn-v1/") == []

    config = tmp_path / "genreflow.toml"
    config.write_text(f"genres = {json.dumps(list(TEST_GENRES))}\n"
                      f"feature_sets = {json.dumps(list(BOTH))}\n")
    valid_csv = tmp_path / "valid.csv"
    build_valid_csv(demo_corpus["root"] / "valid-audio", valid_csv, TEST_GENRES, 1, BOTH)
    env |= {"GENREFLOW_CONFIG": str(config), "GENREFLOW_VALID_CSV": str(valid_csv)}
    new = run_dag(env, {"max_upgrade_tracks": 100})
    assert new.returncode == 0, new.log[-3000:]
    assert "upgrade: 9 catalogued tracks lack feature sets (musicnn): 9 taken" in new.log
    assert "upgrade: 9 of 9 catalogued tracks given their missing feature sets" in new.log

    tracks = catalog.read_catalog(store)
    assert (tracks["status"] == catalog.OK).sum() == 9  # none lost
    for track_id in tracks["track_id"]:
        assert store.exists(features_key("musicnn-v1", track_id))
    version = registry.read_latest(store)["version"]
    manifest = registry.read_manifest(store, version)
    assert version != old_version and manifest["promoted"] is True
    assert "musicnn-v1" in manifest["feature_sets"]
    assert manifest["feature_fingerprints"][-1] == SETS["musicnn"].fingerprint
    snapshot = store.read_frame(manifest["snapshot_key"])
    assert set(SETS["musicnn"].columns) <= set(snapshot.columns) and len(snapshot) > 0
    assert manifest["metrics"]["roc_auc_ovo"] >= 0.9

    clip = next((demo_corpus["root"] / "valid-audio" / "metal").iterdir())
    now, before = (predict(new.env, store.root, v, clip) for v in (version, old_version))
    assert now["version"] == version and before["version"] == old_version
    assert now["genre"] == before["genre"] == "metal"
    assert now["probabilities"] != before["probabilities"]  # two different models answered

    def reproduce(v: str, valid) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "genreflow"), "reproduce", v, "--store", str(store.root),
             "--valid-csv", str(valid)], env=new.env, capture_output=True, text=True,
            timeout=300)

    again = reproduce(version, valid_csv)  # retrained from what the version recorded
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert f"{version}: reproduced: the same metrics roc_auc_ovo " \
           f"{manifest['metrics']['roc_auc_ovo']:.4f}" in again.stdout
    old_manifest = registry.read_manifest(store, old_version)
    store.delete(old_manifest["snapshot_key"])
    gone = reproduce(old_version, demo_corpus["valid_csv"])
    assert gone.returncode == 1
    assert f"training snapshot {old_manifest['snapshot_key']} is gone" in gone.stdout
