"""An inbox of ``<genre>/<file>`` audio in a local folder or an S3 prefix (a Store)."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from genreflow.sources.base import Discovery, FetchError, TrackRef
from genreflow.storage import KeyNotFound, Store, StoreError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".au", ".aiff", ".aif", ".m4a"})


class InboxSource:
    """Keys are ``<genre>/<file>`` relative to the inbox; the key is the source id, so a
    renamed file is a new candidate (its audio hash then marks it a duplicate)."""

    name = "inbox"

    def __init__(self, store: Store, genres: tuple[str, ...] | list[str]):
        self.store = store
        self.genres = frozenset(genres)

    def discover(self) -> Discovery:
        found = Discovery()
        for key in self.store.list_keys():
            path = PurePosixPath(key)
            reason = self._rejection(path)
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

    def _rejection(self, path: PurePosixPath) -> str:
        if len(path.parts) != 2:
            return "not in <genre>/<file> layout"
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            return f"not an audio file suffix ({path.suffix or 'none'})"
        if path.parts[0] not in self.genres:
            return f"unknown genre {path.parts[0]!r} (configured: {', '.join(sorted(self.genres))})"
        return ""

    def fetch(self, ref: TrackRef) -> bytes:
        try:
            return self.store.read_bytes(ref.source_id)
        except KeyNotFound as exc:
            raise FetchError(f"{ref.source_id}: vanished from the inbox since discovery") from exc
        except StoreError as exc:
            raise FetchError(f"{ref.source_id}: {exc}") from exc
