"""What every HTTP source shares: audio downloads, credentials from an Airflow connection,
listing counters. Their API calls go through :class:`genreflow.retry.RetryPolicy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from genreflow.sources.base import FetchError, SourceUnavailable


@dataclass
class Tally:
    """Counters of one listing (a playlist, a genre); subclasses declare them as fields."""

    def add(self, other: Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


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
