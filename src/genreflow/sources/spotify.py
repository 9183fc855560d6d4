"""Candidate tracks from Spotify playlists (one list of playlist ids per genre), via spotipy.

What the original study scraped. Two facts limit it today (docs/sources.md): since
2024-11 Spotify returns no ``preview_url`` to newly created apps, so most tracks end up in
``Discovery.rejected``; and Spotify's developer policy forbids training ML models on Spotify
content, so whether this source may feed training is a policy decision, not a technical one.

Network behaviour is bounded by one policy applied here rather than by spotipy's built-in
urllib3 retries: those sleep for any ``Retry-After`` (429 and 503) however long, cannot be
given a test clock, and report exhausted 5xx retries as a 429 "Max Retries", losing the cause.
So the spotipy client gets a plain session without retries and :meth:`SpotifySource._call`
maps its errors onto the shared :class:`~genreflow.retry.RetryPolicy`: 429 waits
``Retry-After`` if it is within ``max_retry_after`` (a bounded number of times), 5xx/timeouts
back off and retry a few times, a 401 refreshes the token once, anything else skips
the playlist. A skipped playlist is recorded in ``rejected``; only
rejected credentials fail the run (:class:`SpotifyAuthError`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.oauth2 import SpotifyClientCredentials, SpotifyOauthError

from genreflow.errors import PermanentError
from genreflow.retry import GiveUp, RateLimited, RetryPolicy, Transient, retry_after
from genreflow.sources.base import Discovery, FetchError, TrackRef
from genreflow.sources.remote import Tally, airflow_connection, download

log = logging.getLogger(__name__)

API_PREFIX = "https://api.spotify.com/v1/"
TOKEN_URL = "https://accounts.spotify.com/api/token"
ENV_CLIENT_ID = "SPOTIPY_CLIENT_ID"
ENV_CLIENT_SECRET = "SPOTIPY_CLIENT_SECRET"
ENV_CONN_ID = "GENREFLOW_SPOTIFY_CONN_ID"
PAGE_SIZE = 50
RETRY_STATUSES = frozenset({500, 502, 503, 504})
NO_PREVIEW = "no preview_url: Spotify returns none to apps created since 2024-11"

T = TypeVar("T")


class SpotifyError(RuntimeError):
    """Spotify cannot be used as configured for this run."""


class SpotifyAuthError(PermanentError, SpotifyError):
    """The client credentials are missing or were rejected: retrying cannot help."""


def credentials_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(client_id, client_secret)`` from the environment spotipy users already set."""
    env = os.environ if environ is None else environ
    missing = [name for name in (ENV_CLIENT_ID, ENV_CLIENT_SECRET) if not env.get(name)]
    if missing:
        raise SpotifyAuthError(
            f"Spotify credentials missing: set {' and '.join(missing)} "
            "(from the app at developer.spotify.com/dashboard)"
        )
    return env[ENV_CLIENT_ID], env[ENV_CLIENT_SECRET]


def credentials(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """From the Airflow connection named by ``GENREFLOW_SPOTIFY_CONN_ID`` when that is set
    (login = client id, password = secret; keeps the secret in Airflow's backend), else
    from ``SPOTIPY_CLIENT_ID``/``SPOTIPY_CLIENT_SECRET``."""
    env = os.environ if environ is None else environ
    conn_id = env.get(ENV_CONN_ID)
    if not conn_id:
        return credentials_from_env(env)
    conn = airflow_connection(conn_id, ENV_CONN_ID, SpotifyAuthError)
    if not conn.login or not conn.password:
        raise SpotifyAuthError(
            f"Airflow connection {conn_id!r} needs login (client id) and password (secret)"
        )
    return conn.login, conn.password


@dataclass
class _Tally(Tally):
    items: int = 0
    candidates: int = 0
    no_preview: int = 0
    duplicates: int = 0
    skipped: int = 0


class SpotifySource:
    name = "spotify"

    def __init__(
        self,
        playlists: Mapping[str, Sequence[str]],
        client_id: str,
        client_secret: str,
        *,
        genres: Iterable[str] | None = None,
        api_prefix: str = API_PREFIX,
        token_url: str = TOKEN_URL,
        requests_timeout: float = 10.0,
        preview_timeout: float = 20.0,
        policy: RetryPolicy | None = None,
    ):
        """``genres``, when given, rejects playlists configured under any other genre.

        Worst case per API call: what ``policy`` allows, each attempt up to
        ``requests_timeout``.
        """
        if not client_id or not client_secret:
            raise SpotifyAuthError(
                f"Spotify client id and secret are required (see {ENV_CLIENT_ID}, "
                f"{ENV_CLIENT_SECRET}; credentials_from_env reads them)"
            )
        self.playlists = {genre: list(ids) for genre, ids in playlists.items()}
        self.genres = frozenset(genres) if genres is not None else None
        self.policy = policy or RetryPolicy()
        self.preview_timeout = preview_timeout
        self._auth = SpotifyClientCredentials(
            client_id=client_id,
            client_secret=client_secret,
            requests_timeout=requests_timeout,
            cache_handler=MemoryCacheHandler(),
        )
        self._auth.OAUTH_TOKEN_URL = token_url
        self._sp = spotipy.Spotify(
            auth_manager=self._auth,
            requests_session=requests.Session(),
            requests_timeout=requests_timeout,
        )
        self._sp.prefix = api_prefix

    @classmethod
    def from_env(cls, playlists: Mapping[str, Sequence[str]], **kwargs: Any) -> SpotifySource:
        """Credentials as deployed: see :func:`credentials`."""
        return cls(playlists, *credentials(), **kwargs)

    def discover(self) -> Discovery:
        found = Discovery()
        seen: dict[str, str] = {}
        total = _Tally()
        skipped_playlists = 0
        try:
            self._call("token request", self._auth.get_access_token, as_dict=False)
        except GiveUp as exc:
            log.error("spotify: no access token, every playlist skipped: %s", exc)
            for genre, playlist_id in self._configured():
                found.rejected.append(_playlist_rejection(genre, playlist_id, f"no token: {exc}"))
            return found
        for genre, playlist_id in self._configured():
            if self.genres is not None and genre not in self.genres:
                reason = f"unknown genre {genre!r} (configured: {', '.join(sorted(self.genres))})"
                found.rejected.append(_playlist_rejection(genre, playlist_id, reason))
                skipped_playlists += 1
                continue
            tally = _Tally()
            try:
                self._read_playlist(genre, playlist_id, found, seen, tally)
            except GiveUp as exc:
                reason = f"skipped after {tally.items} items: {exc}"
                log.warning("spotify playlist %s (%s) %s", playlist_id, genre, reason)
                found.rejected.append(_playlist_rejection(genre, playlist_id, reason))
                skipped_playlists += 1
            log.info(
                "spotify playlist %s (%s): %d items, %d candidates, %d without preview_url, "
                "%d duplicates, %d local/unavailable skipped",
                playlist_id, genre, tally.items, tally.candidates, tally.no_preview,
                tally.duplicates, tally.skipped,
            )
            total.add(tally)
        log.info(
            "spotify: %d playlists (%d skipped), %d items, %d candidates, "
            "%d without preview_url, %d duplicates, %d local/unavailable skipped",
            len(self._configured()), skipped_playlists, total.items, total.candidates,
            total.no_preview, total.duplicates, total.skipped,
        )
        if total.no_preview and not total.candidates:
            log.warning("spotify: none of the tracks has a preview (%s)", NO_PREVIEW)
        return found

    def fetch(self, ref: TrackRef) -> bytes:
        url = ref.meta.get("preview_url")
        if not url:
            raise FetchError(f"spotify:{ref.source_id}: {NO_PREVIEW}")
        return download(url, self.preview_timeout, f"spotify:{ref.source_id}", "preview")

    def _configured(self) -> list[tuple[str, str]]:
        return [(genre, pid) for genre, ids in self.playlists.items() for pid in ids]

    def _read_playlist(
        self, genre: str, playlist_id: str, found: Discovery, seen: dict[str, str], tally: _Tally
    ) -> None:
        what = f"playlist {playlist_id}"
        page = self._call(
            what, self._sp.playlist_items, playlist_id, limit=PAGE_SIZE, additional_types=("track",)
        )
        while True:
            if not isinstance(page, dict):
                raise GiveUp("unreadable page (not a JSON object)")
            for item in page.get("items") or []:
                tally.items += 1
                self._take(genre, playlist_id, item, found, seen, tally)
            if not page.get("next"):
                return
            page = self._call(what, self._sp.next, page)

    def _take(
        self,
        genre: str,
        playlist_id: str,
        item: dict[str, Any] | None,
        found: Discovery,
        seen: dict[str, str],
        tally: _Tally,
    ) -> None:
        """Sort one playlist entry into candidates, rejected, or skipped (local/unavailable).

        Since 2026-02 the entry's track is under ``item`` (``track`` is deprecated but still
        sent) and ``popularity`` is withheld from development-mode apps, so both are optional.
        """
        track = (item or {}).get("item") or (item or {}).get("track")
        if (
            not track
            or item.get("is_local")
            or track.get("is_local")
            or track.get("type", "track") != "track"
            or not track.get("id")
        ):
            tally.skipped += 1
            return
        meta = {
            "id": track["id"],
            "name": track.get("name") or "",
            "artists": [a.get("name", "") for a in track.get("artists") or []],
            "popularity": track.get("popularity"),
            "preview_url": track.get("preview_url"),
            "playlist": playlist_id,
        }
        meta |= {  # the catalog's attribution columns (Spotify gives no licence)
            "title": meta["name"], "artist": ", ".join(meta["artists"]),
            "source_url": (track.get("external_urls") or {}).get("spotify") or "",
        }
        first = seen.get(track["id"])
        if first is not None:
            tally.duplicates += 1
            found.rejected.append(
                _track_rejection(genre, meta, f"duplicate in playlist {playlist_id}: kept {first}")
            )
            return
        seen[track["id"]] = f"playlist {playlist_id} ({genre})"
        if not meta["preview_url"]:
            tally.no_preview += 1
            found.rejected.append(_track_rejection(genre, meta, NO_PREVIEW))
            return
        tally.candidates += 1
        found.tracks.append(TrackRef("spotify", track["id"], genre, name=meta["name"], meta=meta))

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` under the bounded retry policy; raises GiveUp with the last cause."""
        refreshed = False

        def attempt() -> T:
            nonlocal refreshed
            try:
                return fn(*args, **kwargs)
            except SpotifyOauthError as exc:
                response = getattr(exc.__context__, "response", None)
                status = getattr(response, "status_code", None)
                if status == 429:
                    raise RateLimited(retry_after(response.headers)) from exc
                if status is None or status < 500:
                    raise SpotifyAuthError(
                        f"Spotify token endpoint rejected the client credentials ({exc}): "
                        f"check {ENV_CLIENT_ID} / {ENV_CLIENT_SECRET}"
                    ) from exc
                raise Transient(f"token endpoint HTTP {status}") from exc
            except spotipy.SpotifyException as exc:
                status = exc.http_status
                if status == 401 and not refreshed:
                    log.info("spotify %s: access token rejected, requesting a new one", what)
                    refreshed = True
                    self._auth.cache_handler.save_token_to_cache(None)
                    return attempt()
                if status == 401:
                    raise SpotifyAuthError(
                        f"Spotify rejected a freshly issued access token for {what}: "
                        f"check the app behind {ENV_CLIENT_ID}"
                    ) from exc
                if status == 429:
                    raise RateLimited(retry_after(exc.headers)) from exc
                if status not in RETRY_STATUSES:
                    raise GiveUp(f"HTTP {status}: {_message(exc)}") from exc
                raise Transient(f"HTTP {status}") from exc
            except requests.RequestException as exc:
                raise Transient(f"{type(exc).__name__}: {exc}") from exc

        return self.policy.call(f"spotify {what}", attempt)


def _message(exc: spotipy.SpotifyException) -> str:
    """Spotify's error message without the URL spotipy puts on the line before it."""
    return (exc.msg or "").strip().splitlines()[-1].strip() if exc.msg else ""


def _playlist_rejection(genre: str, playlist_id: str, reason: str) -> dict[str, str]:
    return {
        "source_id": f"playlist:{playlist_id}", "reason": reason, "genre": genre,
        "playlist": playlist_id,
    }


def _track_rejection(genre: str, meta: dict[str, Any], reason: str) -> dict[str, str]:
    """Flat strings, as ``Discovery.rejected`` promises, so reports can be tables."""
    return {
        "source_id": meta["id"], "reason": reason, "genre": genre, "name": meta["name"],
        "artists": ", ".join(meta["artists"]),
        "popularity": "" if meta["popularity"] is None else str(meta["popularity"]),
        "preview_url": meta["preview_url"] or "", "playlist": meta["playlist"],
        "title": meta["title"], "artist": meta["artist"], "source_url": meta["source_url"],
    }
