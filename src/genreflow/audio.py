"""Decode a track into the study's 3-second segments, refusing audio that cannot be used.

Every refusal is an :class:`AudioError` subclass with a message a person can act on;
the pipeline records it against the track and carries on with the others.
"""

from __future__ import annotations

import io
import re
from pathlib import Path, PurePosixPath

import numpy as np

SAMPLE_RATE = 22050
SEGMENT_SAMPLES = 66149  # 3 s at 22050 Hz, as in the study
SILENCE_RMS = 1e-4  # below about -80 dBFS: nothing a genre can be heard in

# What libsndfile (the one decoder, for the pipeline, `genreflow predict` and valid.csv
# alike) reads. Other formats (.m4a/AAC, .wma, ...) would need ffmpeg, which a worker may
# not have: they are refused by name, before any work, with the same words everywhere.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".au", ".aiff", ".aif"})

# Leading bytes of the formats we decode -> the suffix raw/ stores them under: the content
# decides, not the name (Spotify previews have none; a mislabelled file keeps its real type).
MAGIC_SUFFIXES = (
    (b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"),
    (b"\xff\xfb", ".mp3"), (b"\xff\xf3", ".mp3"), (b"\xff\xf2", ".mp3"), (b"FORM", ".aiff"),
    (b".snd", ".au"),
)


def sniff_suffix(data: bytes, name: str) -> str:
    """The suffix of ``data``'s format by its leading bytes; else ``name``'s, or ``.audio``."""
    for magic, suffix in MAGIC_SUFFIXES:
        if data.startswith(magic):
            return suffix
    return PurePosixPath(name).suffix.lower() or ".audio"


class AudioError(ValueError):
    """A track whose audio cannot be turned into features."""


class UndecodableAudio(AudioError):
    """The bytes are not audio any decoder here understands."""


class UnsupportedFormat(UndecodableAudio):
    """The file's suffix names a format this decoder does not read."""


class SilentAudio(AudioError):
    """The track is all zeros or below the silence floor."""


class TooShortAudio(AudioError):
    """The track is shorter than one full segment."""


def suffix_refusal(name: str) -> str:
    """Why a file of this name is not taken as audio; "" when its suffix is decodable."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return ""
    return (f"not a supported audio file suffix ({suffix or 'none'}); supported: "
            f"{' '.join(sorted(AUDIO_SUFFIXES))}")


def load_audio(source: str | Path | bytes, name: str = "") -> np.ndarray:
    """Mono float32 at 22050 Hz; ``source`` is a path or the file's bytes, decoded the
    same way (a path's suffix must be one of :data:`AUDIO_SUFFIXES`)."""
    if isinstance(source, bytes):
        label, data = name or "<bytes>", source
    else:
        label = name or str(source)
        refusal = suffix_refusal(str(source))
        if refusal:
            raise UnsupportedFormat(f"{label}: {refusal}")
        data = Path(source).read_bytes()
    return check_audio(decode(data, label), label)


def decode(data: bytes, label: str = "audio") -> np.ndarray:
    """The file's samples, mixed to mono and resampled to 22050 Hz."""
    import soundfile as sf

    if not data:
        raise UndecodableAudio(f"{label}: empty file (0 bytes)")
    try:
        samples, native_sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise UndecodableAudio(f"{label}: cannot decode audio: {_plain(exc.error_string)}") \
            from exc
    except Exception as exc:  # soundfile raises other types for some malformed headers
        raise UndecodableAudio(f"{label}: cannot decode audio: {_plain(str(exc), exc)}") from exc
    return resample(samples.mean(axis=1), native_sr, SAMPLE_RATE)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with soxr's high quality, as ``librosa.resample``:
    the length is ``ceil(n * target / orig)``, the dtype kept."""
    import soxr

    if orig_sr == target_sr:
        return y
    n_out = int(np.ceil(y.shape[-1] * float(target_sr) / orig_sr))
    rows = y.reshape(-1, y.shape[-1])
    out = np.zeros((len(rows), n_out), dtype=y.dtype)
    for row, samples in zip(out, rows, strict=True):
        resampled = soxr.resample(samples, orig_sr, target_sr, quality="soxr_hq")
        row[: min(n_out, len(resampled))] = resampled[:n_out]
    return out.reshape(*y.shape[:-1], n_out)


def _plain(text: str, exc: Exception | None = None) -> str:
    """A decoder's message as words for the catalog: no object reprs, never empty."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>:?", "", text).strip().rstrip(".")
    if not text:
        text = f"{type(exc).__name__} without a message" if exc else "unreadable data"
    return text[0].lower() + text[1:] if text[1:2].islower() else text


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
