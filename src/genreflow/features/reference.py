"""The study's per-call extraction: every librosa function on the raw segment.

Slow on purpose (each call recomputes its STFT, HPSS dominates): it is the oracle the
fast extractor is tested against and the baseline the benchmark divides by.
"""

from __future__ import annotations

import numpy as np

from genreflow.audio import SAMPLE_RATE
from genreflow.features.names import N_FEATURES


def reference_segment_features(segment: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """311 features of one segment, exactly as docs/method.md lists them."""
    import librosa

    y = segment
    values: list[float] = []
    for matrix in (
        librosa.feature.chroma_stft(y=y, sr=sr),
        librosa.feature.rms(y=y),
        librosa.feature.spectral_centroid(y=y, sr=sr),
        librosa.feature.spectral_bandwidth(y=y, sr=sr),
        librosa.feature.spectral_rolloff(y=y, sr=sr),
        librosa.feature.zero_crossing_rate(y),
        librosa.effects.harmonic(y),
    ):
        values += [float(np.mean(matrix)), float(np.std(matrix))]
    values.append(float(librosa.feature.tempo(y=y, sr=sr)[0]))
    mfcc = librosa.feature.mfcc(y=y, sr=sr)
    mel = librosa.feature.melspectrogram(y=y, sr=sr)
    out = np.concatenate(
        [values, mfcc.mean(axis=1), mfcc.std(axis=1), mel.mean(axis=1), mel.std(axis=1)]
    )
    assert out.size == N_FEATURES
    return out


def reference_features(segments: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(n_segments, 311) for a stack of segments, one at a time."""
    return np.stack([reference_segment_features(s, sr) for s in segments])
