"""An inbox of ``<genre>/<file>`` audio in a local folder or an S3 prefix (a Store)."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from genreflow.audio import suffix_refusal
from genreflow.sources.base import Discovery, FetchError, TrackRef
from genreflow.storage import KeyNotFound, Store

log = logging.getLogger(__name__)


class InboxSource:
    """Keys are ``<genre>/<file>`` relative to the inbox; the key is the source id, so a
    renamed file is a new candidate (its audio hash then marks it a duplicate)."""

    name = "inbox"

    def __init__(self, store: Store, genres: tuple[str, ...] | list[str]):
        self.store = store
        self.genres = frozenset(genres)

    def discover(self) -> Discovery:
        found = Discovery(complete=True)
        for key in self.store.list_keys():
            path = PurePosixPath(key)
            reason = self._rejection(key)
            if reason:
                genre = path.parts[0] if len(path.parts) > 1 else ""
                found.rejected.append(
                    {"source_id": key, "reason": reason, "genre": genre, "name": path.name}
                )
                continue
            found.tracks.append(TrackRef("inbox", key, path.parts[0], name=path.name))
        log.info(
            "inbox %s: %d audio files, %d rejected",
            self.store.uri, len(found.tracks), len(found.rejected),
        )
        return found

    def _rejection(self, key: str) -> str:
        path = PurePosixPath(key)
        if len(path.parts) != 2:
            return "not in <genre>/<file> layout"
        if refusal := suffix_refusal(key):
            return refusal
        if path.parts[0] not in self.genres:
            return f"unknown genre {path.parts[0]!r} (configured: {', '.join(sorted(self.genres))})"
        if self.store.escapes(key):
            return "a link to a file outside the inbox: refused"
        return ""

    def fetch(self, ref: TrackRef) -> bytes:
        """The file's bytes. A file gone since discovery is the track's fault (FetchError);
        any other StoreError is the store's (an outage) and propagates, to be retried."""
        if self.store.escapes(ref.source_id):  # replaced by an outward link since discovery
            raise FetchError(f"{ref.source_id}: a link to a file outside the inbox: refused")
        try:
            return self.store.read_bytes(ref.source_id)
        except KeyNotFound as exc:
            raise FetchError(f"{ref.source_id}: vanished from the inbox since discovery") from exc
