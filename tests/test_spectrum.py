"""The librosa-free resampling and mel spectrogram give librosa's numbers."""

import numpy as np
import pytest

from genreflow.audio import resample
from genreflow.features import spectrum

librosa = pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def noise():
    rng = np.random.default_rng(7)
    return (0.3 * rng.standard_normal((3, 66149))).astype(np.float32)


@pytest.mark.parametrize(("orig", "target"), [(22050, 16000), (44100, 22050), (8000, 22050)])
def test_resample_equals_librosa(noise, orig, target):
    ours = resample(noise, orig, target)
    theirs = librosa.resample(noise, orig_sr=orig, target_sr=target, axis=-1)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    one = resample(noise[0], orig, target)
    np.testing.assert_array_equal(one, theirs[0])


def test_resample_at_the_same_rate_is_the_input(noise):
    assert resample(noise, 22050, 22050) is noise


@pytest.mark.parametrize(("sr", "n_fft", "n_mels"), [(16000, 512, 96), (22050, 2048, 128)])
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels):
    ours = spectrum.mel_filterbank(sr, n_fft, n_mels)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    assert ours.shape == theirs.shape == (n_mels, 1 + n_fft // 2)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)


def test_hann_is_scipys_periodic_window():
    scipy_signal = pytest.importorskip("scipy.signal")
    np.testing.assert_allclose(spectrum.hann(512), scipy_signal.get_window("hann", 512),
                               rtol=0, atol=1e-15)


def test_melspectrogram_equals_librosa(noise):
    y = resample(noise, 22050, 16000)
    ours = spectrum.melspectrogram(y, 16000, 512, 256, 96)
    theirs = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256,
                                            n_mels=96)
    assert ours.shape == theirs.shape == (3, 96, 188) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.max()))


def test_embedding_features_of_a_file_import_no_librosa(tmp_path):
    """A model that reads only the embedding is served without librosa's import (scipy.
    signal, numba and its kernels: more than the clip's whole forward pass)."""
    import subprocess
    import sys

    import soundfile as sf

    t = np.arange(4 * 44100) / 44100
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
             44100)
    code = (
        "import sys; from genreflow.extraction import extract_audio_features; "
        f"x = extract_audio_features({str(tmp_path / 'tone.wav')!r}, 'tone', ('musicnn',)); "
        "print(x.shape, sorted(m for m in ('librosa', 'numba', 'scipy.signal', 'pandas') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "(1, 250) []"
