"""The demo corpus must be reproducible, well-formed audio, and genre-distinguishable."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.audio import SAMPLE_RATE, SEGMENT_SAMPLES, check_audio, split_segments
from genreflow.synth import STYLES, style_for, synthesize_clip, write_corpus

SHORT = 3.1  # just over one segment: keeps the file-writing tests fast


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _centroid(y: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / SAMPLE_RATE)
    return float((power * freqs).sum() / power.sum())


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    genres = ["blues", "metal"]
    first = write_corpus(tmp_path / "a", genres, 2, seconds=SHORT, seed=7)
    again = write_corpus(tmp_path / "b", genres, 2, seconds=SHORT, seed=7)
    other = write_corpus(tmp_path / "c", genres, 2, seconds=SHORT, seed=8)
    assert _digests(first) == _digests(again)
    assert not set(_digests(first)) & set(_digests(other))


def test_tracks_do_not_depend_on_the_other_configured_genres(tmp_path):
    alone = write_corpus(tmp_path / "a", ["jazz"], 1, seconds=SHORT, seed=3)
    among = write_corpus(tmp_path / "b", ["rock", "jazz"], 1, seconds=SHORT, seed=3)
    assert _digests(alone) == _digests(among[1:])


def test_layout_file_count_and_logging(tmp_path, caplog):
    genres = ["classical", "reggae", "electronic"]
    with caplog.at_level(logging.INFO, logger="genreflow.synth"):
        paths = write_corpus(tmp_path, genres, 2, seconds=SHORT, seed=0, prefix="valid_")
    expected = {tmp_path / g / f"valid_{g}_{i:03d}.wav" for g in genres for i in range(2)}
    assert set(paths) == expected and len(paths) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(genres)
    assert all(p.is_file() for p in paths)
    assert "wrote 6 synthetic clips" in caplog.text


def test_default_length_is_three_full_segments_of_16_bit_mono(tmp_path):
    (path,) = write_corpus(tmp_path, ["pop"], 1, seed=1)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    assert info.frames == round(9.2 * SAMPLE_RATE)
    y, _ = sf.read(path, dtype="float32")
    assert split_segments(check_audio(y)).shape == (3, SEGMENT_SAMPLES)


@pytest.mark.parametrize("genre", [*STYLES, "electronic", "K-Pop"])
def test_clip_is_finite_bounded_float32_and_not_silent(genre):
    y = synthesize_clip(genre, SHORT, np.random.default_rng(0))
    assert y.dtype == np.float32 and y.shape == (round(SHORT * SAMPLE_RATE),)
    assert np.all(np.isfinite(y))
    assert np.abs(y).max() <= 1.0
    assert np.sqrt(np.mean(np.square(y))) > 0.02


def test_unknown_genre_gets_its_own_stable_style():
    style = style_for("electronic")
    assert style == style_for("electronic")
    assert style not in STYLES.values()
    assert style != style_for("ambient")
    clip = synthesize_clip("electronic", SHORT, np.random.default_rng(0))
    for known in STYLES:
        assert not np.array_equal(clip, synthesize_clip(known, SHORT, np.random.default_rng(0)))


def test_unknown_genre_does_not_depend_on_python_hash_seed():
    code = (
        "import hashlib, numpy as np; from genreflow.synth import synthesize_clip; "
        "y = synthesize_clip('electronic', 1.0, np.random.default_rng(0)); "
        "print(hashlib.sha256(y.tobytes()).hexdigest())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_genres_differ_in_brightness_and_loudness():
    """Classical (soft, pure tones, no drums) against metal (loud, distorted, cymbals)."""
    classical = [synthesize_clip("classical", SHORT, np.random.default_rng(s)) for s in range(4)]
    metal = [synthesize_clip("metal", SHORT, np.random.default_rng(s)) for s in range(4)]
    assert max(map(_centroid, classical)) * 1.5 < min(map(_centroid, metal))
    rms = [float(np.sqrt(np.mean(np.square(y)))) for y in classical + metal]
    assert max(rms[:4]) < min(rms[4:])


def test_tracks_of_one_genre_vary():
    a, b = (synthesize_clip("disco", SHORT, np.random.default_rng(s)) for s in (0, 1))
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.5
