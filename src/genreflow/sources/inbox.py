"""An inbox of ``<genre>/<file>`` audio in a local folder or an S3 prefix (a Store)."""

from __future__ import annotations

import logging
import time
from pathlib import PurePosixPath

from genreflow.audio import suffix_refusal
from genreflow.sources.base import Discovery, FetchError, TrackRef, Unsettled
from genreflow.storage import KeyNotFound, Store

log = logging.getLogger(__name__)


class InboxSource:
    """Keys are ``<genre>/<file>`` relative to the inbox; the key is the source id, so a
    renamed file is a new candidate (its audio hash then marks it a duplicate).

    A file is taken only once it has stopped changing: changed less than ``min_age``
    seconds ago, it waits for a later run; changed between discovery and fetch (an upload
    in progress), it is not fetched (:class:`Unsettled`). Each candidate carries its
    ``stamp`` (size and mtime, or S3 ETag), so new content at a known path is noticed.
    """

    name = "inbox"

    def __init__(self, store: Store, genres: tuple[str, ...] | list[str],
                 min_age: float = 0.0):
        self.store = store
        self.genres = frozenset(genres)
        self.min_age = min_age

    def discover(self) -> Discovery:
        found = Discovery(complete=True)
        settled_before = time.time() - self.min_age
        for key, stamp in sorted(self.store.list_stamps().items()):
            path = PurePosixPath(key)
            reason = self._rejection(key)
            if reason:
                genre = path.parts[0] if len(path.parts) > 1 else ""
                found.rejected.append(
                    {"source_id": key, "reason": reason, "genre": genre, "name": path.name}
                )
                continue
            if stamp.modified > settled_before:
                found.waiting.append(key)
                continue
            found.tracks.append(TrackRef("inbox", key, path.parts[0], name=path.name,
                                         meta={"stamp": stamp.tag}))
        log.info(
            "inbox %s: %d audio files, %d rejected",
            self.store.uri, len(found.tracks), len(found.rejected),
        )
        if found.waiting:
            log.warning("inbox: %d file(s) changed less than %g s ago: left for a later run "
                        "(still being written?): %s", len(found.waiting), self.min_age,
                        ", ".join(found.waiting[:5]))
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
        """The file's bytes, as discovered. A file gone since discovery is the track's fault
        (FetchError); one changed since (still being written) is Unsettled; any other
        StoreError is the store's (an outage) and propagates, to be retried."""
        if self.store.escapes(ref.source_id):  # replaced by an outward link since discovery
            raise FetchError(f"{ref.source_id}: a link to a file outside the inbox: refused")
        try:
            data = self.store.read_bytes(ref.source_id)
        except KeyNotFound as exc:
            raise FetchError(f"{ref.source_id}: vanished from the inbox since discovery") from exc
        discovered = ref.meta.get("stamp")
        after = self.store.stamp(ref.source_id) if discovered else None
        if discovered and (after is None or after.tag != discovered):  # also while read
            raise Unsettled(f"{ref.source_id}: changed since discovery (still being "
                            "written?); left for the next run")
        return data
