"""Decoding and refusal of track audio (genreflow.audio): one decoder for bytes and paths,
so the pipeline and ``genreflow predict`` refuse alike, in plain words."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_registry import TINY, publish_model, random_table

from genreflow.audio import (
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    AudioError,
    SilentAudio,
    TooShortAudio,
    UndecodableAudio,
    UnsupportedFormat,
    load_audio,
    split_segments,
)
from genreflow.cli import main
from genreflow.sources.inbox import InboxSource
from genreflow.storage import LocalStore


def shared_data() -> Path | None:
    root = os.environ.get("GENREFLOW_SHARED_DATA")
    path = Path(root) if root else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    return path if (path / "gtzan-excerpts").is_dir() else None


def wav_bytes(y: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def tone(seconds: float, amplitude: float = 0.5, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_corrupt_bytes_are_undecodable():
    with pytest.raises(UndecodableAudio, match="cannot decode"):
        load_audio(b"RIFF\x00\x00garbage" * 100, "corrupt.wav")


FOUR_SECONDS = wav_bytes(tone(4))


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("corrupt.wav", b"RIFF\x00\x00garbage" * 100, "cannot decode audio: format not recognised"),
    ("empty.wav", b"", "empty file (0 bytes)"),
    ("header-only.wav", FOUR_SECONDS[:40],
     "cannot decode audio: error in WAV file. No 'data' chunk marker"),
    ("truncated.wav", FOUR_SECONDS[:len(FOUR_SECONDS) // 3],
     "1.33 s is shorter than one 3.00 s segment"),
])
def test_refusals_are_plain_words_from_bytes_and_from_a_path(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    for source in (data, path):  # the pipeline decodes bytes, `genreflow predict` a path
        with pytest.raises(AudioError) as refused:
            load_audio(source, name)
        assert str(refused.value) == f"{name}: {reason}"


def test_m4a_is_refused_alike_by_discovery_and_predict(tmp_path, capsys, monkeypatch):
    """soundfile cannot read AAC: the inbox refuses the suffix with the same words as
    `genreflow predict`, instead of accepting a file extraction will never decode."""
    refusal = ("not a supported audio file suffix (.m4a); "
               "supported: .aif .aiff .au .flac .mp3 .oga .ogg .wav")
    song = tmp_path / "song.m4a"
    song.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64)
    inbox = LocalStore(tmp_path / "inbox")
    inbox.write_bytes("metal/song.m4a", song.read_bytes())

    found = InboxSource(inbox, ["metal"]).discover()
    assert found.tracks == []
    assert [r["reason"] for r in found.rejected] == [refusal]
    with pytest.raises(UnsupportedFormat):
        load_audio(song)

    monkeypatch.setenv("GENREFLOW_CACHE", str(tmp_path / "cache"))
    store = LocalStore(tmp_path / "store")
    publish_model(store, fit_tiny_model())
    assert main(["predict", str(song), "--store", str(store.root)]) == 1
    assert f"{song}: {refusal}" in capsys.readouterr().err


def fit_tiny_model():
    from genreflow.model import fit_model

    return fit_model(random_table(1), TINY)


def test_all_zero_is_silent():
    with pytest.raises(SilentAudio):
        load_audio(wav_bytes(np.zeros(5 * SAMPLE_RATE, dtype=np.float32)), "zeros")


def test_very_quiet_is_silent():
    with pytest.raises(SilentAudio):
        load_audio(wav_bytes(tone(5, amplitude=1e-5)), "quiet")


def test_two_seconds_is_too_short():
    with pytest.raises(TooShortAudio, match="shorter than one"):
        load_audio(wav_bytes(tone(2)), "short")


def test_bytes_are_resampled_to_mono_22050():
    stereo = np.stack([tone(4, sr=44100), tone(4, sr=44100)], axis=1)
    y = load_audio(wav_bytes(stereo, sr=44100), "stereo")
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 4 * SAMPLE_RATE) <= 1


def test_split_segments_drops_the_tail():
    y = np.ones(2 * SEGMENT_SAMPLES + 1000, dtype=np.float32)
    segments = split_segments(y)
    assert segments.shape == (2, SEGMENT_SAMPLES)


@pytest.mark.real_audio
def test_ogg_decoding_of_a_real_clip():
    data = shared_data()
    if data is None:
        pytest.skip("real clips absent: set GENREFLOW_SHARED_DATA or provide ../shared/data")
    path = data / "gtzan-excerpts" / "jazz" / "gtzan_jazz.00001.ogg"
    from_path = load_audio(path)
    from_bytes = load_audio(path.read_bytes(), "jazz.ogg")
    assert from_path.dtype == np.float32 and from_path.size > 5 * SAMPLE_RATE
    assert abs(from_path.size - from_bytes.size) <= 1
    assert split_segments(from_path).shape[0] == from_path.size // SEGMENT_SAMPLES
