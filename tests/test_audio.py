"""Decoding and refusal of track audio (genreflow.audio)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.audio import (
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    SilentAudio,
    TooShortAudio,
    UndecodableAudio,
    load_audio,
    split_segments,
)


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
