"""discover -> extract_batch -> assemble as plain functions: no work done twice, bounded
memory, and the Spotify source end to end against the local fake Spotify."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from conftest import TEST_GENRES
from spotify_api import CLIENT_ID, CLIENT_SECRET, FakeSpotify, Reply

from genreflow import catalog, extraction, layout, snapshot
from genreflow.config import JamendoConfig, Settings
from genreflow.dataset import FEATURE_FINGERPRINT, write_valid_table
from genreflow.errors import PermanentError
from genreflow.progress import progress
from genreflow.sources import KNOWN_SOURCES, make_sources
from genreflow.sources.inbox import InboxSource
from genreflow.sources.jamendo import JamendoAuthError, JamendoSource
from genreflow.sources.spotify import NO_PREVIEW, SpotifyAuthError, SpotifySource
from genreflow.storage import LocalStore
from genreflow.tasks import ingest, training

JAZZ, ROCK = "1gfJazzClassicsTest001", "2gfRockAnthemsTest0002"
SO_WHAT, TAKE_FIVE = "4vLYewWIvqHfKtJDk8c8tq", "1YQWosTIljIvxAgHWTp7KP"
BLUE_IN_GREEN, PARANOID = "0aWMVrwxPNYkKmFthzmpRi", "1jzDzZWeSDBg5fhNc3tczV"
SMOKE = "5SAUIWdZ04OxYfJFDchC7S"
PREVIEWS = {SO_WHAT: "5a1c0f4cbd2e1f0b9a1d", BLUE_IN_GREEN: "9e2b47d1c3a8f60e7b24",
            PARANOID: "c0ffee7d5e4b3a291807"}  # preview path ids in tests/fixtures/spotify


def inbox_settings(tmp_path, short_clips, extra: dict[str, bytes] | None = None, **kwargs):
    """An inbox with classical_000, classical_001, metal_000 (+ ``extra``) and a store."""
    inbox = LocalStore(tmp_path / "inbox")
    for name in ("classical_000.wav", "classical_001.wav", "metal_000.wav"):
        inbox.write_bytes(f"{name.split('_')[0]}/{name}", short_clips[name].read_bytes())
    for key, data in (extra or {}).items():
        inbox.write_bytes(key, data)
    return Settings(home=tmp_path, store=str(tmp_path / "store"), inbox=str(tmp_path / "inbox"),
                    valid_csv="", genres=TEST_GENRES, workers=1, **kwargs)


def run(settings: Settings, run_id: str, **discover_kwargs) -> dict:
    discover_kwargs = {"max_new": 100, "batch_size": 2} | discover_kwargs
    batches = ingest.discover(settings, ["inbox"], run_id=run_id, **discover_kwargs)
    records = [ingest.extract_batch(settings, batch, run_id) for batch in batches]
    return ingest.assemble(settings, records, run_id)


def stored(settings: Settings) -> dict[str, bytes]:
    store = LocalStore(settings.store)
    return {key: store.read_bytes(key) for key in store.list_keys()}


@pytest.fixture
def extractions(monkeypatch) -> list[str]:
    """Track keys handed to the real extractor (spied on, not replaced)."""
    seen: list[str] = []
    real = extraction.extract_many

    def spy(jobs, workers=1, sets=("librosa",)):
        return real(((seen.append(key) or key, data) for key, data in jobs), workers, sets)

    monkeypatch.setattr(extraction, "extract_many", spy)
    return seen


def test_second_pass_finds_nothing_new_and_does_no_work(tmp_path, short_clips, extractions,
                                                        caplog):
    settings = inbox_settings(tmp_path, short_clips, {"pop/song.wav": b"not a genre"})
    first = run(settings, "r1")
    assert len(extractions) == 3
    assert (first["n_tracks"], first["n_segments"], first["new_tracks"]) == (3, 3, 3)
    before = stored(settings)
    assert sum(k.startswith("features/") for k in before) == 3

    caplog.set_level(logging.INFO, logger="genreflow")
    assert ingest.discover(settings, ["inbox"], 100, 2, run_id="r2") == []
    second = ingest.assemble(settings, [], "r2")

    assert len(extractions) == 3  # nothing handed to the extractor again
    assert second == {**first, "new_tracks": 0}
    assert stored(settings) == before  # catalog, raw, features and snapshot untouched
    assert "discover: 3 candidates, 3 already in the catalog, 0 new, 0 taken (cap 100), " \
           "1 rejected (0 newly recorded in the catalog)" in caplog.text
    assert "already exists and matches its record: reused" in caplog.text


def test_failed_tracks_are_retried_only_when_asked(tmp_path, short_clips, extractions):
    settings = inbox_settings(tmp_path, short_clips, {"metal/corrupt.wav": b"RIFF" + b"x" * 99})
    run(settings, "r1")
    first = catalog.read_catalog(LocalStore(settings.store)).set_index("key")
    assert first.loc["inbox:metal/corrupt.wav", "status"] == catalog.FAILED

    assert ingest.discover(settings, ["inbox"], 100, 2, run_id="r2") == []
    batches = ingest.discover(settings, ["inbox"], 100, 2, retry_failed=True, run_id="r3")
    assert [r["source_id"] for b in batches for r in b] == ["metal/corrupt.wav"]
    ingest.assemble(settings, [ingest.extract_batch(settings, batches[0], "r3")], "r3")

    assert extractions.count("inbox:metal/corrupt.wav") == 2 and len(extractions) == 5
    again = catalog.read_catalog(LocalStore(settings.store)).set_index("key")
    retried = again.loc["inbox:metal/corrupt.wav"]
    assert (retried["status"], retried["run_id"]) == (catalog.FAILED, "r3")
    assert retried["first_seen"] == first.loc["inbox:metal/corrupt.wav", "first_seen"]


def test_cap_leaves_the_rest_for_the_next_run(tmp_path, short_clips):
    settings = inbox_settings(tmp_path, short_clips)
    assert run(settings, "r1", max_new=2)["n_tracks"] == 2
    batches = ingest.discover(settings, ["inbox"], max_new=2, batch_size=2, run_id="r2")
    assert [r["source_id"] for b in batches for r in b] == ["metal/metal_000.wav"]
    assert ingest.discover(settings, ["inbox"], max_new=0, batch_size=2, run_id="r2") == []


def test_a_new_snapshot_reads_only_new_features_files_and_equals_a_full_rebuild(
        tmp_path, short_clips, monkeypatch, caplog):
    import pandas as pd

    settings = inbox_settings(tmp_path, short_clips)
    store = LocalStore(settings.store)
    features_read: list[str] = []
    read_bytes = LocalStore.read_bytes

    def spy(self, key):
        if key.startswith("features/"):
            features_read.append(key)
        return read_bytes(self, key)

    monkeypatch.setattr(LocalStore, "read_bytes", spy)
    run(settings, "r1", max_new=2)
    features_read.clear()
    second = run(settings, "r2")  # adds metal_000 to the two classical tracks
    table = catalog.read_catalog(store).set_index("key")
    assert features_read == [table.loc["inbox:metal/metal_000.wav", "features_key"]]
    built = store.read_frame(second["snapshot_key"])

    def rebuild(**pointer) -> list[str]:
        store.delete(second["snapshot_key"])
        features_read.clear()
        if pointer:
            store.write_json(layout.SNAPSHOT_POINTER, pointer)
        assert ingest.assemble(settings, [], "again") == {**second, "new_tracks": 0}
        pd.testing.assert_frame_equal(store.read_frame(second["snapshot_key"]), built)
        return sorted(features_read)

    caplog.set_level(logging.INFO, logger="genreflow")
    assert rebuild(snapshot_key="snapshots/gone.parquet") == sorted(table["features_key"])
    assert "the earlier snapshot cannot be read" not in caplog.text  # a missing one is normal
    store.write_bytes(layout.SNAPSHOT_POINTER, b"{not json")
    assert rebuild() == sorted(table["features_key"])
    assert "the earlier snapshot cannot be read" in caplog.text
    # an earlier snapshot missing metal_000 and holding a classical track twice: only
    # those two tracks are read from their files
    classical = table.loc["inbox:classical/classical_000.wav"]
    odd = pd.concat([built[built["genre"] == "classical"],
                     built[built["track_id"] == classical["track_id"]]])
    store.write_frame("snapshots/odd.parquet", odd)
    store.write_json("snapshots/odd.json", {"feature_sets": FEATURE_FINGERPRINT,
                                            "digests": snapshot.row_digests(built)})
    assert rebuild(snapshot_key="snapshots/odd.parquet") == sorted(
        table.loc[["inbox:classical/classical_000.wav", "inbox:metal/metal_000.wav"],
                  "features_key"])


def test_rejections_recorded_once_and_reconsidered_when_config_changes(tmp_path, short_clips):
    settings = inbox_settings(tmp_path, short_clips, {"pop/song.wav": b"\x00" * 10})
    ingest.discover(settings, ["inbox"], max_new=0, batch_size=2, run_id="r1")
    ingest.discover(settings, ["inbox"], max_new=0, batch_size=2, run_id="r2")
    table = catalog.read_catalog(LocalStore(settings.store))
    assert table[["key", "status", "run_id"]].values.tolist() == [
        ["inbox:pop/song.wav", catalog.REJECTED, "r1"]
    ]
    with_pop = dataclasses.replace(settings, genres=(*TEST_GENRES, "pop"))
    batches = ingest.discover(with_pop, ["inbox"], max_new=100, batch_size=10, run_id="r3")
    assert "pop/song.wav" in [r["source_id"] for r in batches[0]]


def test_same_audio_in_two_parallel_batches_is_one_track(tmp_path, short_clips):
    copy = {"classical/zz_copy.wav": short_clips["classical_000.wav"].read_bytes()}
    settings = inbox_settings(tmp_path, short_clips, copy)
    batches = ingest.discover(settings, ["inbox"], max_new=100, batch_size=1, run_id="r1")
    records = [ingest.extract_batch(settings, batch, "r1") for batch in batches]  # as mapped
    assert sum(r["status"] == catalog.OK for b in records for r in b) == 4
    snapshot = ingest.assemble(settings, records, "r1")

    assert snapshot["n_tracks"] == 3
    copy_row = catalog.read_catalog(LocalStore(settings.store)).set_index("key").loc[
        "inbox:classical/zz_copy.wav"]
    assert (copy_row["status"], copy_row["reason"]) == (
        catalog.DUPLICATE, "same audio as inbox:classical/classical_000.wav")


def test_extract_batch_fetches_lazily(tmp_path, short_clips, monkeypatch):
    """Audio is fetched as the extractor asks for it, not the whole batch up front."""
    settings = inbox_settings(tmp_path, short_clips)
    fetched: list[str] = []
    fetched_at_result: list[int] = []
    real_fetch, real_extract = InboxSource.fetch, extraction.extract_many

    def fetch(self, ref):
        fetched.append(ref.key)
        return real_fetch(self, ref)

    def extract_many(jobs, workers=1, sets=("librosa",)):
        for result in real_extract(jobs, workers, sets):
            fetched_at_result.append(len(fetched))
            yield result

    monkeypatch.setattr(InboxSource, "fetch", fetch)
    monkeypatch.setattr(extraction, "extract_many", extract_many)
    (batch,) = ingest.discover(settings, ["inbox"], max_new=100, batch_size=3, run_id="r1")
    records = ingest.extract_batch(settings, batch, "r1")

    assert [r["status"] for r in records] == [catalog.OK] * 3
    assert fetched_at_result == [1, 2, 3]


def test_unknown_source_is_a_permanent_error(tmp_path, short_clips):
    with pytest.raises(PermanentError, match=r"unknown source\(s\) \['soundcloud'\]"):
        make_sources(inbox_settings(tmp_path, short_clips), ["inbox", "soundcloud"])


BUILT = {"inbox": (InboxSource, None), "jamendo": (JamendoSource, JamendoAuthError),
         "spotify": (SpotifySource, SpotifyAuthError)}  # class, error without credentials
CREDENTIALS = {"JAMENDO_CLIENT_ID": "jamendo-test-id", "SPOTIPY_CLIENT_ID": CLIENT_ID,
               "SPOTIPY_CLIENT_SECRET": CLIENT_SECRET}


@pytest.mark.parametrize("name", KNOWN_SOURCES)
def test_every_source_the_trigger_form_offers_can_be_built(tmp_path, short_clips, monkeypatch,
                                                           name):
    """The DAG's `sources` multi-select lists KNOWN_SOURCES: configured and with
    credentials, each builds into its own source for the run's genres; without
    credentials a remote one fails with its own auth error."""
    assert set(BUILT) == set(KNOWN_SOURCES)
    for var in ("GENREFLOW_JAMENDO_CONN_ID", "GENREFLOW_SPOTIFY_CONN_ID", *CREDENTIALS):
        monkeypatch.delenv(var, raising=False)
    settings = inbox_settings(tmp_path, short_clips, playlists={"classical": [JAZZ]},
                              jamendo=JamendoConfig(tags={"classical": ["classical"]}))
    kind, auth_error = BUILT[name]
    if auth_error:
        with pytest.raises(auth_error):
            make_sources(settings, [name])
    for var, value in CREDENTIALS.items():
        monkeypatch.setenv(var, value)
    built = make_sources(settings, [name])
    assert list(built) == [name]
    assert type(built[name]) is kind and built[name].name == name
    assert built[name].genres == frozenset(TEST_GENRES)


@pytest.fixture
def fake():
    with FakeSpotify() as server:
        yield server


def spotify_settings(tmp_path, fake) -> Settings:
    return Settings(home=tmp_path, store=str(tmp_path / "store"), inbox="", valid_csv="",
                    genres=("jazz", "rock"), playlists={"jazz": [JAZZ], "rock": [ROCK]},
                    workers=1, spotify_api_prefix=fake.api_prefix,
                    spotify_token_url=fake.token_url)


def test_spotify_previews_ingested_and_the_rest_recorded(tmp_path, short_clips, fake,
                                                         monkeypatch, caplog):
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("GENREFLOW_SPOTIFY_CONN_ID", raising=False)
    fake.previews[PREVIEWS[SO_WHAT]] = short_clips["classical_000.wav"].read_bytes()
    fake.previews[PREVIEWS[PARANOID]] = short_clips["metal_000.wav"].read_bytes()
    # Blue in Green's preview is not served (404); the rock playlist is rate limited once
    # for longer than the source waits, so this run skips it
    fake.script(f"/v1/playlists/{ROCK}/items", Reply(429, headers={"Retry-After": "3600"}))
    settings = spotify_settings(tmp_path, fake)
    store = LocalStore(settings.store)
    caplog.set_level(logging.INFO, logger="genreflow")

    batches = ingest.discover(settings, ["spotify"], 100, 10, run_id="r1")
    assert [r["source_id"] for b in batches for r in b] == [SO_WHAT, BLUE_IN_GREEN]
    first = ingest.assemble(settings, [ingest.extract_batch(settings, batches[0], "r1")], "r1")

    table = catalog.read_catalog(store).set_index("key")
    assert first["n_tracks"] == 1 and first["n_segments"] == 1
    so_what = table.loc[f"spotify:{SO_WHAT}"]
    assert (so_what["status"], so_what["genre"], so_what["name"]) == ("ok", "jazz", "So What")
    assert (so_what["title"], so_what["artist"], so_what["licence_url"]) == (
        "So What", "Miles Davis", "")
    assert so_what["source_url"] == f"https://open.spotify.com/track/{SO_WHAT}"
    assert so_what["raw_key"] == f"raw/jazz/{so_what['sha256']}.wav"
    assert store.read_bytes(so_what["raw_key"]) == short_clips["classical_000.wav"].read_bytes()
    assert "preview download returned HTTP 404" in table.loc[f"spotify:{BLUE_IN_GREEN}",
                                                             "reason"]
    assert table.loc[f"spotify:{TAKE_FIVE}", ["status", "reason"]].tolist() == [
        catalog.REJECTED, NO_PREVIEW]
    skipped = table.loc[f"spotify:playlist:{ROCK}"]
    assert skipped["status"] == catalog.REJECTED and skipped["genre"] == "rock"
    assert "Retry-After 3600 s exceeds max_retry_after 30 s" in skipped["reason"]
    assert f"rejected spotify:playlist:{ROCK}: skipped after 0 items" in caplog.text
    assert f"rejected spotify:{TAKE_FIVE}: {NO_PREVIEW}" in caplog.text

    # next week the rock playlist answers: only its new track is fetched; So What (ok),
    # Blue in Green (failed) and Take Five (rejected, same reason) are left alone
    batches = ingest.discover(settings, ["spotify"], 100, 10, run_id="r2")
    assert [r["source_id"] for b in batches for r in b] == [PARANOID]
    second = ingest.assemble(settings, [ingest.extract_batch(settings, batches[0], "r2")], "r2")
    table = catalog.read_catalog(store).set_index("key")
    assert second["n_tracks"] == 2 and second["new_tracks"] == 1
    assert table.loc[f"spotify:{PARANOID}", "status"] == catalog.OK
    assert table.loc[f"spotify:{SMOKE}", ["status", "reason", "run_id"]].tolist() == [
        catalog.REJECTED, NO_PREVIEW, "r2"]
    assert table.loc[f"spotify:{TAKE_FIVE}", "run_id"] == "r1"
    assert table.loc[f"spotify:{SO_WHAT}", "status"] == catalog.OK  # not the cross-playlist dup
    assert len(fake.requests_to(f"/mp3-preview/{PREVIEWS[SO_WHAT]}")) == 1


def test_spotify_credentials_from_an_airflow_connection(tmp_path, fake, monkeypatch):
    monkeypatch.delenv("SPOTIPY_CLIENT_ID", raising=False)
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("GENREFLOW_SPOTIFY_CONN_ID", "gf_spotify")
    monkeypatch.setenv("AIRFLOW_CONN_GF_SPOTIFY", json.dumps(
        {"conn_type": "generic", "login": CLIENT_ID, "password": CLIENT_SECRET}))
    settings = spotify_settings(tmp_path, fake)

    found = make_sources(settings, ["spotify"])["spotify"].discover()
    assert len(found.tracks) == 3 and fake.tokens_issued == ["test-token-1"]

    monkeypatch.setenv("GENREFLOW_SPOTIFY_CONN_ID", "gf_missing")
    with pytest.raises(SpotifyAuthError, match="gf_missing: no such Airflow connection"):
        make_sources(settings, ["spotify"])


def test_same_audio_under_two_genres_is_a_conflict_until_one_is_removed(
        tmp_path, short_clips, extractions, make_table, caplog):
    classical, metal = (short_clips[n].read_bytes() for n in ("classical_000.wav",
                                                               "metal_000.wav"))
    settings = inbox_settings(tmp_path, short_clips, {"metal/zz_same.wav": classical})
    store = LocalStore(settings.store)
    caplog.set_level(logging.INFO, logger="genreflow")

    # the same audio under classical/ and metal/, extracted in two parallel batches
    first = run(settings, "r1")
    table = catalog.read_catalog(store).set_index("source_id")
    assert table.loc["classical/classical_000.wav", ["status", "reason"]].tolist() == [
        catalog.CONFLICT, "label conflict: same audio as inbox:metal/zz_same.wav (metal); "
        "kept out of training until the wrong file is removed"]
    assert table.loc["metal/zz_same.wav", ["status", "reason"]].tolist() == [
        catalog.CONFLICT, "label conflict: same audio as inbox:classical/classical_000.wav "
        "(classical); kept out of training until the wrong file is removed"]
    assert first["n_tracks"] == 2  # classical_001 and metal_000 only
    assert "conflict inbox:metal/zz_same.wav (metal): label conflict" in caplog.text

    # a copy of a track already trained on, dropped under another genre
    LocalStore(settings.inbox).write_bytes("electronic/again.wav", metal)
    second = run(settings, "r2")
    table = catalog.read_catalog(store).set_index("source_id")
    assert table.loc[["metal/metal_000.wav", "electronic/again.wav"], "status"].tolist() == [
        catalog.CONFLICT, catalog.CONFLICT]
    assert "same audio as inbox:electronic/again.wav (electronic)" in \
        table.loc["metal/metal_000.wav", "reason"]
    assert second["n_tracks"] == 1 and second["fingerprint"] != first["fingerprint"]
    assert "inbox:electronic/again.wav" not in extractions

    # the checks report lists them and warns
    store.write_frame("snapshots/checked.parquet", make_table())
    write_valid_table(make_table(prefix="v"), tmp_path / "valid.csv")
    checked = training.check(dataclasses.replace(settings, valid_csv=str(tmp_path / "valid.csv")),
                             {"snapshot_key": "snapshots/checked.parquet"}, "r2")
    report = store.read_json(checked["report_key"])
    assert {(c["key"], c["genre"]) for c in report["label_conflicts"]} == {
        ("inbox:classical/classical_000.wav", "classical"), ("inbox:metal/zz_same.wav", "metal"),
        ("inbox:electronic/again.wav", "electronic"), ("inbox:metal/metal_000.wav", "metal")}
    assert any(w.startswith("4 catalog key(s) share their audio with a key of another genre")
               for w in checked["warnings"])
    assert "WARN: label_conflicts: 4 catalog key(s)" in caplog.text

    # the operator removes the wrong files: the next run settles both conflicts
    LocalStore(settings.inbox).delete("electronic/again.wav")
    LocalStore(settings.inbox).delete("classical/classical_000.wav")
    extracted_before = len(extractions)
    third = run(settings, "r3")
    table = catalog.read_catalog(store).set_index("source_id")
    assert table["status"].to_dict() == {
        "classical/classical_000.wav": catalog.REMOVED, "classical/classical_001.wav": "ok",
        "metal/metal_000.wav": "ok", "metal/zz_same.wav": "ok",
        "electronic/again.wav": catalog.REMOVED}
    assert len(extractions) == extracted_before  # stored features reused
    assert third["n_tracks"] == 3
    snapshot = store.read_frame(third["snapshot_key"]).set_index("track_id")
    assert snapshot.loc[table.loc["metal/zz_same.wav", "track_id"], "genre"] == "metal"
    assert ingest.discover(settings, ["inbox"], 100, 2, run_id="r4") == []
    assert ingest.assemble(settings, [], "r4") == {**third, "new_tracks": 0}


def test_progress_lines_only_for_long_loops(caplog):
    log = logging.getLogger("genreflow.test")
    caplog.set_level(logging.INFO, logger="genreflow.test")
    assert list(progress(range(3), 3, "read", log, every=60.0)) == [0, 1, 2]
    assert caplog.messages == []  # a quick loop adds no line
    assert list(progress(range(3), 3, "read", log, every=0.0)) == [0, 1, 2]
    assert caplog.messages == ["read: 1/3", "read: 2/3"]  # the summary says 3/3 itself
