"""Column names of the 311 features, in the study's order (docs/method.md)."""

from __future__ import annotations

N_MFCC = 20
N_MELS = 128


def _feature_names() -> list[str]:
    names: list[str] = []
    for base in (
        "chroma_stft",
        "rms",
        "spectral_centroid",
        "spectral_bandwidth",
        "spectral_rolloff",
        "zero_crossing_rate",
        "harmonic",
    ):
        names += [f"{base}_mean", f"{base}_std"]
    names.append("tempo")
    names += [f"mfcc{i}_mean" for i in range(1, N_MFCC + 1)]
    names += [f"mfcc{i}_std" for i in range(1, N_MFCC + 1)]
    names += [f"mel{i}_mean" for i in range(1, N_MELS + 1)]
    names += [f"mel{i}_std" for i in range(1, N_MELS + 1)]
    return names


FEATURE_NAMES: list[str] = _feature_names()
N_FEATURES = len(FEATURE_NAMES)
assert N_FEATURES == 311, N_FEATURES
