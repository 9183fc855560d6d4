"""Feature extraction cost: reference vs production librosa features, the musicnn
embedding per 30 s of audio, per-core throughput, pool scaling, memory.

Run: .venv/bin/python bench/bench_features.py [--clips-per-genre N]
Uses real clips from ../shared/data (or $GENREFLOW_SHARED_DATA) when present, else
synthetic tracks. Per-core numbers use process CPU time with every thread pool at 1.
"""

from __future__ import annotations

import os

for _name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from genreflow.audio import SAMPLE_RATE, load_audio, split_segments  # noqa: E402
from genreflow.extraction import extract_many  # noqa: E402
from genreflow.features.fast import fast_features  # noqa: E402
from genreflow.features.musicnn import load_tagger, musicnn_features  # noqa: E402
from genreflow.features.reference import reference_features  # noqa: E402
from genreflow.features.sets import SETS  # noqa: E402

log = logging.getLogger("bench_features")


def shared_clips(per_genre: int) -> list[Path]:
    root = os.environ.get("GENREFLOW_SHARED_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    folder = base / "gtzan-excerpts"
    if not folder.is_dir():
        return []
    return [p for g in sorted(folder.iterdir()) if g.is_dir()
            for p in sorted(g.glob("*.ogg"))[:per_genre]]


def synthetic_jobs(count: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(count):
        t = np.arange(17 * SAMPLE_RATE) / SAMPLE_RATE
        y = 0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)
        buf = io.BytesIO()
        sf.write(buf, y.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="FLOAT")
        jobs.append((f"synthetic{i}", buf.getvalue()))
    return jobs


def cpu_seconds(fn, segments: np.ndarray) -> float:
    start = time.process_time()
    fn(segments)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-genre", type=int, default=1, help="for the per-core part")
    parser.add_argument("--pool-clips-per-genre", type=int, default=9, help="for extract_many")
    args = parser.parse_args()
    clips = shared_clips(args.clips_per_genre)
    jobs = [(p.name, p) for p in clips] if clips else synthetic_jobs(10)
    pool_clips = shared_clips(args.pool_clips_per_genre)
    pool_jobs = [(p.name, p) for p in pool_clips] if pool_clips else synthetic_jobs(60)
    source = "real GTZAN excerpts" if clips else "synthetic tracks"
    segments = np.concatenate([split_segments(load_audio(src, name)) for name, src in jobs])
    audio_s = segments.size / SAMPLE_RATE
    print(f"clips: {len(jobs)} {source}, {len(segments)} segments, {audio_s:.1f} s of audio")

    with threadpool_limits(limits=1):
        fast_features(segments[:1])  # load numba's compiled code before timing
        ref_cpu = cpu_seconds(reference_features, segments)
        fast_cpu = cpu_seconds(fast_features, segments)
    ref_rate, fast_rate = audio_s / ref_cpu, audio_s / fast_cpu
    print(f"reference : {ref_cpu:7.2f} CPU-s  {ref_rate:8.1f} s audio / CPU-s  "
          f"({1e3 * ref_cpu / len(segments):.1f} ms/segment)")
    print(f"production: {fast_cpu:7.2f} CPU-s  {fast_rate:8.1f} s audio / CPU-s  "
          f"({1e3 * fast_cpu / len(segments):.1f} ms/segment)")
    print(f"ratio per core: {fast_rate / ref_rate:.1f}x")

    with threadpool_limits(limits=1):
        load_tagger("MSD_musicnn")  # weights read once per process, not per track
        embed_cpu = cpu_seconds(lambda s: musicnn_features(s, SAMPLE_RATE), segments)
    per_30 = 30 / audio_s
    print(f"musicnn   : {embed_cpu:7.2f} CPU-s  {audio_s / embed_cpu:8.1f} s audio / CPU-s  "
          f"({1e3 * embed_cpu / len(segments):.1f} ms/segment)")
    print(f"per 30 s of audio, one core: librosa {fast_cpu * per_30:.2f} CPU-s, musicnn "
          f"{embed_cpu * per_30:.2f} CPU-s, both {(fast_cpu + embed_cpu) * per_30:.2f} CPU-s "
          f"(musicnn / librosa {embed_cpu / fast_cpu:.2f}x)")

    for sets in (("librosa",), tuple(SETS)):
        for workers in (1, 2):
            start = time.perf_counter()
            results = list(extract_many(iter(pool_jobs), workers=workers, sets=sets))
            wall = time.perf_counter() - start
            done = sum(r.shape[0] for _, r in results if isinstance(r, np.ndarray))
            print(f"extract_many {'+'.join(sets)} workers={workers}: {len(pool_jobs)} tracks, "
                  f"{wall:6.2f} s wall, {done * 3.0 / wall:7.1f} s audio / wall-s (incl. "
                  "decoding, pool start-up)")

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: main process {own:.0f} MiB, largest worker {child:.0f} MiB")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    main()
