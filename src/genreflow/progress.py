"""Progress lines for long loops, so a task log is never silent for long."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
PROGRESS_SECONDS = 10.0  # a step longer than this says how far it is, this often


def progress(items: Iterable[T], total: int, what: str, log: logging.Logger,
             every: float = PROGRESS_SECONDS) -> Iterator[T]:
    """``items``, logging "<what>: <done>/<total>" whenever ``every`` seconds have passed,
    so a long loop is not silent in the task log (and a short one adds no line)."""
    last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        if time.monotonic() - last >= every and done < total:
            log.info("%s: %d/%d", what, done, total)
            last = time.monotonic()
