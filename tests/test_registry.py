"""The model registry and the release steps, on both store backends (local folder and
S3 over HTTP to moto): publish/verify/load, immutability, failures mid-publish, tampering,
untrusted types, racing publishers, rollback, the gate and report files."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from genreflow import cli, registry
from genreflow.config import Settings
from genreflow.dataset import track_frame, write_valid_table
from genreflow.features.names import FEATURE_NAMES
from genreflow.model import fit_model
from genreflow.storage import Store, StoreError, WriteConflict, open_store
from genreflow.tasks import release

GENRES = ("classical", "metal", "electronic")
TINY = {"generate": "passthrough", "cluster__n_clusters": 2, "cluster__n_init": 1}


def random_table(seed: int, tracks_per_genre: int = 4, segments: int = 3):
    """A segment table whose genres differ in mean: enough for a model to learn."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = [
        track_frame(f"{genre}/t{t}", genre,
                    rng.normal(loc=i, size=(segments, len(FEATURE_NAMES))))
        for i, genre in enumerate(GENRES) for t in range(tracks_per_genre)
    ]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def models():
    """Two different fitted pipelines: a champion and a challenger."""
    return [fit_model(random_table(seed), TINY) for seed in (1, 2)]


def publish_model(store: Store, model, *, promote: bool = True, version: str | None = None,
                  auc: float = 0.9, **kwargs) -> str:
    version = version or registry.new_version()
    files = {registry.MODEL_FILE: registry.dump_model(model), "metrics.json": b"{}"}
    manifest = {"metrics": {"roc_auc_ovo": auc, "song_accuracy": 1.0}, "valid_sha256": "v1"}
    registry.publish(store, version, files, manifest, promote=promote, **kwargs)
    return version


def proba(model, seed: int = 9) -> np.ndarray:
    return model.predict_proba(random_table(seed)[FEATURE_NAMES])


class HookedStore(Store):
    """A real store with a hook run before every write (fault injection, races)."""

    def __init__(self, inner: Store, before_write):
        self.inner, self.before_write, self.uri = inner, before_write, inner.uri

    def write_bytes(self, key, data, **kwargs):
        self.before_write(key)
        self.inner.write_bytes(key, data, **kwargs)

    def read_bytes(self, key):
        return self.inner.read_bytes(key)

    def read_bytes_with_etag(self, key):
        return self.inner.read_bytes_with_etag(key)

    def exists(self, key):
        return self.inner.exists(key)

    def list_keys(self, prefix=""):
        return self.inner.list_keys(prefix)

    def delete(self, key):
        self.inner.delete(key)


def test_publish_verify_load_round_trip(store_uri, models, caplog):
    store = open_store(store_uri)
    caplog.set_level(logging.INFO, logger="genreflow")
    version = publish_model(store, models[0])
    assert (f"stored {store.location(registry.version_key(version, ''))} (2 files, sha256 "
            f"verified)") in caplog.messages
    assert f"latest -> {version} (was None)" in caplog.messages
    latest = registry.read_latest(store)
    manifest_bytes = store.read_bytes(registry.version_key(version, registry.MANIFEST_FILE))
    assert latest["version"] == version and latest["previous"] is None
    assert latest["manifest_sha256"] == registry.sha256_hex(manifest_bytes)
    model, manifest = registry.load_model(store)
    assert manifest["promoted"] is True and set(manifest["files"]) == {"model.skops",
                                                                       "metrics.json"}
    np.testing.assert_array_equal(proba(model), proba(models[0]))
    assert registry.list_versions(store) == [version]


def test_versions_are_never_overwritten(store_uri, models):
    store = open_store(store_uri)
    version = publish_model(store, models[0])
    before = store.read_bytes(registry.version_key(version, registry.MODEL_FILE))
    with pytest.raises(registry.RegistryError, match="immutable"):
        publish_model(store, models[1], version=version)
    assert store.read_bytes(registry.version_key(version, registry.MODEL_FILE)) == before


@pytest.mark.parametrize("raced", ["metrics.json", "model.skops", "manifest.json"])
def test_a_racing_publisher_of_the_same_version_is_never_overwritten(store_uri, models, raced):
    """Both publishers passed the up-front check; the rival's file lands just before
    ours: the conditional write (overwrite=False) refuses ours and keeps the rival's."""
    inner = open_store(store_uri)
    champion = publish_model(inner, models[0])
    version, rival = registry.new_version(), f"rival's {raced}".encode()

    def rival_lands_first(key):
        if key == registry.version_key(version, raced):
            inner.write_bytes(key, rival)

    with pytest.raises(registry.RegistryError, match="appeared while publishing"):
        publish_model(HookedStore(inner, rival_lands_first), models[1], version=version)
    assert inner.read_bytes(registry.version_key(version, raced)) == rival
    assert registry.read_latest(inner)["version"] == champion


def test_refused_challenger_is_stored_but_not_promoted(store_uri, models):
    store = open_store(store_uri)
    champion = publish_model(store, models[0])
    refused = publish_model(store, models[1], promote=False)
    assert registry.read_latest(store)["version"] == champion
    assert registry.read_manifest(store, refused)["promoted"] is False
    assert registry.list_versions(store) == sorted([champion, refused])


@pytest.mark.parametrize("failing", ["model.skops", "manifest.json", "latest.json"])
def test_failure_mid_publish_keeps_the_previous_champion(store_uri, models, failing):
    inner = open_store(store_uri)
    champion = publish_model(inner, models[0])

    def fail(key):
        if key.endswith(failing):
            raise StoreError(f"injected failure writing {key}")

    with pytest.raises(StoreError, match="injected"):
        publish_model(HookedStore(inner, fail), models[1])
    assert registry.read_latest(inner)["version"] == champion
    model, _ = registry.load_model(inner)
    np.testing.assert_array_equal(proba(model), proba(models[0]))
    assert champion in registry.list_versions(inner)


def test_s3_server_stopped_mid_publish(s3_bucket, s3_endpoint, models, monkeypatch, tmp_path):
    """A dedicated moto server dies right after the model upload; the shared server
    (same in-process state) shows latest unchanged and the champion still loads."""
    from moto.server import ThreadedMotoServer

    bucket, _ = s3_bucket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    doomed = open_store(f"s3://{bucket}/registry")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    survivor = open_store(f"s3://{bucket}/registry")
    champion = publish_model(doomed, models[0])

    def stop_after_model(key):
        if key.endswith(registry.MANIFEST_FILE):
            server.stop()

    try:
        with pytest.raises(StoreError):
            publish_model(HookedStore(doomed, stop_after_model), models[1])
    finally:
        server.stop()
    assert registry.read_latest(survivor)["version"] == champion
    model, _ = registry.load_model(survivor)
    np.testing.assert_array_equal(proba(model), proba(models[0]))
    assert registry.list_versions(survivor) == [champion]
    assert cli.main(["pull", "--store", survivor.uri, "--dest", str(tmp_path / "pulled")]) == 0
    assert (tmp_path / "pulled" / registry.MODEL_FILE).is_file()


def test_tampered_files_are_refused(store_uri, models):
    store = open_store(store_uri)
    version = publish_model(store, models[0])
    key = registry.version_key(version, registry.MODEL_FILE)
    data = bytearray(store.read_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(key, bytes(data))
    with pytest.raises(registry.TamperedFile, match="sha256 mismatch"):
        registry.load_model(store)
    manifest_key = registry.version_key(version, registry.MANIFEST_FILE)
    manifest = store.read_json(manifest_key)
    manifest["files"]["model.skops"]["sha256"] = registry.sha256_hex(bytes(data))
    store.write_json(manifest_key, manifest)
    with pytest.raises(registry.TamperedFile, match="differs from the one in latest.json"):
        registry.load_model(store)


class Sneaky(BaseEstimator):
    """A type no allow-list names."""


@pytest.mark.parametrize("payload", ["untrusted", "garbage"])
def test_untrusted_or_foreign_model_is_refused(tmp_path, payload):
    store = open_store(str(tmp_path))
    data = registry.dump_model(Sneaky()) if payload == "untrusted" else b"not a skops file"
    registry.publish(store, "v1", {registry.MODEL_FILE: data}, {}, promote=True)
    match = "Sneaky" if payload == "untrusted" else "not a skops model"
    with pytest.raises(registry.UntrustedModel, match=match):
        registry.load_model(store)


@pytest.mark.parametrize("with_champion", [False, True], ids=["if-none-match", "if-match"])
def test_racing_publishers_never_clobber(store_uri, models, with_champion):
    """Both publishers read latest, upload, then write latest at the same moment (a
    barrier) with the same stale ETag; the writes themselves are serialised, as S3 does
    atomically (moto checks then puts). Exactly one wins; the other is told so."""
    inner = open_store(store_uri)
    champion = publish_model(inner, models[0]) if with_champion else None
    barrier, serial = threading.Barrier(2, timeout=60), threading.Lock()

    class Racing(HookedStore):
        def write_bytes(self, key, data, **kwargs):
            if key != registry.LATEST_KEY:
                return super().write_bytes(key, data, **kwargs)
            barrier.wait()
            with serial:
                return super().write_bytes(key, data, **kwargs)

    store = Racing(inner, lambda key: None)
    outcomes: dict[str, Exception | None] = {}

    def run(model):
        version = registry.new_version()
        try:
            publish_model(store, model, version=version)
            outcomes[version] = None
        except Exception as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=run, args=(m,)) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [v for v, exc in outcomes.items() if exc is None]
    losers = [exc for exc in outcomes.values() if exc is not None]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], registry.PromotionConflict), losers[0]
    assert "NOT promoted" in str(losers[0])
    assert isinstance(losers[0].__cause__, WriteConflict)  # the conditional write refused it
    latest = registry.read_latest(inner)
    assert latest["version"] == winners[0] and latest["previous"] == champion
    for version in outcomes:
        manifest = registry.read_manifest(inner, version)
        assert set(registry.verify_files(inner, version, manifest)) == {"model.skops",
                                                                        "metrics.json"}


def test_stale_gate_decision_is_not_promoted(store_uri, models):
    store = open_store(store_uri)
    champion = publish_model(store, models[0])
    with pytest.raises(registry.PromotionConflict, match="not None as the gate saw"):
        publish_model(store, models[1], expected_champion=None)
    assert registry.read_latest(store)["version"] == champion
    assert len(registry.list_versions(store)) == 2


def test_promotion_conflicts_name_who_holds_latest_and_say_not_promoted(store_uri, models):
    inner = open_store(store_uri)
    champion = publish_model(inner, models[0])
    stale = registry.new_version()
    with pytest.raises(registry.PromotionConflict) as raised:
        publish_model(inner, models[1], version=stale, expected_champion=None)
    assert str(raised.value) == (
        f"latest points at {champion}, not None as the gate saw; {stale} is stored but NOT "
        "promoted (rerun the gate, or `genreflow rollback` to choose)")
    winner, late = registry.new_version(), registry.new_version()

    def another_publisher_wins(key):
        if key == registry.LATEST_KEY and registry.read_latest(inner)["version"] != winner:
            publish_model(inner, models[0], version=winner)

    with pytest.raises(registry.PromotionConflict) as raised:
        publish_model(HookedStore(inner, another_publisher_wins), models[1], version=late)
    assert isinstance(raised.value.__cause__, WriteConflict)
    assert str(raised.value) == (
        f"another publisher moved latest to {winner} while {late} was being promoted; "
        f"{late} is stored but NOT promoted ({raised.value.__cause__})")
    assert registry.read_latest(inner)["version"] == winner


@pytest.mark.parametrize("legacy", [{}, {"previous": None},
                                    {"previous": "20250101T000000Z-0a0b0c"}],
                         ids=["no-previous", "previous-none", "previous"])
def test_promoting_over_a_pointer_written_before_history_was_kept(tmp_path, models, legacy):
    """Such a pointer knows one predecessor: the new history starts from it."""
    store = open_store(str(tmp_path))
    champion = publish_model(store, models[0], promote=False)
    store.write_bytes(registry.LATEST_KEY, registry.json_bytes({"version": champion, **legacy}))
    challenger = publish_model(store, models[1])
    pointer = registry.read_latest(store)
    assert (pointer["version"], pointer["previous"]) == (challenger, champion)
    assert pointer["history"] == [v for v in [legacy.get("previous")] if v] + [champion]


def test_latest_records_when_it_was_promoted_in_utc_seconds(tmp_path, models, caplog):
    from datetime import UTC, datetime

    store = open_store(str(tmp_path))
    caplog.set_level(logging.INFO, logger="genreflow")
    before = datetime.now(UTC).replace(microsecond=0)
    version = publish_model(store, models[0])
    pointer = registry.read_latest(store)
    assert set(pointer) == {"version", "manifest_sha256", "previous", "history",
                            "promoted_at"}
    promoted_at = datetime.fromisoformat(pointer["promoted_at"])
    assert pointer["promoted_at"] == promoted_at.isoformat(timespec="seconds")
    assert promoted_at.utcoffset().total_seconds() == 0
    assert before <= promoted_at <= datetime.now(UTC)
    assert (pointer["version"], pointer["history"]) == (version, [])
    later = [publish_model(store, models[i % 2]) for i in range(3)]
    assert registry.read_latest(store)["history"] == [version, *later[:2]]
    assert f"latest -> {later[2]} (was {later[1]})" in caplog.messages


def test_rollback_refuses_a_version_without_a_fitted_model(tmp_path, models):
    from genreflow.model import build_model

    store = open_store(str(tmp_path))
    champion = publish_model(store, models[0])
    for model, kind in (({"a": 1}, "dict"), (build_model(TINY), "Pipeline")):  # unfitted
        version = publish_model(store, model, promote=False)
        with pytest.raises(registry.NotAModel) as refused:
            registry.rollback(store, version)
        assert str(refused.value) == (f"model.skops of {version} holds a {kind}, not a fitted "
                                      "pipeline; refusing it")
    data = b"{}"
    store.write_bytes(registry.version_key("v9", "metrics.json"), data)
    store.write_bytes(registry.version_key("v9", registry.MANIFEST_FILE), registry.json_bytes(
        {"files": {"metrics.json": {"sha256": registry.sha256_hex(data)}}}))
    with pytest.raises(registry.IncompleteVersion) as refused:
        registry.rollback(store, "v9")
    assert str(refused.value) == "manifest of v9 lists no model.skops"
    assert registry.read_latest(store)["version"] == champion


def test_rollback_checks_the_target(store_uri, models):
    store = open_store(store_uri)
    old = publish_model(store, models[0])
    new = publish_model(store, models[1])
    registry.rollback(store, old)
    assert registry.read_latest(store)["version"] == old
    np.testing.assert_array_equal(proba(registry.load_model(store)[0]), proba(models[0]))
    metrics_key = registry.version_key(new, "metrics.json")
    original = store.read_bytes(metrics_key)
    store.write_bytes(metrics_key, b'{"better": true}')
    with pytest.raises(registry.TamperedFile):
        registry.rollback(store, new)
    store.write_bytes(metrics_key, original)
    store.delete(registry.version_key(new, registry.MODEL_FILE))
    with pytest.raises(registry.IncompleteVersion, match="missing"):
        registry.rollback(store, new)
    store.delete(registry.version_key(new, registry.MANIFEST_FILE))
    with pytest.raises(registry.IncompleteVersion, match="no manifest"):
        registry.rollback(store, new)
    for unknown in ("20990101T000000Z-ffffff", "../escape"):
        with pytest.raises(registry.UnknownVersion):
            registry.rollback(store, unknown)
    assert registry.read_latest(store)["version"] == old


def test_the_default_pipeline_loads_under_the_allow_list():
    """Every type the production pipeline holds must be in genreflow.trusted_types."""
    model = fit_model(random_table(1), {"generate__k": 5, "generate__n_keep": 20,
                                        "cluster__n_clusters": 2, "cluster__n_init": 1})
    np.testing.assert_array_equal(
        proba(registry.load_model_bytes(registry.dump_model(model))), proba(model)
    )


def test_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(registry.NoModel, match="no published model"):
        registry.load_model(open_store(str(tmp_path)))


@pytest.fixture
def settings(tmp_path) -> Settings:
    valid = tmp_path / "valid.csv"
    write_valid_table(random_table(5, tracks_per_genre=2), valid)
    return Settings(home=tmp_path, store=str(tmp_path / "store"), inbox="",
                    valid_csv=str(valid), genres=GENRES)


def test_gate_compares_on_the_same_valid_csv(settings, models):
    from genreflow.dataset import read_valid
    from genreflow.evaluation import evaluate

    store = open_store(settings.store)
    first = release.gate(settings, {"roc_auc_ovo": 0.5, "valid_sha256": "x"}, 0.01, False)
    assert first["promote"] and first["champion"] is None
    champion = publish_model(store, models[0], auc=0.9)  # recorded on valid_sha256 "v1"

    def decide(auc, sha="v1", margin=0.05, force=False):
        return release.gate(settings, {"roc_auc_ovo": auc, "valid_sha256": sha}, margin, force)

    worse = decide(0.84)
    assert not worse["promote"] and worse["champion"] == champion
    assert "worse" in worse["reason"] and "recorded" in worse["reason"]
    assert decide(0.86)["promote"] and decide(0.84, force=True)["promote"]
    valid, valid_sha = read_valid(settings, ["librosa"])
    rescored = decide(0.0, sha=valid_sha)
    expected = evaluate(models[0], valid)["roc_auc_ovo"]
    assert rescored["champion_roc_auc_ovo"] == expected
    assert rescored["reason"] == (
        f"challenger ROC-AUC 0.0000 is {'not worse' if expected <= 0.05 else 'worse'} than "
        f"champion {champion} {expected:.4f} (re-scored on today's valid.csv) within margin 0.05")
    assert rescored["promote"] == (expected <= 0.05)


def test_gate_promotes_within_the_margin_and_refuses_below_it(settings, models, caplog):
    """Champion 0.75 recorded on the same valid.csv, margin 0.25 (both exact in binary):
    0.5 is not worse within the margin, the next float below it is."""
    store = open_store(settings.store)
    champion = publish_model(store, models[0], auc=0.75)
    caplog.set_level(logging.INFO, logger="genreflow")
    within = release.gate(settings, {"roc_auc_ovo": 0.5, "valid_sha256": "v1"}, 0.25, False)
    assert within == {
        "promote": True, "champion": champion, "margin": 0.25, "champion_roc_auc_ovo": 0.75,
        "challenger_roc_auc_ovo": 0.5,
        "reason": f"challenger ROC-AUC 0.5000 is not worse than champion {champion} 0.7500 "
                  "(recorded on the same valid.csv) within margin 0.25"}
    assert f"gate: PROMOTE: {within['reason']}" in caplog.messages
    below = np.nextafter(0.5, 0)
    refused = release.gate(settings, {"roc_auc_ovo": below, "valid_sha256": "v1"}, 0.25, False)
    assert refused == {
        **within, "promote": False, "challenger_roc_auc_ovo": below,
        "reason": f"challenger ROC-AUC 0.5000 is worse than champion {champion} 0.7500 "
                  "(recorded on the same valid.csv) within margin 0.25"}
    assert f"gate: REFUSE: {refused['reason']}" in caplog.messages
    forced = release.gate(settings, {"roc_auc_ovo": below, "valid_sha256": "v1"}, 0.25, True)
    assert forced == {"promote": True, "reason": "forced by the force_publish param",
                      "champion": champion, "margin": 0.25, "challenger_roc_auc_ovo": below}


def test_gate_without_a_usable_champion_promotes_and_says_why(settings, models, caplog):
    store = open_store(settings.store)
    caplog.set_level(logging.INFO, logger="genreflow")

    def decide():
        return release.gate(settings, {"roc_auc_ovo": 0.5, "valid_sha256": "v1"}, 0.0, False)

    assert decide() == {"promote": True, "reason": "first model: no champion yet",
                        "champion": None, "margin": 0.0, "challenger_roc_auc_ovo": 0.5}
    champion = publish_model(store, models[0])
    manifest_key = registry.version_key(champion, registry.MANIFEST_FILE)
    manifest = store.read_json(manifest_key)
    store.write_bytes(manifest_key, registry.json_bytes({**manifest, "metrics": {}}))
    problem = registry.read_champion(store).problem
    assert problem.startswith("TamperedFile: ")
    assert decide() == {"promote": True, "reason": f"no usable champion: {problem}",
                        "champion": champion, "margin": 0.0, "challenger_roc_auc_ovo": 0.5}
    store.write_bytes(registry.LATEST_KEY, b"[]")
    problem = registry.read_champion(store).problem
    assert problem.startswith("BrokenPointer: ")
    assert decide()["reason"] == f"no usable champion: {problem}"
    assert (f"no usable champion ({problem}); training and publishing as if there were "
            "none") in caplog.messages


def test_a_champion_that_cannot_be_scored_is_replaced_with_the_reason(settings, models):
    """Its recorded score lacks the metric, or re-scoring finds the model file changed."""
    store = open_store(settings.store)
    champion = publish_model(store, models[0])
    manifest_key = registry.version_key(champion, registry.MANIFEST_FILE)
    manifest = {**store.read_json(manifest_key), "metrics": {}}
    data = registry.json_bytes(manifest)
    store.write_bytes(manifest_key, data)
    store.write_json(registry.LATEST_KEY, {**store.read_json(registry.LATEST_KEY),
                                           "manifest_sha256": registry.sha256_hex(data)})
    decision = release.gate(settings, {"roc_auc_ovo": 0.5, "valid_sha256": "v1"}, 0.0, False)
    assert (decision["promote"], decision["reason"]) == (
        True, f"champion {champion} cannot be scored: 'roc_auc_ovo'")
    model_key = registry.version_key(champion, registry.MODEL_FILE)
    store.write_bytes(model_key, b"changed")
    decision = release.gate(settings, {"roc_auc_ovo": 0.5, "valid_sha256": "other"}, 0.0, False)
    assert decision["promote"] and decision["reason"].startswith(
        f"champion {champion} cannot be scored: {store.location(model_key)}: sha256 mismatch")


def test_rescoring_the_champion_reads_only_its_model(settings, models):
    """A report file of the champion's that changed (its metrics.json here) is not what
    the gate scores with: the champion is still re-scored from its verified model, and
    the decision is the score's, not 'cannot be scored'."""
    from genreflow.dataset import read_valid
    from genreflow.evaluation import evaluate

    store = open_store(settings.store)
    champion = publish_model(store, models[0])
    store.write_bytes(registry.version_key(champion, "metrics.json"), b"changed")
    valid, valid_sha = read_valid(settings, ["librosa"])
    decision = release.gate(settings, {"roc_auc_ovo": 0.0, "valid_sha256": valid_sha}, 0.0,
                            False)
    assert decision["champion_roc_auc_ovo"] == evaluate(models[0], valid)["roc_auc_ovo"]
    assert "re-scored on today's valid.csv" in decision["reason"]


def test_release_publish_copies_report_files(settings, models):
    store = open_store(settings.store)
    reports = {"checks.json": b'{"failures": []}', "confusion_matrix.png": b"\x89PNG cm",
               "umap.png": b"\x89PNG umap"}
    for name, data in reports.items():
        store.write_bytes(f"runs/r1/{name}", data)
    store.write_bytes("runs/r1/model.skops", registry.dump_model(models[0]))
    metrics = {"roc_auc_ovo": 0.9, "song_accuracy": 1.0, "valid_sha256": "v1",
               "per_genre": {}, "report_files": {n: f"runs/r1/{n}" for n in reports}}
    snapshot = {"snapshot_key": "snapshots/s.parquet", "fingerprint": "f", "n_tracks": 12}
    trained = {"model_key": "runs/r1/model.skops", "config": {"steps": {}, "selection": {}},
               "model_name": "tiny", "cv_roc_auc_ovo": 0.95, "cv_roc_auc_ovo_std": 0.02,
               "feature_sets": ["librosa-v1"], "n_training_segments": 36, "synthetic_demo": False,
               "classes": list(GENRES), "training_counts": {}}
    decision = release.gate(settings, metrics, 0.01, False)
    result = release.publish(settings, snapshot, trained, metrics, decision, "manual__r1")
    version = result["version"]
    manifest = registry.read_manifest(store, version)
    assert set(manifest["files"]) == {"model.skops", "metrics.json", *reports}
    files = registry.verify_files(store, version, manifest)
    assert all(files[name] == data for name, data in reports.items())
    assert "report_files" not in json.loads(files["metrics.json"])
    assert "report_files" not in manifest["metrics"]
    assert registry.read_latest(store)["version"] == version and result["promoted"]
    row = next(r for r in registry.version_summaries(store) if r["version"] == version)
    assert {k: row[k] for k in ("model_name", "cv_roc_auc_ovo", "cv_roc_auc_ovo_std",
                                "n_training_segments", "synthetic_demo")} == {
        "model_name": "tiny", "cv_roc_auc_ovo": 0.95, "cv_roc_auc_ovo_std": 0.02,
        "n_training_segments": 36, "synthetic_demo": False}

    refusal = {**decision, "promote": False, "champion": version, "reason": "worse by 0.2"}
    refused = release.publish(settings, snapshot, trained, metrics, refusal, "manual__r2")
    manifest = registry.read_manifest(store, refused["version"])
    assert manifest["promoted"] is False and manifest["gate"]["reason"] == "worse by 0.2"
    assert registry.read_latest(store)["version"] == version


def test_release_publish_records_the_run_in_the_manifest(settings, models, caplog):
    from datetime import UTC, datetime

    from genreflow.features.sets import SETS

    store = open_store(settings.store)
    for key, data in {"runs/r1/model.skops": registry.dump_model(models[0]),
                      "runs/r1/tracks.json": b'["t1"]', "runs/r1/checks.json": b"{}",
                      "runs/r1/umap.png": b"\x89PNG umap"}.items():
        store.write_bytes(key, data)
    metrics = {"roc_auc_ovo": 0.875, "song_accuracy": 0.5, "valid_sha256": "v1",
               "per_genre": {"metal": {"recall": 1.0}},
               "report_files": {"checks.json": "runs/r1/checks.json"}}
    snapshot = {"snapshot_key": "snapshots/s.parquet", "fingerprint": "f", "n_tracks": 12}
    trained = {"model_key": "runs/r1/model.skops", "tracks_key": "runs/r1/tracks.json",
               "config": {"steps": {}}, "model_name": "tiny", "cv_roc_auc_ovo": 0.95,
               "cv_roc_auc_ovo_std": 0.02, "feature_sets": ["librosa-v1"],
               "n_training_segments": 36, "synthetic_demo": False,
               "classes": list(GENRES), "training_counts": {"metal": 4}}
    decision = {"promote": True, "champion": None, "reason": "first model"}
    caplog.set_level(logging.INFO, logger="genreflow")
    before = datetime.now(UTC).replace(microsecond=0)
    result = release.publish(settings, snapshot, trained, metrics, decision, "manual__r1",
                             figures={"umap.png": "runs/r1/umap.png"})
    version = result["version"]
    location = store.location(registry.version_key(version, ""))
    assert result == {"version": version, "location": location, "promoted": True,
                      "roc_auc_ovo": 0.875, "song_accuracy": 0.5}
    manifest = registry.read_manifest(store, version)
    created = datetime.fromisoformat(manifest.pop("created_at"))
    assert before <= created <= datetime.now(UTC) and created.utcoffset().total_seconds() == 0
    files = manifest.pop("files")
    assert manifest == {
        "run_id": "manual__r1", "genres": list(GENRES), "feature_sets": ["librosa-v1"],
        "feature_fingerprints": [SETS["librosa"].fingerprint], "model_name": "tiny",
        "model_config": {"steps": {}}, "cv_roc_auc_ovo": 0.95, "cv_roc_auc_ovo_std": 0.02,
        "n_training_segments": 36, "synthetic_demo": False, "training_counts": {"metal": 4},
        "snapshot_key": "snapshots/s.parquet", "snapshot_fingerprint": "f",
        "n_training_tracks": 12, "valid_csv": settings.valid_csv, "valid_sha256": "v1",
        "metrics": {"roc_auc_ovo": 0.875, "song_accuracy": 0.5, "valid_sha256": "v1"},
        "gate": decision, "packages": registry.package_versions(), "version": version,
        "promoted": True}
    stored = registry.verify_files(store, version, {**manifest, "files": files})
    assert stored == {
        registry.MODEL_FILE: store.read_bytes("runs/r1/model.skops"),
        registry.TRACKS_FILE: b'["t1"]', "checks.json": b"{}", "umap.png": b"\x89PNG umap",
        registry.METRICS_FILE: registry.json_bytes({k: v for k, v in metrics.items()
                                                    if k != "report_files"})}
    assert (f"published {version} to {location} (promoted to latest); ROC-AUC ovo 0.8750, "
            "song accuracy 0.5000") in caplog.messages
    refused = release.publish(settings, snapshot, {**trained, "tracks_key": None}, metrics,
                              {**decision, "promote": False, "champion": version}, "r2")
    assert not refused["promoted"] and (
        f"published {refused['version']} to {refused['location']} (NOT promoted); ROC-AUC "
        "ovo 0.8750, song accuracy 0.5000") in caplog.messages
    assert registry.TRACKS_FILE not in registry.read_manifest(store, refused["version"])["files"]
    over = release.publish(settings, snapshot, trained, metrics,
                           {**decision, "champion": version}, "r3")  # the gate saw `version`
    assert registry.read_latest(store)["version"] == over["version"]
    with pytest.raises(registry.PromotionConflict):  # a decision made before `over` landed
        release.publish(settings, snapshot, trained, metrics, decision, "r4")
    assert registry.read_latest(store)["version"] == over["version"]
    with pytest.raises(registry.RegistryError) as clash:
        release.publish(settings, snapshot, trained, metrics, decision, "r5",
                        figures={"metrics.json": "runs/r1/umap.png",
                                 "model.skops": "runs/r1/umap.png"})
    assert str(clash.value) == "report files may not be named ['metrics.json', 'model.skops']"


def test_package_versions_are_those_installed_and_skip_the_missing(monkeypatch):
    import pandas

    monkeypatch.setattr(registry, "PACKAGES", ("numpy", "no-such-package-genreflow", "pandas"))
    assert registry.package_versions() == {"numpy": np.__version__,
                                           "pandas": pandas.__version__}


SKOPS_IN_A_TASK_PROCESS = """
import warnings
import airflow.sdk, airflow.utils.timezone  # loaded in every task process
from sklearn.preprocessing import StandardScaler
from genreflow import registry
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    data = registry.dump_model(StandardScaler().fit([[0.0], [1.0]]))
    skops_loaded = registry.skops_io().loads(data)
print(len(caught), sorted({w.category.__name__ for w in caught}))
import sys
print(sum(registry._is_deprecation_shim(m) for m in list(sys.modules.values())))
"""


SKOPS_BESIDE_A_SHIM = """
import functools, sys, types
hits = []
def getattr_with_deprecation(module, name):  # Airflow's, as its shims hold it
    hits.append(name)
    raise AttributeError(name)
shim = types.ModuleType("airflow.shim")
shim.__getattr__ = functools.partial(getattr_with_deprecation, "airflow.shim")
sys.modules["airflow.shim"] = shim
from genreflow import registry
loaded = registry.skops_io()
print(registry.__file__)
print(len(hits), sys.modules.get("airflow.shim") is shim, registry.skops_io() is loaded)
"""


def getattr_with_deprecation(module, name):
    """Named as Airflow's hook is: what makes a module a deprecation shim."""
    raise AttributeError(name)


def test_skops_is_imported_with_deprecation_shims_set_aside():
    """The promise of the test below without starting Airflow: a module whose
    ``__getattr__`` is a getattr_with_deprecation is not probed by skops' import-time
    scan, and is back in sys.modules afterwards. The process imports genreflow from where
    this test does (under mutmut: the mutated copy)."""
    import functools
    import types

    shim = types.ModuleType("airflow.shim")
    shim.__getattr__ = functools.partial(getattr_with_deprecation, "airflow.shim")
    assert registry._is_deprecation_shim(shim)
    assert not registry._is_deprecation_shim(types.ModuleType("airflow.plain"))
    assert registry.skops_io() is sys.modules["skops.io"]  # imported once per process
    source = Path(registry.__file__).parents[1]
    done = subprocess.run([sys.executable, "-c", SKOPS_BESIDE_A_SHIM], text=True,
                          capture_output=True, timeout=300, check=True,
                          env={**os.environ, "PYTHONPATH": str(source)})
    imported, outcome = done.stdout.strip().splitlines()[-2:]
    assert Path(imported) == Path(registry.__file__)
    assert outcome == "0 True True"


def test_saving_a_model_in_an_airflow_process_warns_nothing(tmp_path):
    """Issue 11: skops' import-time scan of every loaded module hit Airflow's deprecation
    shims, 1,160 DeprecatedImportWarning lines in the train and validate logs."""
    done = subprocess.run([sys.executable, "-c", SKOPS_IN_A_TASK_PROCESS], text=True,
                          capture_output=True, timeout=300, check=True,
                          env={**os.environ, "AIRFLOW_HOME": str(tmp_path)})
    warned, shims = done.stdout.strip().splitlines()[-2:]
    assert warned == "0 []"
    assert int(shims) > 0  # the shims are loaded, and back in place afterwards


def test_version_summaries_show_every_field_and_every_version(tmp_path, models, caplog):
    """One row per version folder, newest first: the manifest's training record, metrics,
    gate and plots; an unreadable version is a row with its error, and the rows after it
    are still there; ``only`` gives one version's row."""
    store = open_store(str(tmp_path / "store"))
    manifest = {
        "created_at": "2026-01-02T03:04:05+00:00", "run_id": "manual__1",
        "n_training_tracks": 12, "n_training_segments": 36, "model_name": "default",
        "feature_sets": ["musicnn-v1"], "cv_roc_auc_ovo": 0.91, "cv_roc_auc_ovo_std": 0.02,
        "synthetic_demo": True,
        "metrics": {"roc_auc_ovo": 0.93, "song_accuracy": 0.8, "song_macro_f1": 0.75},
        "gate": {"promote": True, "reason": "first model", "champion": "v0"},
    }
    old, new = "20260101T000000Z-aaaaaa", "20260103T000000Z-cccccc"
    for version in (old, new):
        registry.publish(store, version, {registry.MODEL_FILE: registry.dump_model(models[0]),
                                          "roc.png": b"png", "metrics.json": b"{}"},
                         manifest, promote=True)
    broken = "20260102T000000Z-bbbbbb"
    store.write_bytes(registry.version_key(broken, registry.MODEL_FILE), b"half a publish")
    rows = registry.version_summaries(store)
    assert [r["version"] for r in rows] == [new, broken, old]
    expected = {key: manifest[key] for key in (
        "created_at", "run_id", "n_training_tracks", "n_training_segments", "model_name",
        "feature_sets", "cv_roc_auc_ovo", "cv_roc_auc_ovo_std", "synthetic_demo")}
    assert rows[0] == {
        "version": new, "latest": True, "location": store.location(f"models/{new}/"),
        **expected, **manifest["metrics"], "promoted": True, "gate_promote": True,
        "gate_reason": "first model", "gate_champion": "v0", "plots": ["roc.png"]}
    assert rows[2]["latest"] is False and rows[2]["promoted"] is True
    assert set(rows[1]) == {"version", "latest", "location", "error"}
    assert f"version {broken} has no manifest" in rows[1]["error"]
    assert registry.version_summaries(store, only=old) == [rows[2]]
    bare = "20260104T000000Z-dddddd"  # a manifest with no metrics, gate, plots or sets
    registry.publish(store, bare, {registry.MODEL_FILE: b"m"}, {}, promote=False)
    [row] = registry.version_summaries(store, only=bare)
    assert (row["roc_auc_ovo"], row["gate_promote"], row["gate_reason"], row["plots"]) == (
        None, None, "", [])
    assert row["feature_sets"] == ["librosa-v1"]  # versions from before feature sets
    for name in (registry.MANIFEST_FILE, registry.MODEL_FILE):
        store.delete(registry.version_key(bare, name))

    store.write_bytes(registry.LATEST_KEY, b"garbage")
    caplog.set_level(logging.INFO, logger="genreflow")
    assert {r["version"]: r.get("promoted") for r in registry.version_summaries(store)} == {
        new: None, broken: None, old: None}
    assert any(m.startswith(f"{store.location(registry.LATEST_KEY)} is not JSON (")
               for m in caplog.messages)
    store.write_bytes(registry.LATEST_KEY, registry.json_bytes({"version": old}))  # no history
    store.write_bytes(registry.version_key(new, registry.MANIFEST_FILE), registry.json_bytes(
        {**registry.read_manifest(store, new), "promoted": False}))
    promoted = {r["version"]: r.get("promoted") for r in registry.version_summaries(store)}
    assert promoted == {new: False, broken: None, old: True}


def test_registry_json_and_names(tmp_path):
    from datetime import UTC, datetime

    assert registry.json_bytes({"b": 1, "a": datetime(2026, 1, 2, tzinfo=UTC)}) == (
        b'{\n  "a": "2026-01-02 00:00:00+00:00",\n  "b": 1\n}')
    version = registry.new_version(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert re.fullmatch(r"20260102T030405Z-[0-9a-f]{6}", version)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", registry.new_version())
    for bad in ("../x", "", 7, None):
        with pytest.raises(registry.UnknownVersion, match=f"{bad!r} is not a valid version"):
            registry.check_name(bad)
    with pytest.raises(registry.UnknownVersion, match="is not a valid file name"):
        registry.check_name("a/b", "file")
    for manifest, problem in (([], "has no 'files' table"), ({"files": {"m": 1}}, "no sha256"),
                              ({"files": {"m": {"sha256": 1}}}, "no sha256")):
        with pytest.raises(registry.TamperedFile, match=f"^where.*{problem}.*refusing the"):
            registry.check_manifest(manifest, "where")
    for name in ("a b", registry.MANIFEST_FILE):
        with pytest.raises(registry.TamperedFile) as raised:
            registry.check_manifest({"files": {name: {"sha256": "0"}}}, "where")
        assert str(raised.value) == (f"where lists an unsafe file name {name!r} (plain names "
                                     "only); refusing the version")
    with pytest.raises(registry.TamperedFile) as raised:
        registry.check_manifest({"files": {"m": {}}}, "where")
    assert str(raised.value) == "where: entry 'm' has no sha256; refusing the version"


def test_publish_records_what_it_stored_and_rollback_says_what_it_did(tmp_path, models,
                                                                      caplog):
    store = open_store(str(tmp_path / "store"))
    model = registry.dump_model(models[0])
    for files in ({"metrics.json": b"{}"}, {registry.MODEL_FILE: model, "manifest.json": b"{}"}):
        with pytest.raises(registry.RegistryError, match="needs model.skops and must not bring"):
            registry.publish(store, "v0", files, {}, promote=True)
    with pytest.raises(registry.UnknownVersion, match="'a b' is not a valid file name"):
        registry.publish(store, "v0", {registry.MODEL_FILE: model, "a b": b""}, {}, promote=True)
    manifest = registry.publish(store, "v1", {registry.MODEL_FILE: model}, {"x": 1}, promote=True)
    assert manifest == {"x": 1, "version": "v1", "promoted": True, "files": {
        registry.MODEL_FILE: {"sha256": registry.sha256_hex(model), "bytes": len(model)}}}
    assert registry.read_manifest(store, "v1") == manifest
    publish_model(store, models[1], version="v2")
    np.testing.assert_array_equal(proba(registry.load_model(store, "v1")[0]), proba(models[0]))

    assert registry.rollback(store, "v1") == {"version": "v1", "previous": "v2",
                                              "repaired": "", "manifest": manifest}
    store.write_bytes(registry.LATEST_KEY, b"{}")
    caplog.set_level(logging.INFO, logger="genreflow")
    done = registry.rollback(store, "v2")
    assert done["previous"] is None and done["repaired"].startswith(
        f"{store.location(registry.LATEST_KEY)} names no valid version")
    assert f"{done['repaired']}; the next promotion or rollback replaces it" in caplog.messages
    assert "latest -> v2 (was None)" in caplog.messages
    assert registry.read_latest(store)["manifest_sha256"] == registry.sha256_hex(
        store.read_bytes(registry.version_key("v2", registry.MANIFEST_FILE)))
    store.delete(registry.LATEST_KEY)
    assert registry.rollback(store, "v1")["repaired"] == ""


def test_verification_errors_name_the_file_and_the_champion_problem_its_kind(tmp_path, models):
    store = open_store(str(tmp_path / "store"))
    version = publish_model(store, models[0])
    manifest = registry.read_manifest(store, version)
    model_key = registry.version_key(version, registry.MODEL_FILE)
    model = store.read_bytes(model_key)
    with pytest.raises(registry.IncompleteVersion, match=f"manifest of {version} lists no x"):
        registry.verify_files(store, version, manifest, ["x"])
    store.write_bytes(model_key, b"changed")
    with pytest.raises(registry.TamperedFile, match=re.escape(
            f"{store.location(model_key)}: sha256 mismatch (the file changed after "
            "publishing); refusing it")):
        registry.verify_files(store, version, manifest)
    store.delete(model_key)
    with pytest.raises(registry.IncompleteVersion, match=re.escape(
            f"{store.location(model_key)} is missing")):
        registry.verify_files(store, version, manifest)
    with pytest.raises(registry.UntrustedModel,
                       match=r"not a skops model file \((?!NoneType)\w+: "):
        registry.check_trusted(b"changed")
    store.write_bytes(model_key, model)
    store.write_bytes(registry.version_key(version, "metrics.json"), b"changed")
    np.testing.assert_array_equal(  # loading checks the model file only
        proba(registry.load_model(store)[0]), proba(models[0]))
    with pytest.raises(registry.TamperedFile, match=f"manifest of {version} has no 'files'"):
        registry.verify_files(store, version, {})

    manifest_key = registry.version_key(version, registry.MANIFEST_FILE)
    store.write_bytes(manifest_key, store.read_bytes(manifest_key) + b"\n")
    champion = registry.read_champion(store)
    assert (champion.version, champion.manifest) == (version, None)
    assert champion.problem == (f"TamperedFile: {store.location(manifest_key)}: sha256 differs "
                                "from the one in latest.json; refusing it")
    store.write_bytes(registry.LATEST_KEY, b"[" + b"1," * 60 + b"1]")
    champion = registry.read_champion(store)
    assert (champion.version, champion.manifest) == (None, None)
    assert champion.problem.startswith(
        f"BrokenPointer: {store.location(registry.LATEST_KEY)} names no valid version "
        f"(content {(b'[' + b'1,' * 40)[:80]!r}); ")
    for data, problem in ((b"{", "is not valid JSON"), (b"{}", "has no 'files' table")):
        store.write_bytes(manifest_key, data)
        with pytest.raises(registry.TamperedFile, match=re.escape(
                f"{store.location(manifest_key)} {problem}")):
            registry.read_manifest(store, version)
    store.delete(manifest_key)
    with pytest.raises(registry.IncompleteVersion, match=re.escape(
            "(a publish that failed half-way, or the manifest was deleted): not a complete")):
        registry.read_manifest(store, version)


def test_new_versions_are_named_in_utc(monkeypatch):
    import time
    from datetime import UTC, datetime, timedelta

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: never the same hour as UTC
    time.tzset()
    try:
        before = datetime.now(UTC)
        stamp = datetime.strptime(registry.new_version()[:16], "%Y%m%dT%H%M%SZ")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert abs(stamp.replace(tzinfo=UTC) - before) < timedelta(minutes=1)


def test_only_airflows_deprecation_shims_are_set_aside():
    """skops_io hides exactly the modules whose __getattr__ is Airflow's
    getattr_with_deprecation (a functools.partial of it), nothing else."""
    import functools
    import types

    def getattr_with_deprecation(name, module):
        raise AttributeError(name)

    def other(name, module):
        raise AttributeError(name)

    shim, plain, lookalike = (types.ModuleType(n) for n in ("shim", "plain", "lookalike"))
    shim.__getattr__ = functools.partial(getattr_with_deprecation, module="shim")
    lookalike.__getattr__ = functools.partial(other, module="lookalike")
    assert registry._is_deprecation_shim(shim)
    assert not registry._is_deprecation_shim(plain)
    assert not registry._is_deprecation_shim(lookalike)
    assert not registry._is_deprecation_shim(object())
