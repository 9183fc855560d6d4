"""Track audio -> (n_segments, columns of its feature sets), over many tracks in parallel.

Audio is decoded and cut into segments once; each feature set's extractor
(genreflow.features.sets) runs on the same segments, so rows of every set line up.
librosa/numba are imported inside functions only, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from genreflow.audio import SAMPLE_RATE, AudioError, load_audio, split_segments
from genreflow.features.sets import DEFAULT_SETS, resolve
from genreflow.parallel import allow_child_processes

Sets = tuple[str, ...]  # feature set names: plain strings cross process boundaries

IN_FLIGHT_PER_WORKER = 2  # queued tracks per worker: keeps workers busy, memory bounded
# A worker pool costs ~3 s to start (each spawned worker imports librosa and loads numba's
# cache) and saves ~40 ms per track per extra worker (bench/RESULTS.md "## Features"):
# smaller batches run in-process, and Airflow runs the mapped batches in parallel instead.
POOL_MIN_TRACKS = 60
_SINGLE_THREAD_ENV = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def segment_features(segments: np.ndarray, sets: Sets = DEFAULT_SETS) -> np.ndarray:
    """(n, 66149) segments -> (n, columns of the named ``sets``, in canonical order)."""
    return np.concatenate([s.extract(segments, SAMPLE_RATE) for s in resolve(sets)], axis=1)


def extract_audio_features(source: bytes | Path, name: str = "",
                           sets: Sets = DEFAULT_SETS) -> np.ndarray:
    return segment_features(split_segments(load_audio(source, name)), sets)


def model_input(source: bytes | Path, name: str, manifest: dict) -> np.ndarray:
    """The features ``manifest``'s model needs for one audio file (a row per 3-s segment,
    the columns of the sets it records; versions published before feature sets: librosa).
    An array, not a table: it is computed in a child process that need not import pandas."""
    from genreflow.features.sets import manifest_sets

    return extract_audio_features(source, name, tuple(s.name for s in manifest_sets(manifest)))


def warm_numba_cache() -> None:
    """Compile every numba kernel the extractors use, once, in this one process.

    numba's on-disk cache has a race when processes compile the same gufunc at once
    (numba issue 10128: librosa's ``localmax`` cache files written by two processes
    disagree, and a later process segfaults loading them). Run at install and deploy time
    (`genreflow warm-cache`), before anything extracts in parallel, so that concurrent
    processes only ever load the cache.
    """
    from genreflow.audio import SEGMENT_SAMPLES
    from genreflow.features.reference import reference_features
    from genreflow.features.sets import SETS

    t = np.arange(SEGMENT_SAMPLES) / SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(SEGMENT_SAMPLES)
    segments = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * noise).astype(np.float32)[None]
    segment_features(segments, tuple(SETS))
    reference_features(segments)


def _extract_job(job_id: str, source: bytes | Path,
                 sets: Sets = DEFAULT_SETS) -> tuple[str, np.ndarray | AudioError]:
    """One track; a refusal is returned (not raised) so it crosses the process boundary
    as a value, for the caller to log once; anything else is a bug and propagates."""
    try:
        return job_id, extract_audio_features(source, job_id, sets)
    except AudioError as exc:
        return job_id, exc


def single_threaded() -> None:
    """One thread for numba, OpenMP and BLAS in this process: for a worker whose pool (or
    the parent beside it) is the parallelism."""
    for name in _SINGLE_THREAD_ENV:
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _init_worker() -> None:
    """One thread per worker and a warm, compiled extractor."""
    single_threaded()
    import genreflow.features.fast  # noqa: F401  (loads numba's cached machine code once)


def extract_many(
    jobs: Iterable[tuple[str, bytes | Path]], workers: int = 1,
    sets: Sets = DEFAULT_SETS,
) -> Iterator[tuple[str, np.ndarray | AudioError]]:
    """Yield ``(job_id, features or the AudioError that refused it)`` for each job.

    ``workers > 1`` runs tracks in a process pool and yields in completion order; at
    most ``IN_FLIGHT_PER_WORKER * workers`` jobs (and their bytes) are held at once, so
    the corpus streams through. Each track runs with one BLAS thread: extract tasks run
    side by side, and two of them each multi-threading musicnn's matrix products on two
    cores took twice as long (bench/RESULTS.md). A refused track never stops the others;
    any other exception is a bug and is raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        from threadpoolctl import threadpool_limits

        for job_id, source in jobs:
            with threadpool_limits(limits=1):  # parallel tasks, not BLAS threads, use the cores
                result = _extract_job(job_id, source, sets)
            yield result
        return
    allow_child_processes()
    pending: set[Future] = set()
    job_iter = iter(jobs)
    limit = IN_FLIGHT_PER_WORKER * workers
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker
    ) as pool:
        try:
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < limit:
                    job = next(job_iter, None)
                    if job is None:
                        exhausted = True
                    else:
                        pending.add(pool.submit(_extract_job, *job, sets))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()
