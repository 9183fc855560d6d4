"""The interface every source implements: ``discover`` candidates, ``fetch`` one's audio."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class FetchError(RuntimeError):
    """One track's audio could not be fetched; the run records it and goes on."""


class Unsettled(RuntimeError):
    """The file changed between discovery and fetch (still being written): neither the
    track's fault nor an outage, so nothing is recorded and the next run offers it again."""


class SourceUnavailable(RuntimeError):
    """The source cannot be reached (network, server error): not the track's fault, so it
    is retried and then fails the task, and the track is fetched again on the retry."""

    transient = True  # genreflow.retry tries again


@dataclass(frozen=True)
class TrackRef:
    """A candidate track, small enough to travel through XCom as a dict."""

    source: str
    source_id: str
    genre: str
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity of the track at its source (catalog key before its audio is known)."""
        return f"{self.source}:{self.source_id}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackRef:
        return cls(**data)


@dataclass
class Discovery:
    """What a source offered: usable candidates and rejected items with their reasons.

    Each rejected item is a flat dict of strings with at least ``source_id`` and
    ``reason`` (optionally ``genre`` and ``name``); the catalog records it as rejected.
    ``complete``: ``tracks`` and ``rejected`` list everything the source holds (a folder
    listing, not a playlist that may have been skipped), so a key missing from them was
    removed at the source. ``waiting``: keys present but still changing, left for a later
    run (neither candidates nor gone).
    """

    tracks: list[TrackRef] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    complete: bool = False
    waiting: list[str] = field(default_factory=list)


class Source(Protocol):
    name: str

    def discover(self) -> Discovery: ...

    def fetch(self, ref: TrackRef) -> bytes:
        """The audio file's bytes; FetchError when this track cannot be had,
        SourceUnavailable (or a StoreError) when the source itself cannot be reached."""
        ...
