"""Infrastructure errors are not a track's fault: retry them briefly, then let them fail
the task so Airflow retries it later; never record them against a track.

A short store or network blip costs a few seconds here; a longer outage fails the task
(Airflow's retry comes minutes later) and the tracks are fetched again on that retry,
reusing whatever features were already stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from genreflow.sources.base import SourceUnavailable
from genreflow.storage import KeyNotFound, PermanentStoreError, StoreError, WriteConflict

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before each new attempt: 4 attempts in ~3.5 s

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """A store or source that could not be reached, as opposed to an answer about the data
    (a missing key, a lost compare-and-swap, a refused credential) that the same request
    would get again."""
    if isinstance(exc, KeyNotFound | WriteConflict | PermanentStoreError):
        return False
    return isinstance(exc, StoreError | SourceUnavailable)


def with_retries(what: str, fn: Callable[[], T], delays: tuple[float, ...] = RETRY_DELAYS) -> T:
    """``fn()``, again after each delay while it fails with a transient error; the last
    error propagates."""
    for attempt, delay in enumerate(delays, start=1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s: %s; attempt %d of %d, again in %.1f s", what, exc, attempt,
                        len(delays) + 1, delay)
            time.sleep(delay)
    return fn()
