"""What every HTTP source shares: one bounded retry policy, audio downloads, credentials
from an Airflow connection.

Remote APIs fail in three ways that need different answers: a transient fault (5xx, a
timeout) is retried with exponential backoff a few times; a rate limit waits what the
server asks (``Retry-After``) but only up to a bound and a few times, since an API can ask
for hours; anything else is an answer that the same request would get again. When the
policy gives up it raises :class:`GiveUp`, and the source skips that playlist or genre for
this run and records why. Sleeping goes through an injectable function so tests can
assert the waits without spending them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import requests

from genreflow.sources.base import FetchError, SourceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class GiveUp(Exception):
    """One call failed for good under the retry policy; its playlist or genre is skipped."""


class Transient(Exception):
    """This attempt failed in a way another attempt may not (5xx, a timeout)."""


class RateLimited(Exception):
    """The server asked to wait ``wait`` seconds before asking again."""

    def __init__(self, wait: float, message: str = "rate limited"):
        super().__init__(message)
        self.wait = wait


@dataclass
class Tally:
    """Counters of one listing (a playlist, a genre); subclasses declare them as fields."""

    def add(self, other: Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RetryPolicy:
    """Worst case per call: ``retries + 1`` attempts plus backoff ``backoff_factor * 2**n``
    between them, plus up to ``rate_limit_retries`` waits of at most ``max_retry_after``."""

    retries: int = 3
    backoff_factor: float = 0.5
    max_retry_after: float = 30.0
    rate_limit_retries: int = 3
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it returns; it raises Transient or RateLimited to ask for
        another try, anything else propagates. GiveUp carries the last cause."""
        failures = waits = 0
        while True:
            try:
                return attempt()
            except RateLimited as exc:
                if exc.wait > self.max_retry_after:
                    raise GiveUp(
                        f"{exc}: Retry-After {exc.wait:g} s exceeds "
                        f"max_retry_after {self.max_retry_after:g} s"
                    ) from exc
                if waits >= self.rate_limit_retries:
                    raise GiveUp(f"{exc} {waits + 1} times in a row") from exc
                waits += 1
                log.warning("%s: %s, waiting %g s", what, exc, exc.wait)
                self.sleep(exc.wait)
            except Transient as exc:
                failures += 1
                if failures > self.retries:
                    raise GiveUp(f"{exc} (gave up after {failures} attempts)") from exc
                delay = self.backoff_factor * 2 ** (failures - 1)
                log.warning("%s: %s, retry %d/%d in %g s", what, exc, failures, self.retries,
                            delay)
                self.sleep(delay)


def retry_after(headers: Mapping[str, str] | None) -> float:
    """Seconds asked for (1 when not said); an unreadable value counts as too long rather
    than guessed."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 1)))
    except ValueError:
        return float("inf")


def download(url: str, timeout: float, label: str, kind: str = "audio") -> bytes:
    """An audio file's bytes (``kind`` names it in messages: "preview", "audio"). A 5xx or a
    network error is the server's fault (SourceUnavailable: retried, then the task fails);
    any other non-200 or an empty body is the track's (FetchError: recorded as failed)."""
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise SourceUnavailable(f"{label}: {kind} download failed: {exc}") from exc
    if response.status_code >= 500:
        raise SourceUnavailable(
            f"{label}: {kind} server answered HTTP {response.status_code}")
    if response.status_code != 200:
        raise FetchError(
            f"{label}: {kind} download returned HTTP {response.status_code} for {url}")
    if not response.content:
        raise FetchError(f"{label}: {kind} download was empty ({url})")
    return response.content


def airflow_connection(conn_id: str, env_name: str, error: type[Exception]):
    """The Airflow connection ``conn_id`` (named by the env variable ``env_name``), so a
    secret can live in Airflow's backend instead of plain env; ``error`` if it is missing."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException as exc:
        raise error(f"{env_name}={conn_id}: no such Airflow connection") from exc
