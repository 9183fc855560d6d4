"""Mel spectrograms in numpy alone, equal to librosa's.

`genreflow predict` on a model that needs only the embedding pays for what it imports:
librosa's import (scipy.signal, numba and its cached kernels) costs more than a clip's
whole embedding. These functions give librosa's numbers (``librosa.filters.mel`` with
Slaney's scale and norm, ``librosa.feature.melspectrogram``); tests/test_spectrum.py
checks them against it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SLANEY_LINEAR_HZ = 200.0 / 3  # Hz per mel below 1 kHz
SLANEY_LOG_START_HZ = 1000.0
SLANEY_LOG_STEP = np.log(6.4) / 27.0  # log-Hz per mel above 1 kHz


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_start = SLANEY_LOG_START_HZ / SLANEY_LINEAR_HZ
    above = np.log(np.maximum(hz, SLANEY_LOG_START_HZ) / SLANEY_LOG_START_HZ)
    return np.where(hz >= SLANEY_LOG_START_HZ, log_start + above / SLANEY_LOG_STEP,
                    hz / SLANEY_LINEAR_HZ)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    log_start = SLANEY_LOG_START_HZ / SLANEY_LINEAR_HZ
    return np.where(mel >= log_start,
                    SLANEY_LOG_START_HZ * np.exp(SLANEY_LOG_STEP * (mel - log_start)),
                    SLANEY_LINEAR_HZ * mel)


@lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 triangles from 0 Hz to sr / 2, equal-area."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=8)
def hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window (scipy's ``get_window("hann", n, fftbins=True)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def power_spectrogram(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(..., samples) float32 -> (..., 1 + n_fft // 2, frames) float32 |STFT|^2, framed
    as ``librosa.stft``: zero-padded centring, float64 windowed frames, numpy's rfft,
    stored as complex64 before the magnitude."""
    pad = [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, pad), n_fft, axis=-1)
    spectrum = np.fft.rfft(frames[..., ::hop, :] * hann(n_fft), axis=-1).astype(np.complex64)
    return np.square(np.abs(spectrum)).swapaxes(-1, -2)


def melspectrogram(y: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """(..., samples) -> (..., n_mels, frames) float32 mel power spectrogram."""
    return np.einsum("...ft,mf->...mt", power_spectrogram(y, n_fft, hop),
                     mel_filterbank(sr, n_fft, n_mels), optimize=True)
