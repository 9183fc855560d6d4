"""The fast extractor reproduces the naive reference, feature by feature.

Tolerance: relative 1e-4 everywhere, plus an absolute floor per feature group for
values that are legitimately near zero, where float32 summation noise in the reference
itself (np.mean over 66149 float32 samples or 130 float32 frames) exceeds 1e-4 of the
value. Each floor is far below any difference a classifier could use:
- chroma (0..1), zcr (0..1): 1e-6
- rms, harmonic mean/std (amplitude, full scale 1.0): 1e-6, i.e. -120 dBFS
- centroid, bandwidth, rolloff (Hz): 1e-3 Hz
- tempo (BPM): 0, the same lag must win
- MFCC (dB): 1e-3 dB
- mel power: 1e-10, power_to_db's own floor (amin)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from genreflow.audio import SAMPLE_RATE, SEGMENT_SAMPLES, load_audio, split_segments
from genreflow.features.fast import fast_features
from genreflow.features.names import FEATURE_NAMES
from genreflow.features.reference import reference_features

RTOL = 1e-4
_FLOORS = {
    "chroma_stft": 1e-6,
    "rms": 1e-6,
    "spectral_centroid": 1e-3,
    "spectral_bandwidth": 1e-3,
    "spectral_rolloff": 1e-3,
    "zero_crossing_rate": 1e-6,
    "harmonic": 1e-6,
    "tempo": 0.0,
    "mfcc": 1e-3,
    "mel": 1e-10,
}


def _floor(name: str) -> float:
    return next(v for k, v in _FLOORS.items() if name.startswith(k))


ATOL = np.array([_floor(n) for n in FEATURE_NAMES])
REAL_CLIPS = ("blues/gtzan_blues.00001.ogg", "classical/gtzan_classical.00002.ogg",
              "metal/gtzan_metal.00003.ogg")


def shared_data() -> Path | None:
    root = os.environ.get("GENREFLOW_SHARED_DATA")
    path = Path(root) if root else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    return path if (path / "gtzan-excerpts").is_dir() else None


def synthetic_track(seconds: float = 9.5, seed: int = 0) -> np.ndarray:
    """Tones with vibrato, noise and a click track; a silent stretch and a quiet tail."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    y = 0.3 * np.sin(2 * np.pi * 220 * t + 3 * np.sin(2 * np.pi * 5 * t))
    y += 0.2 * np.sin(2 * np.pi * 443 * t) * (t % 1.0 < 0.6)
    y += 0.05 * rng.standard_normal(t.size)
    clicks = np.zeros_like(t)
    clicks[:: SAMPLE_RATE // 2] = 0.9  # 120 BPM
    y += np.convolve(clicks, np.exp(-np.arange(200) / 20.0))[: t.size]
    y[int(3.5 * SAMPLE_RATE) : int(4.5 * SAMPLE_RATE)] = 0.0
    y[int(7 * SAMPLE_RATE) :] *= 1e-3
    return y.astype(np.float32)


def assert_parity(segments: np.ndarray, label: str) -> None:
    fast = fast_features(segments)
    ref = reference_features(segments)
    assert fast.shape == ref.shape == (len(segments), len(FEATURE_NAMES))
    close = np.isclose(fast, ref, rtol=RTOL, atol=ATOL)
    bad = [
        f"segment {i} {FEATURE_NAMES[j]}: fast {fast[i, j]!r} reference {ref[i, j]!r}"
        for i, j in zip(*np.nonzero(~close), strict=True)
    ]
    assert not bad, f"{label}: {len(bad)} features differ:\n" + "\n".join(bad[:20])


def test_synthetic_parity():
    segments = split_segments(synthetic_track())
    assert len(segments) == 3
    assert_parity(segments, "synthetic")


@pytest.mark.filterwarnings("ignore:Trying to estimate tuning:UserWarning")
def test_all_zero_segment_parity():
    """A digital-silence segment inside a track takes librosa's zero-energy branches."""
    segments = np.zeros((1, SEGMENT_SAMPLES), dtype=np.float32)
    assert_parity(segments, "zeros")


@pytest.mark.real_audio
@pytest.mark.parametrize("clip", REAL_CLIPS)
def test_real_clip_parity(clip):
    data = shared_data()
    if data is None:
        pytest.skip("real clips absent: set GENREFLOW_SHARED_DATA or provide ../shared/data")
    segments = split_segments(load_audio(data / "gtzan-excerpts" / clip))
    assert_parity(segments, clip)


def test_rejects_wrong_shape():
    """Not (n_segments, samples), or too short for the HPSS median kernel (fewer than 16
    frames of 512 samples): our own message, before any computation."""
    shortest = 15 * 512  # 16 frames
    wrong = [np.zeros(SEGMENT_SAMPLES), np.zeros((1, 2, SEGMENT_SAMPLES)),
             np.zeros((2, shortest - 1))]
    for audio in wrong:
        with pytest.raises(ValueError, match=r"expected \(n_segments, samples\) of full "
                           rf"segments, got \({', '.join(map(str, audio.shape))},?\)"):
            fast_features(audio.astype(np.float32))
    noise = np.random.default_rng(0).standard_normal((2, shortest)).astype(np.float32)
    out = fast_features(noise)
    assert out.shape == (2, len(FEATURE_NAMES)) and np.isfinite(out).all()
