"""Where new labelled tracks come from: an inbox of ``<genre>/<file>`` audio, Jamendo's
Creative Commons tracks by genre tag, Spotify playlists; :func:`make_sources` builds them
by name. Each source's module is imported only when it is built, so the DAG file can
read ``KNOWN_SOURCES`` at parse time for the price of this module.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from genreflow.errors import PermanentError

if TYPE_CHECKING:
    from genreflow.config import Settings
    from genreflow.sources.base import Source


def _inbox(settings: Settings, known: Collection[str]) -> Source:
    from genreflow.sources.inbox import InboxSource
    from genreflow.storage import open_store

    return InboxSource(open_store(settings.inbox, must_exist=True), settings.genres,
                       settings.inbox_min_age)


def _jamendo(settings: Settings, known: Collection[str]) -> Source:
    from genreflow.sources.jamendo import JamendoSource

    return JamendoSource.from_env(settings.jamendo, genres=settings.genres, known=known)


def _spotify(settings: Settings, known: Collection[str]) -> Source:
    from genreflow.sources.spotify import SpotifySource

    endpoints = {"api_prefix": settings.spotify_api_prefix,
                 "token_url": settings.spotify_token_url}
    return SpotifySource.from_env(settings.playlists, genres=settings.genres,
                                  **{name: value for name, value in endpoints.items() if value})


_BUILDERS: dict[str, Callable[[Settings, Collection[str]], Source]] = {
    "inbox": _inbox, "jamendo": _jamendo, "spotify": _spotify,
}
KNOWN_SOURCES = tuple(_BUILDERS)  # what the DAG's `sources` param offers


def make_sources(settings: Settings, names: list[str],
                 known: Collection[str] = frozenset()) -> dict[str, Source]:
    """The named sources, built from settings; Spotify and Jamendo credentials come from
    env or an Airflow connection (see ``credentials`` in their modules). ``known``: catalog
    keys already settled, so a capped source (Jamendo) counts only new tracks."""
    unknown = sorted(set(names) - set(_BUILDERS))
    if unknown:
        raise PermanentError(f"unknown source(s) {unknown}; available: {list(KNOWN_SOURCES)}")
    return {name: _BUILDERS[name](settings, known) for name in names}
