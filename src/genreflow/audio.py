"""Decode a track into the study's 3-second segments, refusing audio that cannot be used.

Every refusal is an :class:`AudioError` subclass with a message a person can act on;
the pipeline records it against the track and carries on with the others.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050
SEGMENT_SAMPLES = 66149  # 3 s at 22050 Hz, as in the study
SILENCE_RMS = 1e-4  # below about -80 dBFS: nothing a genre can be heard in


class AudioError(ValueError):
    """A track whose audio cannot be turned into features."""


class UndecodableAudio(AudioError):
    """The bytes are not audio any decoder here understands."""


class SilentAudio(AudioError):
    """The track is all zeros or below the silence floor."""


class TooShortAudio(AudioError):
    """The track is shorter than one full segment."""


def load_audio(source: str | Path | bytes, name: str = "") -> np.ndarray:
    """Mono float32 at 22050 Hz; ``source`` is a path or the file's bytes."""
    import librosa
    import soundfile as sf

    label = name or str(source if not isinstance(source, bytes) else "<bytes>")
    try:
        if isinstance(source, bytes):
            data, native_sr = sf.read(io.BytesIO(source), dtype="float32", always_2d=True)
            y = librosa.resample(data.mean(axis=1), orig_sr=native_sr, target_sr=SAMPLE_RATE)
        else:
            with warnings.catch_warnings():
                # librosa warns before falling back to audioread; a failure of both is
                # reported below as UndecodableAudio, so the warning is only noise.
                warnings.filterwarnings("ignore", message="PySoundFile failed")
                warnings.filterwarnings("ignore", category=FutureWarning, module="librosa")
                y, _ = librosa.load(source, sr=SAMPLE_RATE, mono=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # decoders raise many unrelated types for bad bytes
        reason = f"{type(exc).__name__}: {exc}"
        raise UndecodableAudio(f"{label}: cannot decode audio ({reason})") from exc
    return check_audio(np.asarray(y, dtype=np.float32), label)


def check_audio(y: np.ndarray, label: str = "audio") -> np.ndarray:
    if y.size == 0 or not np.all(np.isfinite(y)):
        raise UndecodableAudio(f"{label}: decoded to no samples or to non-finite values")
    if y.size < SEGMENT_SAMPLES:
        raise TooShortAudio(
            f"{label}: {y.size / SAMPLE_RATE:.2f} s is shorter than one "
            f"{SEGMENT_SAMPLES / SAMPLE_RATE:.2f} s segment"
        )
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise SilentAudio(f"{label}: silent (RMS {rms:.2e} below {SILENCE_RMS:.0e})")
    return y


def split_segments(y: np.ndarray) -> np.ndarray:
    """Consecutive, non-overlapping full segments; the short tail is dropped."""
    count = y.size // SEGMENT_SAMPLES
    return y[: count * SEGMENT_SAMPLES].reshape(count, SEGMENT_SAMPLES)
