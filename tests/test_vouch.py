"""Train only on what you can vouch for (issue 19): a file deleted from the inbox leaves
training, a file caught mid-upload is not ingested truncated, a version lists what it was
trained on, validation songs in the training data are reported."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import pandas as pd
import pytest
from test_ingest import inbox_settings, run

from genreflow import catalog, registry
from genreflow.storage import LocalStore
from genreflow.tasks import ingest


def statuses(settings) -> dict[str, str]:
    return catalog.read_catalog(LocalStore(settings.store)).set_index("source_id")[
        "status"].to_dict()


def test_a_file_deleted_from_the_inbox_leaves_training(tmp_path, short_clips, caplog):
    metal = short_clips["metal_000.wav"].read_bytes()
    settings = inbox_settings(tmp_path, short_clips, {"metal/zz_copy.wav": metal})
    first = run(settings, "r1")
    assert first["n_tracks"] == 3 and statuses(settings)["metal/zz_copy.wav"] == "duplicate"
    caplog.set_level(logging.INFO, logger="genreflow")

    LocalStore(settings.inbox).delete("classical/classical_001.wav")  # wrongly labelled
    second = run(settings, "r2")
    assert statuses(settings)["classical/classical_001.wav"] == catalog.REMOVED
    assert second["n_tracks"] == 2 and second["fingerprint"] != first["fingerprint"]
    assert "removed inbox:classical/classical_001.wav: no longer at its source" in caplog.text

    # the trained key of an audio goes, its copy under the same genre trains instead
    LocalStore(settings.inbox).delete("metal/metal_000.wav")
    third = run(settings, "r3")
    assert statuses(settings) == {
        "classical/classical_000.wav": "ok", "classical/classical_001.wav": "removed",
        "metal/metal_000.wav": "removed", "metal/zz_copy.wav": "ok"}
    assert third["n_tracks"] == 2 and third["new_tracks"] == 0


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> bytes:
    """A 9.2-s WAV: 3 segments when complete."""
    from genreflow.synth import write_corpus

    (path,) = write_corpus(tmp_path_factory.mktemp("long"), ["metal"], 1, seed=5)
    return path.read_bytes()


def segments_of(settings, key: str) -> int:
    rows = catalog.read_catalog(LocalStore(settings.store)).set_index("key")
    return int(rows.loc[key, "n_segments"])


def test_a_file_growing_between_discover_and_extract_waits_for_the_next_run(
        tmp_path, short_clips, long_clip, caplog):
    """Issue 19 item 2: 35% of a WAV in the inbox when the run started was ingested
    truncated, for good."""
    settings = inbox_settings(tmp_path, short_clips)
    path = tmp_path / "inbox" / "metal" / "upload.wav"
    path.write_bytes(long_clip[: len(long_clip) * 35 // 100])
    caplog.set_level(logging.INFO, logger="genreflow")
    batches = ingest.discover(settings, ["inbox"], 100, 10, run_id="r1")
    with path.open("ab") as fh:  # the upload goes on
        fh.write(long_clip[len(long_clip) * 35 // 100:])
    records = [ingest.extract_batch(settings, batch, "r1") for batch in batches]
    first = ingest.assemble(settings, records, "r1")
    assert "inbox:metal/upload.wav" not in statuses_by_key(settings)  # nothing recorded
    assert first["n_tracks"] == 3
    assert "metal/upload.wav: changed since discovery" in caplog.text
    assert not any(k.endswith(".wav") and len(LocalStore(settings.store).read_bytes(k))
                   < len(long_clip) * 0.9 and "upload" in k
                   for k in LocalStore(settings.store).list_keys("raw/"))

    second = run(settings, "r2")  # complete now: taken in whole
    assert segments_of(settings, "inbox:metal/upload.wav") == 3
    assert second["n_tracks"] == 4


def test_a_young_file_waits_until_it_is_older_than_the_minimum_age(tmp_path, short_clips,
                                                                  caplog):
    settings = dataclasses.replace(inbox_settings(tmp_path, short_clips), inbox_min_age=60)
    caplog.set_level(logging.INFO, logger="genreflow")
    assert ingest.discover(settings, ["inbox"], 100, 10, run_id="r1") == []
    assert "3 file(s) changed less than 60 s ago: left for a later run" in caplog.text
    past = time.time() - 120
    for path in (tmp_path / "inbox").glob("*/*.wav"):
        os.utime(path, (past, past))
    assert run(settings, "r2")["n_tracks"] == 3


def test_new_content_at_a_known_path_is_a_new_version_of_the_track(tmp_path, short_clips,
                                                                   caplog):
    settings = inbox_settings(tmp_path, short_clips)
    first = run(settings, "r1")
    old = catalog.read_catalog(LocalStore(settings.store)).set_index("key").loc[
        "inbox:metal/metal_000.wav", "sha256"]
    caplog.set_level(logging.INFO, logger="genreflow")
    replacement = short_clips["metal_001.wav"].read_bytes()
    LocalStore(settings.inbox).write_bytes("metal/metal_000.wav", replacement)

    second = run(settings, "r2")
    row = catalog.read_catalog(LocalStore(settings.store)).set_index("key").loc[
        "inbox:metal/metal_000.wav"]
    assert row["sha256"] == hashlib.sha256(replacement).hexdigest() and row["status"] == "ok"
    assert old[:16] in row["reason"]
    assert f"changed inbox:metal/metal_000.wav: new content since it was ingested as " \
           f"{old[:16]}" in caplog.text
    assert second["fingerprint"] != first["fingerprint"] and second["n_tracks"] == 3
    trained = set(LocalStore(settings.store).read_frame(second["snapshot_key"])["track_id"])
    assert old[:16] not in trained and row["track_id"] in trained

    os.utime(tmp_path / "inbox" / "metal" / "metal_000.wav")  # touched, same content
    third = run(settings, "r3")
    assert third["fingerprint"] == second["fingerprint"]
    assert statuses(settings)["metal/metal_000.wav"] == "ok"


def statuses_by_key(settings) -> dict[str, str]:
    return catalog.read_catalog(LocalStore(settings.store)).set_index("key")[
        "status"].to_dict()


def publish_trained(settings, snapshot: dict, run_id: str) -> str:
    """train (the real step) and publish the result; the version."""
    from genreflow.tasks import release, training

    trained = training.train(settings, snapshot, run_id)
    metrics = {"roc_auc_ovo": 0.9, "song_accuracy": 1.0, "valid_sha256": "v", "per_genre": {}}
    decision = {"promote": True, "reason": "test", "champion": None}
    return release.publish(settings, snapshot, trained, metrics, decision, run_id)["version"]


def licences(capsys, settings, version: str) -> dict:
    from test_cli import run as cli

    code, out, _ = cli(capsys, "licences", "--store", settings.store, "--version", version,
                       "--json")
    assert code == 0
    return json.loads(out)


def test_licences_list_what_the_version_was_trained_on(tmp_path, short_clips, capsys,
                                                       caplog):
    """Issue 19 item 4: a track removed after training vanished from the version's list."""
    settings = inbox_settings(tmp_path, short_clips)
    version = publish_trained(settings, run(settings, "r1"), "r1")
    before = licences(capsys, settings, version)["tracks"]
    assert len(before) == 3
    assert registry.TRACKS_FILE in registry.read_manifest(LocalStore(settings.store),
                                                          version)["files"]

    LocalStore(settings.inbox).delete("classical/classical_001.wav")
    assert run(settings, "r2")["n_tracks"] == 2
    assert licences(capsys, settings, version)["tracks"] == before
    assert {row["source"] for row in before} == {"inbox"}

    caplog.set_level(logging.WARNING, logger="genreflow")  # a version from before the record
    store = LocalStore(settings.store)
    old = registry.new_version()
    registry.publish(store, old, {registry.MODEL_FILE: store.read_bytes(
        registry.version_key(version, registry.MODEL_FILE))},
        {"snapshot_key": registry.read_manifest(store, version)["snapshot_key"]},
        promote=False)
    assert len(licences(capsys, settings, old)["tracks"]) == 3
    assert f"version {old} has no record of its training tracks" in caplog.text


def test_a_validation_song_in_the_training_data_is_reported(tmp_path, short_clips, capsys,
                                                            monkeypatch, genres_config):
    """Issue 19 item 6: a clip of valid.csv dropped into the inbox trained silently and
    inflated every later gate."""
    from test_cli import run as cli

    from genreflow.checks import CheckFailed
    from genreflow.synth import write_corpus
    from genreflow.tasks import training

    monkeypatch.setenv("GENREFLOW_CONFIG", str(genres_config))
    held_out = write_corpus(tmp_path / "valid-audio", ["classical", "metal"], 1, seconds=3.2,
                            seed=9, prefix="valid_")
    valid_csv = tmp_path / "valid.csv"
    assert cli(capsys, "valid-table", str(tmp_path / "valid-audio"), "-o", str(valid_csv))[0] == 0
    table = pd.read_csv(valid_csv)
    assert dict(zip(table["track_id"], table["audio_sha256"], strict=True)) == {
        f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in held_out}

    leaked = held_out[0]  # classical/valid_classical_000.wav, dropped into the inbox
    settings = dataclasses.replace(
        inbox_settings(tmp_path, short_clips, {"classical/new.wav": leaked.read_bytes()}),
        valid_csv=str(valid_csv))
    snapshot = run(settings, "r1")
    policy = tmp_path / "include" / "checks.toml"  # a tiny inbox: too few tracks is fine
    policy.parent.mkdir()
    policy.write_text("[checks]\nfail_on = []\n")
    checked = training.check(settings, snapshot, "r1")
    report = LocalStore(settings.store).read_json(checked["report_key"])
    assert report["validation_overlap"] == {"checked": True, "songs": [
        {"valid_track_id": "classical/valid_classical_000.wav",
         "key": "inbox:classical/new.wav", "genre": "classical",
         "sha256": hashlib.sha256(leaked.read_bytes()).hexdigest()}]}
    assert any("1 song(s) of valid.csv are in the training snapshot" in w
               for w in checked["warnings"])

    policy.write_text('[checks]\nfail_on = ["validation_leak"]\n')
    with pytest.raises(CheckFailed, match="inbox:classical/new.wav"):
        training.check(settings, snapshot, "r2")
