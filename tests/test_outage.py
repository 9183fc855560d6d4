"""An S3 outage during extract (real HTTP: moto behind a proxy that cuts connections) is
the store's fault, never a track's: retried briefly, then the task fails for Airflow to
retry, and the retry reuses the features stored before the outage."""

from __future__ import annotations

import logging
from urllib.parse import urlparse

import pytest
from conftest import TEST_GENRES
from faulty_proxy import FaultyProxy

from genreflow import catalog, extraction
from genreflow.config import Settings
from genreflow.errors import PermanentError
from genreflow.storage import StoreError, open_store
from genreflow.tasks import ingest

pytestmark = pytest.mark.outage


@pytest.fixture
def proxy(s3_endpoint, s3_bucket, monkeypatch):
    """The moto server behind a FaultyProxy, which is what the store under test talks to."""
    target = urlparse(s3_endpoint)
    with FaultyProxy(target.hostname, target.port) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        yield server


@pytest.fixture
def s3_settings(tmp_path, short_clips, s3_bucket, proxy) -> Settings:
    """Inbox and store on S3 (through the proxy), four tracks in the inbox."""
    bucket, _ = s3_bucket
    inbox = open_store(f"s3://{bucket}/inbox")
    for name, path in sorted(short_clips.items()):
        inbox.write_bytes(f"{name.split('_')[0]}/{name}", path.read_bytes())
    return Settings(home=tmp_path, store=f"s3://{bucket}/store", inbox=f"s3://{bucket}/inbox",
                    valid_csv="", genres=TEST_GENRES, workers=1)


def extract_with_outage(monkeypatch, proxy: FaultyProxy, after: int, seconds: float | None,
                        extracted: list[str]) -> None:
    """Spy on the real extractor: note each track handed to it, and cut the store off
    once, when ``after`` tracks have been extracted and stored."""
    real = extraction.extract_many

    def spy(jobs, workers=1, sets=("librosa",)):
        noted = ((extracted.append(key) or key, data) for key, data in jobs)
        for result in real(noted, workers, sets):
            yield result  # the caller stores this track before asking for the next
            if len(extracted) == after:
                proxy.down(seconds)

    monkeypatch.setattr(extraction, "extract_many", spy)


def test_outage_fails_the_task_and_the_retry_reuses_stored_features(s3_settings, proxy,
                                                                    monkeypatch, caplog):
    (batch,) = ingest.discover(s3_settings, ["inbox"], 100, 10, run_id="r1")
    assert len(batch) == 4
    extracted: list[str] = []
    extract_with_outage(monkeypatch, proxy, after=2, seconds=None, extracted=extracted)
    caplog.set_level(logging.INFO, logger="genreflow")

    with pytest.raises(StoreError, match="S3 get .*inbox/metal/metal_000.wav failed") as failed:
        ingest.extract_batch(s3_settings, batch, "r1")
    assert not isinstance(failed.value, PermanentError)  # so Airflow retries the task
    assert proxy.refused > 0
    assert "fetch inbox:metal/metal_000.wav: S3 get" in caplog.text
    assert "attempt 3 of 4" in caplog.text
    assert len(extracted) == 2

    proxy.up()  # the outage is over: Airflow's retry of the same mapped task
    caplog.clear()
    records = ingest.extract_batch(s3_settings, batch, "r1")
    assert [r["status"] for r in records] == [catalog.OK] * 4
    assert extracted[2:] == ["inbox:metal/metal_000.wav", "inbox:metal/metal_001.wav"]
    assert "4 tracks in, 2 extracted, 2 reused from an earlier try: 4 ok, 0 failed" \
        in caplog.text
    snapshot = ingest.assemble(s3_settings, [records], "r1")

    table = catalog.read_catalog(open_store(s3_settings.store))
    assert table["status"].tolist() == [catalog.OK] * 4 and set(table["reason"]) == {""}
    assert snapshot["n_tracks"] == 4 and snapshot["n_segments"] == 4
    assert ingest.discover(s3_settings, ["inbox"], 100, 10, run_id="r2") == []


def test_short_outage_is_absorbed_by_the_retries(s3_settings, proxy, monkeypatch):
    (batch,) = ingest.discover(s3_settings, ["inbox"], 100, 10, run_id="r1")
    extracted: list[str] = []
    extract_with_outage(monkeypatch, proxy, after=1, seconds=1.0, extracted=extracted)

    records = ingest.extract_batch(s3_settings, batch, "r1")

    assert proxy.refused > 0
    assert [r["status"] for r in records] == [catalog.OK] * 4
    assert len(extracted) == 4
