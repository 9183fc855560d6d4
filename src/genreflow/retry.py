"""The one retry policy: what earns another attempt, how long to wait, when to give up.

Built on tenacity (installed with Airflow), for three kinds of wait:

- a store or source outage inside a task (:func:`with_retries`): an error whose class
  says ``transient = True`` (a store that could not be reached, a source server down) is
  retried a few times over a few seconds, then propagates so the task fails and Airflow
  retries it minutes later; an answer about the data (a missing key, a lost
  compare-and-swap, a refused credential) is never retried, and never recorded against
  a track;
- an HTTP API call of a remote source (:class:`RetryPolicy`): a transient fault (5xx, a
  timeout) backs off exponentially a few times; a rate limit waits what the server asks
  (``Retry-After``) but only up to a bound and a few times, since an API can ask for
  hours; when the policy gives up it raises :class:`GiveUp`, and the source skips that
  playlist or genre for this run and records why;
- a local lock held by another writer for microseconds (:func:`poll`), and a
  compare-and-swap another writer won (:func:`until_won`).

Sleeping goes through an injectable function so tests can assert the waits without
spending them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], None]

OUTAGE_DELAYS = (0.5, 1.0, 2.0)  # seconds before each new attempt: 4 attempts in ~3.5 s


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: the error's class says so (``transient``)."""
    return bool(getattr(exc, "transient", False))


def with_retries(what: str, fn: Callable[[], T], delays: tuple[float, ...] = OUTAGE_DELAYS,
                 sleep: Sleep = time.sleep) -> T:
    """``fn()``, again after each delay while it fails with a transient error; the last
    error propagates."""

    def warn(state: tenacity.RetryCallState) -> None:
        log.warning("%s: %s; attempt %d of %d, again in %.1f s", what,
                    state.outcome.exception(), state.attempt_number, len(delays) + 1,
                    state.upcoming_sleep)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(len(delays) + 1),
        wait=tenacity.wait_chain(*map(tenacity.wait_fixed, delays)),
        before_sleep=warn, sleep=sleep, reraise=True,
    )(fn)


def poll(fn: Callable[[], T], busy: type[Exception], seconds: float, interval: float,
         sleep: Sleep = time.sleep) -> T:
    """``fn()``, again every ``interval`` while it raises ``busy``, for at most
    ``seconds``; then the last ``busy`` propagates."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(busy),
        stop=tenacity.stop_after_delay(seconds), wait=tenacity.wait_fixed(interval),
        sleep=sleep, reraise=True,
    )(fn)


def until_won(fn: Callable[[], T], lost: type[Exception], attempts: int,
              between: Callable[[int], None]) -> T:
    """``fn()``, at most ``attempts`` times while it raises ``lost`` (a compare-and-swap
    another writer won), calling ``between(attempt)`` before each new one to read what
    won; then the last ``lost`` propagates. No wait: the winner has already landed."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(lost),
        stop=tenacity.stop_after_attempt(attempts),
        before_sleep=lambda state: between(state.attempt_number),
        sleep=lambda _: None, reraise=True,
    )(fn)


class GiveUp(Exception):
    """One call failed for good under the retry policy; its playlist or genre is skipped."""


class Transient(Exception):
    """This attempt failed in a way another attempt may not (5xx, a timeout)."""


class RateLimited(Exception):
    """The server asked to wait ``wait`` seconds before asking again."""

    def __init__(self, wait: float, message: str = "rate limited"):
        super().__init__(message)
        self.wait = wait


def retry_after(headers: Mapping[str, str] | None) -> float:
    """Seconds asked for (1 when not said); an unreadable value counts as too long rather
    than guessed."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 1)))
    except ValueError:
        return float("inf")


@dataclass
class RetryPolicy:
    """Of an HTTP API. Worst case per call: ``retries + 1`` attempts plus backoff
    ``backoff_factor * 2**n`` between them, plus up to ``rate_limit_retries`` waits of at
    most ``max_retry_after``."""

    retries: int = 3
    backoff_factor: float = 0.5
    max_retry_after: float = 30.0
    rate_limit_retries: int = 3
    sleep: Sleep = field(default=time.sleep, repr=False)

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it returns; it raises Transient or RateLimited to ask for
        another try, anything else propagates. GiveUp carries the last cause."""
        faults = {Transient: 0, RateLimited: 0}  # attempts failed so far, by kind

        def again(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception()
            if isinstance(exc, Transient | RateLimited):
                faults[type(exc)] += 1
                return True
            return False

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, RateLimited):
                return exc.wait
            return self.backoff_factor * 2 ** (faults[Transient] - 1)

        def stop(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception()
            if isinstance(exc, RateLimited):
                return (exc.wait > self.max_retry_after
                        or faults[RateLimited] > self.rate_limit_retries)
            return faults[Transient] > self.retries

        def warn(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception()
            if isinstance(exc, RateLimited):
                log.warning("%s: %s, waiting %g s", what, exc, exc.wait)
            else:
                log.warning("%s: %s, retry %d/%d in %g s", what, exc, faults[Transient],
                            self.retries, state.upcoming_sleep)

        def give_up(state: tenacity.RetryCallState) -> T:
            exc = state.outcome.exception()
            if not isinstance(exc, RateLimited):
                reason = f"{exc} (gave up after {faults[Transient]} attempts)"
            elif exc.wait > self.max_retry_after:
                reason = (f"{exc}: Retry-After {exc.wait:g} s exceeds max_retry_after "
                          f"{self.max_retry_after:g} s")
            else:
                reason = f"{exc} {faults[RateLimited]} times in a row"
            raise GiveUp(reason) from exc

        return tenacity.Retrying(retry=again, wait=wait, stop=stop, before_sleep=warn,
                                 retry_error_callback=give_up, sleep=self.sleep)(attempt)
