"""Whether a run trains at all (genreflow.gate): the champion's manifest against today's
snapshot, and what the task log says about it. The promotion decision itself is tested
in test_registry.py against real stores."""

from __future__ import annotations

import logging

import pytest

from genreflow import gate

SNAPSHOT = {"fingerprint": "new-fp", "snapshot_key": "snapshots/new-fp.parquet"}


def champion(fingerprint: str, key: str | None = "snapshots/old-fp.parquet") -> dict:
    manifest = {"version": "20261206T030000Z-abc123", "snapshot_fingerprint": fingerprint}
    return manifest if key is None else {**manifest, "snapshot_key": key}


@pytest.fixture
def log(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="genreflow.gate")
    return caplog


def test_no_champion_trains_the_first_model(log):
    assert gate.needs_training(None, SNAPSHOT, retrain_unchanged=False) is True
    assert log.messages == ["no champion yet: training the first model on snapshot new-fp"]


def test_new_data_since_the_champion_trains(log):
    assert gate.needs_training(champion("old-fp"), SNAPSHOT, retrain_unchanged=False) is True
    assert log.messages == [
        "new data since champion 20261206T030000Z-abc123 (snapshot old-fp -> new-fp): training"]


def test_the_champions_own_snapshot_is_not_trained_on_again(log):
    assert gate.needs_training(champion("new-fp"), SNAPSHOT, retrain_unchanged=False) is False
    assert log.messages == [
        "no new data: champion 20261206T030000Z-abc123 was trained on snapshot new-fp "
        "already; nothing to retrain (set retrain_unchanged to force)"]


def test_retrain_unchanged_trains_on_the_champions_snapshot_and_says_so(log):
    assert gate.needs_training(champion("new-fp"), SNAPSHOT, retrain_unchanged=True) is True
    assert log.messages == [
        "same snapshot as champion 20261206T030000Z-abc123; retraining as asked"]


def test_a_champion_from_before_snapshots_were_recorded_means_new_data(log):
    legacy = {"version": "20250101T000000Z-000000"}
    assert gate.needs_training(legacy, SNAPSHOT, retrain_unchanged=False) is True
    assert log.messages == [
        "new data since champion 20250101T000000Z-000000 (snapshot None -> new-fp): training"]


@pytest.mark.parametrize(("manifest", "expected"), [
    (None, None),
    (champion("old-fp"), "snapshots/old-fp.parquet"),
    (champion("new-fp", key=SNAPSHOT["snapshot_key"]), None),
    (champion("old-fp", key=None), None),
    (champion("old-fp", key=""), None),
], ids=["no champion", "another snapshot", "this snapshot", "no key recorded", "empty key"])
def test_previous_snapshot_is_the_champions_unless_it_is_todays(manifest, expected):
    assert gate.previous_snapshot_key(manifest, SNAPSHOT) == expected
