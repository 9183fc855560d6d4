"""SpotifySource against a local fake Spotify: spotipy really speaks HTTP, faults are scripted."""

from __future__ import annotations

import base64
import io
import logging
import time
import wave

import pytest
from spotify_api import CLIENT_ID, CLIENT_SECRET, FakeSpotify, Reply

from genreflow.retry import RetryPolicy
from genreflow.sources.base import FetchError, SourceUnavailable, TrackRef
from genreflow.sources.spotify import (
    NO_PREVIEW,
    SpotifyAuthError,
    SpotifySource,
    credentials_from_env,
)

JAZZ = "1gfJazzClassicsTest001"
ROCK = "2gfRockAnthemsTest0002"
JAZZ_ITEMS = f"/v1/playlists/{JAZZ}/items"
JAZZ_PAGE_2 = f"{JAZZ_ITEMS}?offset=3&limit=3&additional_types=track"
SO_WHAT, TAKE_FIVE = "4vLYewWIvqHfKtJDk8c8tq", "1YQWosTIljIvxAgHWTp7KP"
BLUE_IN_GREEN, PARANOID = "0aWMVrwxPNYkKmFthzmpRi", "1jzDzZWeSDBg5fhNc3tczV"
SMOKE = "5SAUIWdZ04OxYfJFDchC7S"


@pytest.fixture
def fake():
    with FakeSpotify() as server:
        yield server


@pytest.fixture
def make_source(fake, sleeps):
    def make(**kwargs):
        settings = {
            "playlists": {"jazz": [JAZZ], "rock": [ROCK]},
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "api_prefix": fake.api_prefix,
            "token_url": fake.token_url,
            "requests_timeout": 2.0,
            "preview_timeout": 2.0,
            "policy": RetryPolicy(retries=2, backoff_factor=0.25, max_retry_after=5.0,
                                  rate_limit_retries=2, sleep=sleeps.append),
        } | kwargs
        return SpotifySource(**settings)

    return make


def wav_bytes() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(b"\x00\x01" * 2205)
    return buffer.getvalue()


def rejected_by_id(found):
    return {r["source_id"]: r for r in found.rejected}


def test_token_endpoint_used_with_client_credentials(fake, make_source):
    make_source().discover()

    (token_request,) = fake.requests_to("/api/token", "POST")
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_request.headers["Authorization"] == f"Basic {expected}"
    assert "grant_type=client_credentials" in token_request.body
    assert {r.bearer for r in fake.api_requests} == {fake.tokens_issued[0]}


def test_pages_followed_and_tracks_sorted(fake, make_source, caplog):
    caplog.set_level(logging.INFO, logger="genreflow.sources.spotify")

    found = make_source().discover()

    assert [r.query["offset"] for r in fake.requests_to(JAZZ_ITEMS)] == ["0", "3"]
    assert [(t.genre, t.source_id) for t in found.tracks] == [
        ("jazz", SO_WHAT), ("jazz", BLUE_IN_GREEN), ("rock", PARANOID),
    ]
    so_what = found.tracks[0]
    assert so_what.source == "spotify" and so_what.name == "So What"
    assert so_what.meta["artists"] == ["Miles Davis"]
    assert so_what.meta["popularity"] == 71
    assert so_what.meta["preview_url"].startswith(f"{fake.base_url}/mp3-preview/")
    assert found.tracks[2].meta["popularity"] is None  # withheld since 2026-02

    rejected = rejected_by_id(found)
    assert set(rejected) == {TAKE_FIVE, SMOKE, SO_WHAT}  # local and null entries only counted
    assert rejected[TAKE_FIVE]["reason"] == NO_PREVIEW
    assert rejected[TAKE_FIVE]["artists"] == "The Dave Brubeck Quartet"
    assert rejected[TAKE_FIVE]["popularity"] == "78"
    assert rejected[SO_WHAT]["reason"].startswith(f"duplicate in playlist {ROCK}")
    assert rejected[SO_WHAT]["genre"] == "rock"
    assert all(isinstance(v, str) for r in found.rejected for v in r.values())

    log = caplog.text
    assert f"playlist {JAZZ} (jazz): 5 items, 2 candidates, 1 without preview_url, " \
           "0 duplicates, 2 local/unavailable skipped" in log
    assert "spotify: 2 playlists (0 skipped), 8 items, 3 candidates, 2 without preview_url, " \
           "1 duplicates, 2 local/unavailable skipped" in log


def test_fetch_downloads_preview(fake, make_source):
    audio = wav_bytes()
    fake.previews["5a1c0f4cbd2e1f0b9a1d"] = audio
    source = make_source()
    ref = TrackRef.from_dict(source.discover().tracks[0].to_dict())

    assert source.fetch(ref) == audio


def test_fetch_preview_404_is_fetch_error(fake, make_source):
    source = make_source()
    ref = source.discover().tracks[0]

    with pytest.raises(FetchError, match="HTTP 404"):
        source.fetch(ref)
    with pytest.raises(FetchError, match="no preview_url"):
        source.fetch(TrackRef("spotify", TAKE_FIVE, "jazz"))


def test_preview_server_error_is_the_source_not_the_track(fake, make_source):
    """A 5xx is the preview server's fault: SourceUnavailable (retried, then the task
    fails), never a FetchError that would record the track as failed."""
    audio = wav_bytes()
    fake.previews["5a1c0f4cbd2e1f0b9a1d"] = audio
    fake.script("/mp3-preview/5a1c0f4cbd2e1f0b9a1d", Reply(503))
    source = make_source()
    ref = source.discover().tracks[0]

    with pytest.raises(SourceUnavailable, match="preview server answered HTTP 503"):
        source.fetch(ref)
    assert source.fetch(ref) == audio


def test_rate_limit_waits_retry_after_then_continues(fake, make_source, sleeps):
    fake.script(JAZZ_PAGE_2, Reply(429, headers={"Retry-After": "3"}))

    found = make_source().discover()

    assert sleeps == [3.0]
    assert len(fake.requests_to(JAZZ_ITEMS)) == 3
    assert BLUE_IN_GREEN in {t.source_id for t in found.tracks}
    assert not any(r["source_id"].startswith("playlist:") for r in found.rejected)


def test_rate_limit_longer_than_bound_skips_without_waiting(fake, make_source, sleeps):
    fake.script(JAZZ_PAGE_2, Reply(429, headers={"Retry-After": "3600"}))

    found = make_source().discover()

    assert sleeps == []
    reason = rejected_by_id(found)[f"playlist:{JAZZ}"]["reason"]
    assert "Retry-After 3600 s exceeds max_retry_after 5 s" in reason
    assert "skipped after 3 items" in reason
    assert {t.source_id for t in found.tracks} == {SO_WHAT, PARANOID}  # page 1 kept


def test_persistent_rate_limit_is_bounded(fake, make_source, sleeps):
    fake.always(JAZZ_ITEMS, Reply(429, headers={"Retry-After": "1"}))

    found = make_source().discover()

    assert sleeps == [1.0, 1.0]
    assert len(fake.requests_to(JAZZ_ITEMS)) == 3
    assert "rate limited 3 times" in rejected_by_id(found)[f"playlist:{JAZZ}"]["reason"]


def test_server_error_retried_with_backoff(fake, make_source, sleeps):
    fake.script(JAZZ_ITEMS, Reply(500), Reply(503))

    found = make_source().discover()

    assert sleeps == [0.25, 0.5]
    assert {t.source_id for t in found.tracks} == {SO_WHAT, BLUE_IN_GREEN, PARANOID}


def test_permanent_server_error_skips_playlist_only(fake, make_source, sleeps):
    fake.always(JAZZ_ITEMS, Reply(500))

    found = make_source().discover()

    assert len(fake.requests_to(JAZZ_ITEMS)) == 3  # retries=2
    reason = rejected_by_id(found)[f"playlist:{JAZZ}"]["reason"]
    assert "HTTP 500 (gave up after 3 attempts)" in reason
    assert [t.source_id for t in found.tracks] == [PARANOID, SO_WHAT]  # no longer a duplicate


def test_timeout_retried(fake, make_source, sleeps):
    fake.script(JAZZ_PAGE_2, Reply(delay=1.0))

    started = time.monotonic()
    found = make_source(requests_timeout=0.3).discover()

    assert time.monotonic() - started < 5
    assert sleeps == [0.25]
    assert BLUE_IN_GREEN in {t.source_id for t in found.tracks}


def test_missing_playlist_skipped_without_retry(fake, make_source, sleeps):
    found = make_source(playlists={"jazz": ["0gfNoSuchPlaylist00000", JAZZ]}).discover()

    assert sleeps == []
    assert "HTTP 404: Resource not found" in rejected_by_id(found)[
        "playlist:0gfNoSuchPlaylist00000"
    ]["reason"]
    assert len(found.tracks) == 2


def test_unknown_genre_playlist_rejected(fake, make_source):
    found = make_source(genres=["jazz"]).discover()

    assert "unknown genre 'rock'" in rejected_by_id(found)[f"playlist:{ROCK}"]["reason"]
    assert not fake.requests_to(f"/v1/playlists/{ROCK}/items")


def test_expired_token_refreshed_once_and_continued(fake, make_source, sleeps):
    fake.script(JAZZ_PAGE_2, Reply(401, revoke_tokens=True))

    found = make_source().discover()

    assert fake.tokens_issued == ["test-token-1", "test-token-2"]
    assert [r.bearer for r in fake.requests_to(JAZZ_ITEMS)] == [
        "test-token-1", "test-token-1", "test-token-2",
    ]
    assert sleeps == []
    assert len(found.tracks) == 3


def test_token_rejected_after_refresh_is_auth_error(fake, make_source):
    fake.always(JAZZ_ITEMS, Reply(401))

    with pytest.raises(SpotifyAuthError, match="freshly issued"):
        make_source().discover()
    assert len(fake.requests_to("/api/token")) == 2


def test_invalid_client_fails_fast(fake, make_source, sleeps):
    started = time.monotonic()
    with pytest.raises(SpotifyAuthError, match="invalid_client") as raised:
        make_source(client_secret="wrong").discover()

    assert "SPOTIPY_CLIENT_SECRET" in str(raised.value)
    assert time.monotonic() - started < 2
    assert len(fake.requests_to("/api/token")) == 1
    assert fake.api_requests == [] and sleeps == []


def test_token_endpoint_down_skips_every_playlist(fake, make_source, sleeps):
    fake.always("/api/token", Reply(503))

    found = make_source().discover()

    assert found.tracks == []
    assert len(fake.requests_to("/api/token")) == 3
    assert {r["source_id"] for r in found.rejected} == {f"playlist:{JAZZ}", f"playlist:{ROCK}"}


def test_credentials_from_env():
    with pytest.raises(SpotifyAuthError, match="SPOTIPY_CLIENT_SECRET"):
        credentials_from_env({"SPOTIPY_CLIENT_ID": "id"})
    env = {"SPOTIPY_CLIENT_ID": "id", "SPOTIPY_CLIENT_SECRET": "secret"}
    assert credentials_from_env(env) == ("id", "secret")


def test_rate_limited_token_endpoint_waits_then_continues(fake, make_source, sleeps):
    fake.script("/api/token", Reply(429, headers={"Retry-After": "2"}))

    found = make_source().discover()

    assert sleeps == [2.0]
    assert len(found.tracks) == 3
