"""Creative Commons tracks from Jamendo by genre tag: audio that may be trained on.

Per configured genre (``[jamendo.tags]`` in include/genreflow.toml), each tag is listed
with ``GET /v3.0/tracks`` newest first (``order=releasedate_desc``), ``limit`` up to the
API's 200 and ``offset`` paging, until the genre has ``per_genre_cap`` tracks the catalog
has not seen; so each week takes the newest releases first, then goes further back.
Field names and limits are the API's documented ones (docs/sources.md cites them).

A listed track is a candidate only if its artist allows downloads
(``audiodownload_allowed``), its ``license_ccurl`` is a Creative Commons licence none of
whose terms the config excludes, and it is not tagged with the tags of two configured
genres (that would be a label conflict); anything else is recorded with its reason.
The licence, artist, title and Jamendo page travel with the track into the catalog, so
``genreflow licences`` can list what a model was trained on for attribution.

Requests follow the shared :class:`~genreflow.retry.RetryPolicy`; a genre that
still cannot be listed is skipped and recorded; an invalid client id fails the run at once.
Every API request counts against this run's share of the monthly quota; when it is used
up, the remaining genres are skipped and recorded.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from genreflow.config import JamendoConfig
from genreflow.errors import PermanentError
from genreflow.retry import GiveUp, RateLimited, RetryPolicy, Transient, retry_after
from genreflow.sources.base import Discovery, FetchError, TrackRef
from genreflow.sources.remote import Tally, airflow_connection, download

log = logging.getLogger(__name__)

API_URL = "https://api.jamendo.com/v3.0/"
ENV_CLIENT_ID = "JAMENDO_CLIENT_ID"
ENV_CONN_ID = "GENREFLOW_JAMENDO_CONN_ID"
MAX_LIMIT = 200  # the API's largest page (`limit`)
ORDER = "releasedate_desc"  # newest first: each run starts with what was released since
# musicinfo carries the genre tags we check; the licence is read from license_ccurl, which
# every result carries, and `licenses` is asked for as well (issue 14) for raw-response readers
INCLUDE = "musicinfo licenses"
# headers.code of a failed response (developer.jamendo.com/v3.0/response-codes)
CODE_INVALID_CLIENT, CODE_RATE_LIMIT, CODE_SUSPENDED = 5, 6, 11
NO_DOWNLOAD = "download not allowed by the artist (audiodownload_allowed is false)"
CC_LICENCE = re.compile(r"creativecommons\.org/licenses/(?P<terms>[a-z-]+)/(?P<version>[\d.]+)")


class JamendoAuthError(PermanentError):
    """The client id is missing, unknown or suspended: retrying cannot help."""


def credentials(environ: Mapping[str, str] | None = None) -> str:
    """The client id: from the Airflow connection named by ``GENREFLOW_JAMENDO_CONN_ID``
    when that is set (login = client id), else from ``JAMENDO_CLIENT_ID``."""
    env = os.environ if environ is None else environ
    conn_id = env.get(ENV_CONN_ID)
    if conn_id:
        conn = airflow_connection(conn_id, ENV_CONN_ID, JamendoAuthError)
        if not conn.login:
            raise JamendoAuthError(f"Airflow connection {conn_id!r} needs login (client id)")
        return conn.login
    if not env.get(ENV_CLIENT_ID):
        raise JamendoAuthError(
            f"Jamendo client id missing: set {ENV_CLIENT_ID} (an app at "
            f"devportal.jamendo.com) or {ENV_CONN_ID}"
        )
    return env[ENV_CLIENT_ID]


def licence_terms(url: str) -> tuple[str, ...]:
    """``("by", "nc", "sa")`` for a Creative Commons licence URL; () for anything else."""
    match = CC_LICENCE.search(url or "")
    return tuple(match["terms"].split("-")) if match else ()


@dataclass
class _Tally(Tally):
    listed: int = 0
    candidates: int = 0
    new: int = 0
    no_download: int = 0
    licence: int = 0
    ambiguous: int = 0
    repeated: int = 0

    def __str__(self) -> str:
        return (f"{self.listed} listed, {self.candidates} candidates ({self.new} new), "
                f"{self.no_download} without download permission, {self.licence} licence "
                f"refused, {self.ambiguous} ambiguous, {self.repeated} repeated")


class JamendoSource:
    name = "jamendo"

    def __init__(
        self,
        config: JamendoConfig,
        client_id: str,
        *,
        genres: Iterable[str] | None = None,
        known: Collection[str] = (),
        page_size: int = MAX_LIMIT,
        requests_timeout: float = 10.0,
        download_timeout: float = 60.0,
        policy: RetryPolicy | None = None,
    ):
        """``genres``: refuse tags configured under any other genre. ``known``: catalog
        keys already settled, which do not count toward ``per_genre_cap``."""
        if not client_id:
            raise JamendoAuthError(f"a Jamendo client id is required (see {ENV_CLIENT_ID})")
        if not config.tags:
            raise PermanentError("the jamendo source has no genres: add [jamendo.tags] to "
                                 "include/genreflow.toml (docs/sources.md)")
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be 1..{MAX_LIMIT}, not {page_size}")
        self.config = config
        self.client_id = client_id
        self.genres = frozenset(genres) if genres is not None else None
        self.known = frozenset(known)
        self.page_size = page_size
        self.requests_timeout = requests_timeout
        self.download_timeout = download_timeout
        self.policy = policy or RetryPolicy()
        self.tracks_url = urljoin(config.api_url or API_URL, "tracks/")
        self.requests_made = 0
        self._session = requests.Session()
        self._genre_of_tag = {tag.lower(): genre for genre, tags in config.tags.items()
                              for tag in tags}

    @classmethod
    def from_env(cls, config: JamendoConfig, **kwargs: Any) -> JamendoSource:
        """Credentials as deployed: see :func:`credentials`."""
        return cls(config, credentials(), **kwargs)

    def discover(self) -> Discovery:
        found = Discovery()
        first_genre: dict[str, str] = {}
        total = _Tally()
        skipped = 0
        for genre, tags in self.config.tags.items():
            if self.genres is not None and genre not in self.genres:
                reason = f"unknown genre {genre!r} (configured: {', '.join(sorted(self.genres))})"
                found.rejected.append(_genre_rejection(genre, reason))
                skipped += 1
                continue
            tally = _Tally()
            try:
                for tag in tags:
                    if tally.new >= self.config.per_genre_cap:
                        break
                    self._read_tag(genre, tag, found, first_genre, tally)
            except GiveUp as exc:
                reason = f"skipped after {tally.listed} tracks: {exc}"
                log.warning("jamendo %s %s", genre, reason)
                found.rejected.append(_genre_rejection(genre, reason))
                skipped += 1
            log.info("jamendo %s (tags %s): %s", genre, ", ".join(tags), tally)
            total.add(tally)
        log.info("jamendo: %d genres (%d skipped): %s; %d of this run's %d API requests used",
                 len(self.config.tags), skipped, total, self.requests_made,
                 self.config.max_requests)
        return found

    def fetch(self, ref: TrackRef) -> bytes:
        url = ref.meta.get("audiodownload")
        if not url:
            raise FetchError(f"jamendo:{ref.source_id}: {NO_DOWNLOAD}")
        return download(url, self.download_timeout, f"jamendo:{ref.source_id}", "audio")

    def _read_tag(self, genre: str, tag: str, found: Discovery, first_genre: dict[str, str],
                  tally: _Tally) -> None:
        offset = 0
        while True:
            page = self._page(genre, tag, offset)
            for item in page:
                if tally.new >= self.config.per_genre_cap:
                    return
                tally.listed += 1
                self._take(genre, item, found, first_genre, tally)
            if len(page) < self.page_size or tally.new >= self.config.per_genre_cap:
                return  # the listing ended, or the cap was reached on its last track
            offset += len(page)

    def _take(self, genre: str, item: dict, found: Discovery, first_genre: dict[str, str],
              tally: _Tally) -> None:
        """Sort one listed track into candidates or rejected (with the reason)."""
        meta = _meta(item)
        track_id = meta["id"]
        earlier = first_genre.get(track_id)
        if not track_id or earlier == genre:  # listed again under another tag of the genre
            tally.repeated += 1
            return
        if earlier is not None:  # listed under two genres' tags: neither label can be trusted
            kept = [t for t in found.tracks if t.source_id != track_id]
            if len(kept) < len(found.tracks):
                found.tracks = kept
                found.rejected.append(_track_rejection(
                    "", meta, f"ambiguous: listed under the tags of {earlier} and {genre}"))
                tally.ambiguous += 1
            else:
                tally.repeated += 1
            return
        first_genre[track_id] = genre
        tagged = {genre} | {self._genre_of_tag[t.lower()] for t in meta["genre_tags"]
                            if t.lower() in self._genre_of_tag}
        if len(tagged) > 1:
            tally.ambiguous += 1
            reason = (f"ambiguous: tagged as {' and '.join(sorted(tagged))} (genre tags "
                      f"{', '.join(meta['genre_tags'])}); a label conflict must not train")
            found.rejected.append(_track_rejection("", meta, reason))
        elif not item.get("audiodownload_allowed") or not meta["audiodownload"]:
            tally.no_download += 1
            found.rejected.append(_track_rejection(genre, meta, NO_DOWNLOAD))
        elif refusal := self._licence_refusal(meta["licence_url"]):
            tally.licence += 1
            found.rejected.append(_track_rejection(genre, meta, refusal))
        else:
            tally.candidates += 1
            tally.new += f"jamendo:{track_id}" not in self.known
            found.tracks.append(TrackRef("jamendo", track_id, genre, name=meta["title"],
                                         meta={k: v for k, v in meta.items()
                                               if k != "genre_tags"}))

    def _licence_refusal(self, url: str) -> str:
        terms = licence_terms(url)
        if not terms:
            return f"no Creative Commons licence URL ({url or 'none given'})"
        excluded = sorted(set(terms) & set(self.config.exclude_licence_terms))
        if excluded:
            return (f"licence {'-'.join(terms)} excluded by config "
                    f"(exclude_licence_terms: {', '.join(excluded)})")
        return ""

    def _page(self, genre: str, tag: str, offset: int) -> list[dict]:
        """One page of a tag's listing under the retry policy and the request budget."""
        params = {
            "client_id": self.client_id, "format": "json", "limit": self.page_size,
            "offset": offset, self.config.tag_match: tag, "include": INCLUDE,
            "audiodlformat": self.config.audio_format, "order": ORDER,
        }

        def attempt() -> list[dict]:
            if self.requests_made >= self.config.max_requests:
                raise GiveUp(f"request budget of this run used up ({self.requests_made} of "
                             f"{self.config.max_requests}: run_share {self.config.run_share:g}"
                             f" of {self.config.monthly_requests} a month)")
            self.requests_made += 1
            try:
                response = self._session.get(self.tracks_url, params=params,
                                             timeout=self.requests_timeout)
            except requests.RequestException as exc:
                raise Transient(f"{type(exc).__name__}: {exc}") from exc
            return _results(response)

        return self.policy.call(f"jamendo {genre} tag {tag!r} offset {offset}", attempt)


def _results(response: requests.Response) -> list[dict]:
    """A page's results, or the exception the retry policy acts on. Jamendo reports its
    own errors in the document's ``headers`` (``status``, ``code``, ``error_message``)."""
    try:
        document = response.json()
    except ValueError:
        document = None
    headers = document.get("headers") if isinstance(document, dict) else None
    headers = headers if isinstance(headers, dict) else {}
    code, message = headers.get("code"), headers.get("error_message") or ""
    if code in (CODE_INVALID_CLIENT, CODE_SUSPENDED):
        raise JamendoAuthError(
            f"Jamendo refused the client id (code {code}: {message or 'no message'}): check "
            f"{ENV_CLIENT_ID} or the connection named by {ENV_CONN_ID}"
        )
    if response.status_code == 429 or code == CODE_RATE_LIMIT:
        raise RateLimited(retry_after(response.headers),
                          f"rate limited ({message})" if message else "rate limited")
    if response.status_code >= 500:
        raise Transient(f"HTTP {response.status_code}")
    if response.status_code != 200:
        raise GiveUp(f"HTTP {response.status_code}: {message or response.reason}")
    results = document.get("results") if isinstance(document, dict) else None
    if code or headers.get("status") == "failed":
        raise GiveUp(f"Jamendo error code {code}: {message}")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise GiveUp("unreadable page (no list of results)")
    return results


def _meta(item: dict) -> dict[str, Any]:
    tags = ((item.get("musicinfo") or {}).get("tags") or {}).get("genres") or []
    return {
        "id": str(item.get("id") or ""),
        "title": str(item.get("name") or ""),
        "artist": str(item.get("artist_name") or ""),
        "licence_url": str(item.get("license_ccurl") or ""),
        "source_url": str(item.get("shareurl") or ""),
        "audiodownload": str(item.get("audiodownload") or ""),
        "releasedate": str(item.get("releasedate") or ""),
        "genre_tags": [str(t) for t in tags],
    }


def _genre_rejection(genre: str, reason: str) -> dict[str, str]:
    return {"source_id": f"genre:{genre}", "reason": reason, "genre": genre}


def _track_rejection(genre: str, meta: dict[str, Any], reason: str) -> dict[str, str]:
    """Flat strings, as ``Discovery.rejected`` promises; licence and page kept for people."""
    return {
        "source_id": meta["id"], "reason": reason, "genre": genre, "name": meta["title"],
        "title": meta["title"], "artist": meta["artist"], "licence_url": meta["licence_url"],
        "source_url": meta["source_url"],
    }
