"""JamendoSource against a local fake Jamendo: real HTTP, recorded-shape JSON, real audio.

No test here can reach a real host: the API URL comes from the config (the fake's), and
the ``loopback_only`` guard fails any connection to an address other than 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
import requests
from jamendo_api import CLIENT_ID, TRACKS_PATH, FakeJamendo, Reply, failed_document

from genreflow import catalog
from genreflow.config import JamendoConfig, Settings
from genreflow.retry import RetryPolicy
from genreflow.sources.base import FetchError, SourceUnavailable
from genreflow.sources.jamendo import (
    NO_DOWNLOAD,
    JamendoAuthError,
    JamendoSource,
    credentials,
    licence_terms,
)
from genreflow.storage import LocalStore
from genreflow.synth import write_corpus
from genreflow.tasks import ingest

TAGS = {"classical": ["classical"], "metal": ["metal", "heavymetal"],
        "electronic": ["electronic"]}
CLASSICAL = ["1900001", "1900002", "1900003", "1900005"]  # newest first, download allowed
NO_DL, ND_LICENCE, AMBIGUOUS, MISSING_AUDIO = "1900004", "1900003", "1900013", "1900024"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to a real host fails the test instead of leaving the machine."""
    connect = socket.socket.connect

    def guarded(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to connect to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def fake():
    with FakeJamendo() as server:
        yield server


@pytest.fixture
def make_source(fake, sleeps):
    def make(client_id=CLIENT_ID, **config):
        settings = JamendoConfig(**({"tags": TAGS, "api_url": fake.api_url} | config))
        policy = RetryPolicy(retries=2, backoff_factor=0.25, max_retry_after=5.0,
                             rate_limit_retries=2, sleep=sleeps.append)
        return JamendoSource(settings, client_id, page_size=2, requests_timeout=2.0,
                             download_timeout=2.0, policy=policy,
                             genres=("classical", "metal", "electronic"))

    return make


def page_target(fake, tag: str, offset: int, limit: int = 2, match: str = "tags") -> str:
    """The path?query the source sends for one page, to script a fault on exactly it."""
    params = {"client_id": CLIENT_ID, "format": "json", "limit": limit, "offset": offset,
              match: tag, "include": "musicinfo licenses", "audiodlformat": "mp32",
              "order": "releasedate_desc"}
    url = requests.Request("GET", fake.api_url + "tracks/", params=params).prepare().url
    return url.removeprefix(fake.base_url)


def by_id(found):
    return {r["source_id"]: r for r in found.rejected}


def ids(found, genre=None):
    return [t.source_id for t in found.tracks if genre in (None, t.genre)]


def test_two_pages_newest_first_with_the_documented_parameters(fake, make_source):
    found = make_source().discover()

    pages = [r.query for r in fake.requests_to(TRACKS_PATH) if r.query.get("tags") == "classical"]
    assert [q["offset"] for q in pages] == ["0", "2", "4"]  # 2 + 2 + 1 tracks
    assert pages[0] == {
        "client_id": CLIENT_ID, "format": "json", "limit": "2", "offset": "0",
        "tags": "classical", "include": "musicinfo licenses", "audiodlformat": "mp32",
        "order": "releasedate_desc",
    }
    assert ids(found, "classical") == CLASSICAL
    nocturne = found.tracks[0]
    assert nocturne.name == "Nocturne for Quiet Rooms"
    assert nocturne.meta["artist"] == "Elena Varga"
    assert nocturne.meta["licence_url"] == "http://creativecommons.org/licenses/by-sa/3.0/"
    assert nocturne.meta["source_url"] == "https://www.jamendo.com/track/1900001"
    assert nocturne.meta["audiodownload"] == f"{fake.base_url}/download/track/1900001/mp32/"
    # both tags of metal are listed; every track appears once
    assert ids(found, "metal") == ["1900011", "1900014", "1900012"]
    assert ids(found, "electronic") == ["1900021", "1900022", "1900023", "1900024"]


def test_track_without_download_permission_is_recorded_not_fetched(make_source):
    found = make_source().discover()

    assert NO_DL not in ids(found)
    rejected = by_id(found)[NO_DL]
    assert rejected["reason"] == NO_DOWNLOAD and rejected["genre"] == "classical"
    assert rejected["licence_url"] == "http://creativecommons.org/licenses/by-nc-sa/3.0/"
    assert rejected["source_url"] == "https://www.jamendo.com/track/1900004"
    assert all(isinstance(v, str) for r in found.rejected for v in r.values())


def test_licence_excluded_by_config(make_source):
    assert ND_LICENCE in ids(make_source().discover())

    found = make_source(exclude_licence_terms=("nd",)).discover()

    assert ND_LICENCE not in ids(found)
    assert by_id(found)[ND_LICENCE]["reason"] == (
        "licence by-nc-nd excluded by config (exclude_licence_terms: nd)")
    assert licence_terms("http://creativecommons.org/licenses/by-nc-sa/3.0/us/") == (
        "by", "nc", "sa")
    assert licence_terms("https://example.com/all-rights-reserved") == ()


def test_track_tagged_with_two_configured_genres_is_skipped(make_source):
    found = make_source().discover()

    assert AMBIGUOUS not in ids(found)
    reason = by_id(found)[AMBIGUOUS]["reason"]
    assert reason.startswith("ambiguous: tagged as electronic and metal")
    assert [r["source_id"] for r in found.rejected].count(AMBIGUOUS) == 1


def test_track_listed_under_two_genres_is_withdrawn(fake, make_source):
    """Jamendo's tag search also matches tags outside musicinfo's genres (here a vartag):
    a candidate of one genre listed again under another is withdrawn as ambiguous."""
    iron_tide = next(t for t in fake.tracks if t["id"] == "1900011")
    iron_tide["musicinfo"]["tags"]["vartags"] = ["electronic"]

    found = make_source().discover()

    assert "1900011" not in ids(found)
    assert by_id(found)["1900011"]["reason"] == (
        "ambiguous: listed under the tags of metal and electronic")


def test_server_error_then_ok_is_retried(fake, make_source, sleeps):
    fake.script(page_target(fake, "classical", 2), Reply(500), Reply(503))

    found = make_source().discover()

    assert sleeps == [0.25, 0.5]
    assert ids(found, "classical") == CLASSICAL
    assert not any(r["source_id"].startswith("genre:") for r in found.rejected)


def test_permanent_server_error_skips_the_genre_only(fake, make_source, sleeps):
    fake.always(page_target(fake, "classical", 2), Reply(500, failed_document(1, "boom")))

    found = make_source().discover()

    assert len(fake.requests_to(TRACKS_PATH)) >= 3
    reason = by_id(found)["genre:classical"]["reason"]
    assert reason == "skipped after 2 tracks: HTTP 500 (gave up after 3 attempts)"
    assert ids(found, "classical") == CLASSICAL[:2]  # the first page is kept
    assert ids(found, "electronic") and ids(found, "metal")


def test_timeout_is_retried(fake, make_source, sleeps):
    fake.script(page_target(fake, "metal", 0), Reply(delay=3.0))

    started = time.monotonic()
    found = make_source().discover()

    assert time.monotonic() - started < 10
    assert sleeps == [0.25]
    assert "1900011" in ids(found)


def test_rate_limit_waits_retry_after_then_continues(fake, make_source, sleeps):
    fake.script(page_target(fake, "electronic", 0), Reply(429, headers={"Retry-After": "3"}))
    fake.script(page_target(fake, "metal", 0), Reply(body=failed_document(6, "slow down")))

    found = make_source().discover()

    assert sleeps == [1.0, 3.0]  # code 6 without Retry-After: 1 s; the 429 asked for 3
    assert "1900021" in ids(found) and "1900011" in ids(found)


def test_rate_limit_beyond_the_bound_skips_the_genre_without_waiting(fake, make_source,
                                                                      sleeps):
    fake.always(page_target(fake, "electronic", 0),
                Reply(429, failed_document(6, "slow down"), {"Retry-After": "3600"}))

    found = make_source().discover()

    assert sleeps == []
    reason = by_id(found)["genre:electronic"]["reason"]
    assert reason == ("skipped after 0 tracks: rate limited (Rate Limit Exceeded: slow down): "
                      "Retry-After 3600 s exceeds max_retry_after 5 s")
    assert ids(found, "classical") == CLASSICAL


@pytest.mark.parametrize("status", [200, 401])
def test_invalid_client_id_fails_fast(status, sleeps):
    with FakeJamendo(invalid_client_status=status) as fake:
        source = JamendoSource(JamendoConfig(tags=TAGS, api_url=fake.api_url), "not-my-app",
                               policy=RetryPolicy(sleep=sleeps.append))
        started = time.monotonic()
        with pytest.raises(JamendoAuthError, match="refused the client id \\(code 5") as raised:
            source.discover()

        assert "JAMENDO_CLIENT_ID" in str(raised.value)
        assert time.monotonic() - started < 2
        assert len(fake.requests) == 1 and sleeps == []


def test_request_budget_stops_the_run_before_its_share(fake, make_source, caplog):
    caplog.set_level(logging.INFO, logger="genreflow.sources.jamendo")
    source = make_source(monthly_requests=100, run_share=0.04)  # 4 requests per run

    found = source.discover()

    assert len(fake.requests_to(TRACKS_PATH)) == 4 == source.requests_made
    assert ids(found) == [*CLASSICAL, "1900011"]  # 3 classical pages, then one of metal
    budget = "request budget of this run used up (4 of 4: run_share 0.04 of 100 a month)"
    assert by_id(found)["genre:metal"]["reason"] == f"skipped after 2 tracks: {budget}"
    assert by_id(found)["genre:electronic"]["reason"] == f"skipped after 0 tracks: {budget}"
    assert "4 of this run's 4 API requests used" in caplog.text


def test_cap_counts_only_tracks_the_catalog_has_not_seen(fake, make_source):
    capped = make_source(per_genre_cap=2).discover()
    assert ids(capped, "classical") == CLASSICAL[:2]
    classical = [r for r in fake.requests_to(TRACKS_PATH) if r.query["tags"] == "classical"]
    assert len(classical) == 1  # the cap was reached on the first page's last track

    source = make_source(per_genre_cap=2)
    source.known = frozenset({"jamendo:1900001", "jamendo:1900002"})
    assert ids(source.discover(), "classical") == CLASSICAL  # 2 known + 2 new


def test_fetch_downloads_audio_in_the_configured_format(fake, make_source):
    fake.audio["1900001"] = b"fLaC" + b"\x00" * 64
    source = make_source(audio_format="flac")
    ref = source.discover().tracks[0]

    assert ref.meta["audiodownload"].endswith("/download/track/1900001/flac/")
    assert source.fetch(ref) == fake.audio["1900001"]


def test_audio_404_is_the_tracks_failure_and_5xx_the_servers(fake, make_source):
    source = make_source()
    ref = next(t for t in source.discover().tracks if t.source_id == MISSING_AUDIO)

    with pytest.raises(FetchError, match="audio download returned HTTP 404"):
        source.fetch(ref)
    fake.script(f"/download/track/{MISSING_AUDIO}/mp32/", Reply(502))
    with pytest.raises(SourceUnavailable, match="audio server answered HTTP 502"):
        source.fetch(ref)


def test_credentials_from_env_or_an_airflow_connection(monkeypatch):
    with pytest.raises(JamendoAuthError, match="JAMENDO_CLIENT_ID"):
        credentials({})
    assert credentials({"JAMENDO_CLIENT_ID": "abc"}) == "abc"
    monkeypatch.setenv("AIRFLOW_CONN_GF_JAMENDO",
                       json.dumps({"conn_type": "generic", "login": "from-conn"}))
    assert credentials({"GENREFLOW_JAMENDO_CONN_ID": "gf_jamendo",
                        "JAMENDO_CLIENT_ID": "abc"}) == "from-conn"
    with pytest.raises(JamendoAuthError, match="gf_missing: no such Airflow connection"):
        credentials({"GENREFLOW_JAMENDO_CONN_ID": "gf_missing"})


def test_config_is_validated():
    with pytest.raises(ValueError, match="exclude_licence_terms: 'cc0'.*audio_format 'wav'"):
        JamendoConfig.from_toml({"tags": TAGS, "audio_format": "wav",
                                 "exclude_licence_terms": ["cc0"]}, "genreflow.toml")
    with pytest.raises(ValueError, match="non-empty lists of tags"):
        JamendoConfig.from_toml({"tags": {"jazz": []}}, "genreflow.toml")
    config = JamendoConfig.from_toml({"tags": TAGS, "run_share": 0.1}, "genreflow.toml")
    assert config.max_requests == 3500 and config.tag_match == "tags"


def jamendo_settings(tmp_path, fake, **config) -> Settings:
    jamendo = JamendoConfig(tags=TAGS, api_url=fake.api_url, **config)
    return Settings(home=tmp_path, store=str(tmp_path / "store"), inbox="", valid_csv="",
                    genres=("classical", "metal", "electronic"), workers=1, jamendo=jamendo)


def test_ingest_records_licences_and_never_fetches_a_track_twice(
    tmp_path, fake, short_clips, monkeypatch
):
    """Through the ingest steps: candidates fetched lazily in extract, stored under raw/,
    the catalog carrying licence and source URL. With a cap of 2 per genre the second run
    takes the next tracks of each genre; the third finds nothing new and downloads nothing."""
    monkeypatch.setenv("JAMENDO_CLIENT_ID", CLIENT_ID)
    monkeypatch.delenv("GENREFLOW_JAMENDO_CONN_ID", raising=False)
    fake.audio["1900001"] = short_clips["classical_000.wav"].read_bytes()
    fake.audio["1900002"] = short_clips["classical_001.wav"].read_bytes()
    fake.audio["1900011"] = short_clips["metal_000.wav"].read_bytes()
    fake.audio["1900014"] = short_clips["metal_001.wav"].read_bytes()
    fake.audio["1900012"] = short_clips["classical_001.wav"].read_bytes()  # same audio, metal
    for track_id, path in zip(["1900021", "1900022", "1900023"], write_corpus(
            tmp_path / "clips", ["electronic"], 3, seconds=3.2, seed=5), strict=True):
        fake.audio[track_id] = path.read_bytes()
    settings = jamendo_settings(tmp_path, fake, exclude_licence_terms=("nd",), per_genre_cap=2)
    store = LocalStore(settings.store)

    batches = ingest.discover(settings, ["jamendo"], 100, 10, run_id="r1")
    assert fake.downloads() == []  # discovery lists; audio is fetched in extract
    keys = [r["source_id"] for b in batches for r in b]
    assert keys == ["1900001", "1900002", "1900011", "1900014", "1900021", "1900022"]
    records = ingest.extract_batch(settings, batches[0], "r1")
    ingest.assemble(settings, [records], "r1")

    table = catalog.read_catalog(store).set_index("key")
    nocturne = table.loc["jamendo:1900001"]
    assert (nocturne["status"], nocturne["genre"], nocturne["title"], nocturne["artist"]) == (
        catalog.OK, "classical", "Nocturne for Quiet Rooms", "Elena Varga")
    assert nocturne["licence_url"] == "http://creativecommons.org/licenses/by-sa/3.0/"
    assert nocturne["source_url"] == "https://www.jamendo.com/track/1900001"
    assert store.read_bytes(nocturne["raw_key"]) == fake.audio["1900001"]
    assert (table["status"] == catalog.OK).sum() == 6
    assert table.loc[f"jamendo:{AMBIGUOUS}", "status"] == catalog.REJECTED
    downloads = len(fake.downloads())
    assert downloads == 6

    # next week: the cap now reaches the next tracks of each genre; one of them is audio
    # already known under another genre (a label conflict, by sha256), and nothing that
    # was fetched before is fetched again
    again = ingest.discover(settings, ["jamendo"], 100, 10, run_id="r2")
    assert [r["source_id"] for b in again for r in b] == ["1900005", "1900012", "1900023",
                                                         "1900024"]
    ingest.assemble(settings, [ingest.extract_batch(settings, again[0], "r2")], "r2")
    table = catalog.read_catalog(store).set_index("key")
    assert table.loc["jamendo:1900012", "status"] == catalog.CONFLICT
    assert table.loc[f"jamendo:{MISSING_AUDIO}", "status"] == catalog.FAILED
    assert "audio download returned HTTP 404" in table.loc[f"jamendo:{MISSING_AUDIO}", "reason"]
    assert table.loc[f"jamendo:{ND_LICENCE}", "status"] == catalog.REJECTED
    assert table.loc[f"jamendo:{NO_DL}", "source_url"] == "https://www.jamendo.com/track/1900004"
    assert len(fake.downloads()) == downloads + 4
    paths = [r.path for r in fake.downloads()]
    assert len(set(paths)) == len(paths)  # no track downloaded twice

    third = ingest.discover(settings, ["jamendo"], 100, 10, run_id="r3")
    assert third == [] and len(fake.downloads()) == downloads + 4


def test_catalog_from_before_the_licence_columns_still_reads(tmp_path):
    store = LocalStore(tmp_path / "store")
    old_columns = [c for c in catalog.COLUMNS if c not in catalog.TRACK_META]
    old = catalog.read_catalog(store)[old_columns]
    row = dict.fromkeys(old_columns, "x") | {"key": "inbox:rock/a.wav", "n_segments": 1}
    old.loc[0] = row
    catalog.write_catalog(store, old, None)

    table = catalog.read_catalog(store)
    assert list(table.columns) == catalog.COLUMNS
    assert table.loc[0, "licence_url"] == "" and table.loc[0, "key"] == "inbox:rock/a.wav"
    merged = catalog.merge_records(table, [dict.fromkeys(catalog.COLUMNS, "")
                                           | {"key": "jamendo:1", "licence_url": "u"}])
    assert merged.set_index("key").loc["jamendo:1", "licence_url"] == "u"

