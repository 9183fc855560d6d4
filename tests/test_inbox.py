"""The inbox source through the ingest steps, on a local folder and on an S3 prefix (moto)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from conftest import TEST_GENRES

from genreflow import catalog
from genreflow.audio import SAMPLE_RATE
from genreflow.config import Settings
from genreflow.extraction import extract_audio_features
from genreflow.sources.inbox import InboxSource
from genreflow.storage import open_store
from genreflow.tasks import ingest

SUPPORTED = ".aif .aiff .au .flac .mp3 .oga .ogg .wav"


def one_second_wav() -> bytes:
    buffer = io.BytesIO()
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * t), SAMPLE_RATE, format="WAV")
    return buffer.getvalue()


def fill_inbox(inbox_uri: str, clips) -> dict[str, bytes]:
    """Three good tracks, one that will vanish, a renamed copy, bad audio, bad names."""
    files = {f"{name.split('_')[0]}/{name}": path.read_bytes() for name, path in clips.items()}
    files |= {
        "classical/zz_copy.wav": files["classical/classical_000.wav"],
        "metal/corrupt.wav": b"RIFF\x24\x00\x00\x00WAVEnot really audio" * 20,
        "metal/short.wav": one_second_wav(),
        "pop/song.wav": files["metal/metal_000.wav"],
        "README.txt": b"drop <genre>/<file> here",
        "metal/notes.txt": b"liner notes",
        "metal/voice.m4a": b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64,
    }
    store = open_store(inbox_uri)
    for key, data in files.items():
        store.write_bytes(key, data)
    return files


@pytest.fixture(params=["folder", "s3"])
def locations(request, tmp_path) -> tuple[str, str]:
    """(inbox URI, store URI) on local folders or under prefixes of a fresh moto bucket."""
    if request.param == "folder":
        return str(tmp_path / "inbox"), str(tmp_path / "store")
    bucket, _ = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/inbox", f"s3://{bucket}/store"


def test_discover_rejects_with_reasons(tmp_path, short_clips, locations):
    inbox, _ = locations
    fill_inbox(inbox, short_clips)
    found = InboxSource(open_store(inbox), TEST_GENRES).discover()
    assert len(found.tracks) == 7
    assert {t.genre for t in found.tracks} == {"classical", "metal"}
    reasons = {r["source_id"]: r["reason"] for r in found.rejected}
    assert reasons == {
        "README.txt": "not in <genre>/<file> layout",
        "metal/notes.txt": f"not a supported audio file suffix (.txt); supported: {SUPPORTED}",
        "metal/voice.m4a": f"not a supported audio file suffix (.m4a); supported: {SUPPORTED}",
        "pop/song.wav": "unknown genre 'pop' (configured: classical, electronic, metal)",
    }


def test_every_item_ends_in_the_catalog_with_its_status(tmp_path, short_clips, locations):
    inbox, store_uri = locations
    files = fill_inbox(inbox, short_clips)
    settings = Settings(home=tmp_path, store=store_uri, inbox=inbox, valid_csv="",
                        genres=TEST_GENRES, workers=1)
    batches = ingest.discover(settings, ["inbox"], max_new=100, batch_size=4, run_id="r1")
    assert [len(b) for b in batches] == [4, 3]
    open_store(inbox).delete("metal/metal_001.wav")  # gone between discover and fetch
    records = [ingest.extract_batch(settings, batch, "r1") for batch in batches]
    snapshot = ingest.assemble(settings, records, "r1")

    store = open_store(store_uri)
    table = catalog.read_catalog(store).set_index("source_id")
    assert table["status"].value_counts().to_dict() == {"ok": 3, "failed": 3, "rejected": 4,
                                                        "duplicate": 1}
    assert set(table["run_id"]) == {"r1"}
    assert table.loc["classical/zz_copy.wav", "reason"] == \
        "same audio as inbox:classical/classical_000.wav"
    failed = table[table["status"] == catalog.FAILED]["reason"]
    assert "vanished from the inbox since discovery" in failed["metal/metal_001.wav"]
    assert "cannot decode audio" in failed["metal/corrupt.wav"]
    assert "1.00 s is shorter than one 3.00 s segment" in failed["metal/short.wav"]
    assert "unknown genre 'pop'" in table.loc["pop/song.wav", "reason"]
    assert table.loc["pop/song.wav", "genre"] == "pop"

    ok = table[table["status"] == catalog.OK]
    assert sorted(ok.index) == ["classical/classical_000.wav", "classical/classical_001.wav",
                                "metal/metal_000.wav"]
    for source_id, row in ok.iterrows():
        assert row["raw_key"] == f"raw/{row['genre']}/{row['sha256']}.wav"
        assert store.read_bytes(row["raw_key"]) == files[source_id]
        assert row["features_key"] == f"features/{row['sha256'][:16]}.parquet"
    assert snapshot["n_tracks"] == 3 and snapshot["n_segments"] == 3
    assert snapshot["new_tracks"] == 3

    # the kept raw audio alone reproduces the stored features: no source needed to re-extract
    row = ok.loc["metal/metal_000.wav"]
    stored = store.read_frame(row["features_key"]).drop(columns=["track_id", "genre", "segment"])
    again = extract_audio_features(store.read_bytes(row["raw_key"]), "raw")
    np.testing.assert_array_equal(stored.to_numpy(dtype=np.float32), again.astype(np.float32))


def test_a_link_out_of_the_inbox_is_refused_and_the_run_goes_on(tmp_path, short_clips):
    outside = tmp_path / "elsewhere" / "secret.wav"
    outside.parent.mkdir()
    outside.write_bytes(short_clips["metal_001.wav"].read_bytes())
    inbox = open_store(str(tmp_path / "inbox"))
    for name in ("classical_000.wav", "classical_001.wav", "metal_000.wav"):
        inbox.write_bytes(f"{name.split('_')[0]}/{name}", short_clips[name].read_bytes())
    (tmp_path / "inbox" / "metal" / "link.wav").symlink_to(outside)
    settings = Settings(home=tmp_path, store=str(tmp_path / "store"),
                        inbox=str(tmp_path / "inbox"), valid_csv="", genres=TEST_GENRES,
                        workers=1)

    batches = ingest.discover(settings, ["inbox"], max_new=100, batch_size=10, run_id="r1")
    assert [r["source_id"] for r in batches[0]] == [
        "classical/classical_000.wav", "classical/classical_001.wav", "metal/metal_000.wav"]
    late = tmp_path / "inbox" / "metal" / "metal_000.wav"  # made a link after discovery
    late.unlink()
    late.symlink_to(outside)
    snapshot = ingest.assemble(settings, [ingest.extract_batch(settings, batches[0], "r1")],
                               "r1")

    table = catalog.read_catalog(open_store(settings.store)).set_index("source_id")
    assert table.loc["metal/link.wav", ["status", "reason"]].tolist() == [
        catalog.REJECTED, "a link to a file outside the inbox: refused"]
    assert table.loc["metal/metal_000.wav", ["status", "reason"]].tolist() == [
        catalog.FAILED, "metal/metal_000.wav: a link to a file outside the inbox: refused"]
    assert snapshot["n_tracks"] == 2
    assert ingest.discover(settings, ["inbox"], max_new=100, batch_size=10, run_id="r2") == []
