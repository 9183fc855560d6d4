"""The production extractor: the reference's 311 numbers from one STFT per segment.

``reference.py`` calls each librosa function on the raw segment, so it recomputes the
STFT for every feature and spends ~95% of its time in ``scipy.ndimage.median_filter``
inside ``librosa.effects.harmonic``. Here one float32 STFT per segment (computed exactly
as ``librosa.stft`` does) feeds every spectral feature, HPSS uses the exact compiled
median of :mod:`genreflow.features.median`, and the per-frame reductions that librosa
builds from many temporary arrays are single numba passes. Anything discrete (chroma's
tuning estimate, spectral rolloff's bin, the tempo's lag) follows librosa's float32
arithmetic step by step so it lands on the same value.

Only :mod:`genreflow.extraction` imports this module, lazily, so DAG parsing never pays
for librosa or numba.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import scipy.fft
from numba import njit
from threadpoolctl import ThreadpoolController

from genreflow.features.median import median_filter_axis0
from genreflow.features.names import N_FEATURES, N_MELS, N_MFCC

N_FFT = 2048
HOP = 512
HPSS_KERNEL = 31  # librosa.decompose.hpss default
ROLL_PERCENT = 0.85
TOP_DB = 80.0
AMIN = 1e-10
ZC_THRESHOLD = 1e-10
TUNING_FMIN, TUNING_FMAX = 150.0, 4000.0  # librosa.piptrack defaults
CHUNK = 16  # segments whose mel features are batched; bounds memory (~1 MB each)


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


@lru_cache(maxsize=4)
def _window() -> np.ndarray:
    return librosa.filters.get_window("hann", N_FFT, fftbins=True)


@lru_cache(maxsize=4)
def _mel_basis(sr: int) -> np.ndarray:
    return np.ascontiguousarray(librosa.filters.mel(sr=sr, n_fft=N_FFT).T)


@lru_cache(maxsize=256)
def _chroma_basis(sr: int, tuning: float) -> np.ndarray:
    """Tunings come from a 0.01-wide histogram, so few distinct filter banks occur."""
    return np.ascontiguousarray(librosa.filters.chroma(sr=sr, n_fft=N_FFT, tuning=tuning).T)


@lru_cache(maxsize=4)
def _fft_freqs(sr: int) -> np.ndarray:
    return librosa.fft_frequencies(sr=sr, n_fft=N_FFT)


@lru_cache(maxsize=4)
def _istft_norm(n_frames: int, length: int) -> np.ndarray:
    """librosa.istft's window-envelope divisor for a centred signal of ``length``."""
    envelope = librosa.filters.window_sumsquare(
        window="hann", n_frames=n_frames, win_length=N_FFT, n_fft=N_FFT, hop_length=HOP,
        dtype=np.float32,
    )
    envelope = librosa.util.fix_length(envelope[N_FFT // 2 :], size=length)
    envelope[envelope <= np.finfo(np.float32).tiny] = 1.0
    return envelope


def _stft(y: np.ndarray) -> np.ndarray:
    """(m, L) float32 -> (m, frames, bins) complex64, time-major.

    Same numbers as ``librosa.stft(y)``: zero-padded centring, float64 windowed frames,
    scipy's rfft, stored as complex64. Time-major keeps each frame's bins contiguous.
    """
    padded = np.pad(y, ((0, 0), (N_FFT // 2, N_FFT // 2)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, ::HOP]
    return scipy.fft.rfft(frames * _window(), axis=-1).astype(np.complex64)


@njit(cache=True, nogil=True)
def _rms_zcr(y, out):
    """rms (constant pad) and zero-crossing rate (edge pad) of centred 2048/512 frames."""
    n = y.shape[0]
    half = N_FFT // 2
    frames = 1 + n // HOP
    rms = np.empty(frames)
    zcr = np.empty(frames)
    for t in range(frames):
        start = t * HOP - half
        power = 0.0
        crossings = 0
        prev_neg = False
        for i in range(N_FFT):
            j = start + i
            if 0 <= j < n:
                v = y[j]
                power += v * v
            else:
                v = y[0] if j < 0 else y[n - 1]
            neg = v < -ZC_THRESHOLD
            if i > 0 and neg != prev_neg:
                crossings += 1
            prev_neg = neg
        rms[t] = np.sqrt(power / N_FFT)
        zcr[t] = crossings / N_FFT
    out[0] = rms.mean()
    out[1] = rms.std()
    out[2] = zcr.mean()
    out[3] = zcr.std()


@njit(cache=True, nogil=True)
def _spectral_shape(mag, freqs, out):
    """Centroid, bandwidth (p=2) and 85% rolloff per frame of ``mag`` (frames, bins)."""
    frames, bins = mag.shape
    centroid = np.empty(frames)
    bandwidth = np.empty(frames)
    rolloff = np.empty(frames)
    tiny = np.finfo(np.float32).tiny
    for t in range(frames):
        total = 0.0
        for f in range(bins):
            total += mag[t, f]
        norm = total if total >= tiny else 1.0
        c = 0.0
        for f in range(bins):
            c += freqs[f] * (mag[t, f] / norm)
        spread = 0.0
        for f in range(bins):
            d = abs(c - freqs[f])
            spread += (mag[t, f] / norm) * (d * d)
        centroid[t] = c
        bandwidth[t] = np.sqrt(spread)
        # float32 running sum, as np.cumsum over a float32 spectrogram
        running = np.float32(0.0)
        for f in range(bins):
            running += mag[t, f]
        threshold = np.float32(ROLL_PERCENT) * running
        running = np.float32(0.0)
        rolloff[t] = freqs[bins - 1]
        for f in range(bins):
            running += mag[t, f]
            if running >= threshold:
                rolloff[t] = freqs[f]
                break
    out[0] = centroid.mean()
    out[1] = centroid.std()
    out[2] = bandwidth.mean()
    out[3] = bandwidth.std()
    out[4] = rolloff.mean()
    out[5] = rolloff.std()


@njit(cache=True, nogil=True)
def _pitch_candidates(power, lo, hi, sr):
    """``librosa.piptrack(S=power)``'s nonzero (pitch, magnitude) pairs, same float ops.

    ``lo:hi`` are the bins inside [fmin, fmax). The dtype dance (float64 parabola,
    float32 storage) mirrors librosa's numba stencil and numpy casting exactly.
    """
    frames, bins = power.shape
    pitches = np.empty(frames * (hi - lo), dtype=np.float32)
    mags = np.empty(frames * (hi - lo), dtype=np.float32)
    count = 0
    for t in range(frames):
        top = power[t, 0]
        for f in range(1, bins):
            if power[t, f] > top:
                top = power[t, f]
        ref = np.float32(0.1) * top
        for f in range(lo, hi):
            x0 = power[t, f]
            xm = power[t, f - 1]
            xp = power[t, f + 1]
            here = x0 if x0 > ref else np.float32(0.0)
            left = xm if xm > ref else np.float32(0.0)
            right = xp if xp > ref else np.float32(0.0)
            if not (here > left and here >= right):
                continue
            a = np.float64(np.float32(xp + xm)) - 2 * np.float64(x0)
            b = np.float64(np.float32(xp - xm)) / 2
            shift = np.float32(0.0) if abs(b) >= abs(a) else np.float32(-b / a)
            avg = np.float32(xp - xm) / np.float32(2.0)
            dskew = np.float32(np.float32(0.5) * avg) * shift
            pitches[count] = np.float32((np.float64(f) + np.float64(shift)) * sr / N_FFT)
            mags[count] = x0 + dskew
            count += 1
    return pitches[:count], mags[:count]


def _tuning(power: np.ndarray, sr: int) -> float:
    """``librosa.estimate_tuning(S=power)`` for one (frames, bins) power spectrogram."""
    freqs = _fft_freqs(sr)
    inside = np.flatnonzero((freqs >= TUNING_FMIN) & (freqs < min(TUNING_FMAX, sr / 2)))
    pitches, mags = _pitch_candidates(power, int(inside[0]), int(inside[-1]) + 1, float(sr))
    keep = pitches > 0
    if not keep.any():
        return 0.0
    threshold = np.median(mags[keep])
    return float(librosa.pitch_tuning(pitches[keep & (mags >= threshold)], bins_per_octave=12))


@njit(cache=True, nogil=True)
def _harmonic_spectrum(stft, mag, harm, perc_t):
    """``librosa.decompose.hpss`` harmonic part: soft mask (power 2, margin 1) * phase.

    ``perc_t`` is the percussive median in (bins, frames) layout.
    """
    frames, bins = mag.shape
    out = np.empty_like(stft)
    tiny = np.finfo(np.float32).tiny
    for t in range(frames):
        for f in range(bins):
            h = harm[t, f]
            p = perc_t[f, t]
            z = max(h, p)
            if z < tiny:
                mask = np.float32(0.5)
            else:
                hm = h / z
                pm = p / z
                hm = hm * hm
                mask = hm / (hm + pm * pm)
            m = mag[t, f]
            nonzero = m if m != 0 else np.float32(1.0)
            re = stft[t, f].real / nonzero + (np.float32(1.0) if m == 0 else np.float32(0.0))
            im = stft[t, f].imag / nonzero
            scaled = m * mask
            out[t, f] = complex(scaled * re, scaled * im)
    return out


@njit(cache=True, nogil=True)
def _overlap_add(frames, norm, length):
    """librosa.istft's overlap-add (float32 accumulator), centre trim and normalisation."""
    count, width = frames.shape
    buf = np.zeros(width + HOP * (count - 1), dtype=np.float32)
    for t in range(count):
        base = t * HOP
        for i in range(width):
            buf[base + i] += frames[t, i]
    y = buf[N_FFT // 2 : N_FFT // 2 + length].copy()
    for i in range(length):
        y[i] /= norm[i]
    return y


def _harmonic_stats(stft: np.ndarray, mag: np.ndarray, length: int) -> tuple[float, float]:
    """Mean and std of ``librosa.effects.harmonic`` for one segment's STFT."""
    harm = np.empty_like(mag)
    median_filter_axis0(mag, HPSS_KERNEL, harm)
    mag_t = np.ascontiguousarray(mag.T)
    perc_t = np.empty_like(mag_t)
    median_filter_axis0(mag_t, HPSS_KERNEL, perc_t)
    spectrum = _harmonic_spectrum(stft, mag, harm, perc_t)
    frames = scipy.fft.irfft(spectrum, n=N_FFT, axis=-1) * _window()
    y = _overlap_add(frames, _istft_norm(mag.shape[0], length), length)
    return float(np.mean(y, dtype=np.float64)), float(np.std(y, dtype=np.float64))


def _power_to_db(mel: np.ndarray) -> np.ndarray:
    """librosa.power_to_db (ref 1, top_db 80) with the floor taken per segment."""
    db = 10.0 * np.log10(np.maximum(np.float32(AMIN), mel))
    return np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - TOP_DB)


def _chunk_features(y: np.ndarray, sr: int) -> np.ndarray:
    """Features of a few segments: spectra one segment at a time (cache-sized), then the
    mel-based features batched (librosa's onset/tempo code runs once per chunk)."""
    m, length = y.shape
    out = np.empty((m, N_FEATURES))
    freqs = _fft_freqs(sr)
    mels = []
    for i in range(m):
        row = out[i]
        stft = _stft(y[i : i + 1])[0]
        mag = np.abs(stft)
        power = np.square(mag)
        mels.append(power @ _mel_basis(sr))
        raw = power @ _chroma_basis(sr, _tuning(power, sr))
        top = np.abs(raw).astype(np.float64).max(axis=1, keepdims=True)
        chroma = raw / np.where(top < np.finfo(np.float32).tiny, 1.0, top)
        row[0], row[1] = chroma.mean(), chroma.std()
        rms_zcr = np.empty(4)
        _rms_zcr(y[i], rms_zcr)
        row[2:4] = rms_zcr[:2]
        _spectral_shape(mag, freqs, row[4:10])
        row[10:12] = rms_zcr[2:]
        row[12:14] = _harmonic_stats(stft, mag, length)
    mel = np.stack(mels)  # (m, frames, n_mels)
    db = _power_to_db(mel)
    mfcc = scipy.fft.dct(db, type=2, norm="ortho", axis=-1)[..., :N_MFCC]
    onset = librosa.onset.onset_strength(S=db.transpose(0, 2, 1), sr=sr)
    out[:, 14] = librosa.feature.tempo(onset_envelope=onset, sr=sr)[..., 0]
    start = 15
    for block in (mfcc, mel):
        width = block.shape[-1]
        out[:, start : start + width] = block.mean(axis=1, dtype=np.float64)
        out[:, start + width : start + 2 * width] = block.std(axis=1, dtype=np.float64)
        start += 2 * width
    assert start == N_FEATURES and mel.shape[-1] == N_MELS
    return out


def fast_features(segments: np.ndarray, sr: int = 22050) -> np.ndarray:
    """(n_segments, samples) audio -> (n_segments, 311), the reference's values and order."""
    y = np.asarray(segments, dtype=np.float32)
    if y.ndim != 2 or 1 + y.shape[1] // HOP <= HPSS_KERNEL // 2:
        raise ValueError(f"expected (n_segments, samples) of full segments, got {y.shape}")
    out = np.empty((y.shape[0], N_FEATURES))
    # Single-threaded BLAS: the small matmuls gain nothing from threads, and a fixed
    # summation order makes the numbers identical in-process and in pool workers.
    with _blas().limit(limits=1, user_api="blas"):
        for start in range(0, y.shape[0], CHUNK):
            out[start : start + CHUNK] = _chunk_features(y[start : start + CHUNK], sr)
    return out
