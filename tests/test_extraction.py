"""extract_many: the process pool gives the in-process numbers and isolates bad tracks."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

from genreflow.audio import SAMPLE_RATE, AudioError, TooShortAudio, UndecodableAudio
from genreflow.extraction import extract_audio_features, extract_many


def track_bytes(seconds: float, freq: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buf.getvalue()


JOBS = [
    ("a", track_bytes(6.5, 220.0, 0)),
    ("corrupt", b"not audio at all" * 64),
    ("b", track_bytes(3.2, 330.0, 1)),
    ("short", track_bytes(1.0, 440.0, 2)),
    ("c", track_bytes(9.1, 550.0, 3)),
]


def test_workers_two_match_workers_one_and_isolate_bad_tracks():
    serial = dict(extract_many(iter(JOBS), workers=1))
    parallel = dict(extract_many(iter(JOBS), workers=2))
    assert set(serial) == set(parallel) == {job_id for job_id, _ in JOBS}
    assert isinstance(parallel["corrupt"], UndecodableAudio)
    assert isinstance(parallel["short"], TooShortAudio)
    for job_id in ("a", "b", "c"):
        assert not isinstance(serial[job_id], AudioError)
        np.testing.assert_array_equal(parallel[job_id], serial[job_id])
    assert [serial[j].shape[0] for j in ("a", "b", "c")] == [2, 1, 3]


def test_extract_audio_features_shape():
    features = extract_audio_features(JOBS[0][1], "a")
    assert features.shape == (2, 311) and np.all(np.isfinite(features))


def test_warm_cache_compiles_every_gufunc_into_the_cache_dir(tmp_path):
    """After `genreflow warm-cache` the kernels parallel extraction needs are on disk, so
    concurrent processes load them instead of compiling (and racing on) them."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "genreflow.cli", "warm-cache"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "numba cache warm" in done.stdout
    cached = {p.name.split("-")[1].split(".py")[0] for p in tmp_path.rglob("*.nbi")
              if p.name.startswith("guf-")}
    assert {"utils._localmax", "utils.__peak_pick"} <= cached
    assert any(tmp_path.rglob("fast.*.nbi")), "genreflow's own kernels are cached too"


def _extract_in_a_daemon(jobs, results) -> None:
    import joblib

    try:
        features = dict(extract_many(iter(jobs), workers=2))
        results.put((features, joblib.effective_n_jobs(2)))
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(repr(exc))


def test_a_pool_starts_inside_a_daemonic_process_like_a_celery_worker():
    """Celery runs tasks in daemonic processes: the extractor's pool must still start
    there, and joblib (model selection) must get its two jobs."""
    import multiprocessing

    jobs = [job for job in JOBS if job[0] in ("a", "b")]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    daemon = context.Process(target=_extract_in_a_daemon, args=(jobs, results), daemon=True)
    daemon.start()
    outcome = results.get(timeout=300)
    daemon.join(timeout=60)
    assert not isinstance(outcome, str), outcome
    features, n_jobs = outcome
    serial = dict(extract_many(iter(jobs), workers=1))
    assert set(features) == {"a", "b"} and n_jobs == 2
    for job_id, values in serial.items():
        np.testing.assert_allclose(features[job_id], values, rtol=1e-5, atol=1e-6)
