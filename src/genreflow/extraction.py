"""Track audio -> (n_segments, 311) feature matrix, over many tracks in parallel."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from genreflow.audio import AudioError, load_audio, split_segments


def segment_features(segments: np.ndarray) -> np.ndarray:
    """The production extractor: (n, 66149) segments -> (n, 311) features."""
    from genreflow.features.reference import reference_features

    return reference_features(segments)


def extract_audio_features(source: bytes | Path, name: str = "") -> np.ndarray:
    return segment_features(split_segments(load_audio(source, name)))


def extract_many(
    jobs: Iterable[tuple[str, bytes | Path]], workers: int = 1
) -> Iterator[tuple[str, np.ndarray | AudioError]]:
    """Yield ``(job_id, features or the AudioError that refused it)`` for each job."""
    for job_id, source in jobs:
        try:
            yield job_id, extract_audio_features(source, job_id)
        except AudioError as exc:
            yield job_id, exc
