"""Ingest steps: discover new tracks, fetch and extract them, assemble the snapshot."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import PurePosixPath

from genreflow import catalog
from genreflow.config import Settings
from genreflow.sources.base import Discovery, FetchError, Source, TrackRef
from genreflow.storage import AlreadyExists, open_store

log = logging.getLogger(__name__)


def make_sources(settings: Settings, names: list[str]) -> dict[str, Source]:
    """The named sources, built from settings; Spotify credentials come from env."""

    def inbox() -> Source:
        from genreflow.sources.inbox import InboxSource

        return InboxSource(open_store(settings.inbox), settings.genres)

    def spotify() -> Source:
        from genreflow.sources.spotify import SpotifySource

        return SpotifySource.from_env(settings.playlists, genres=settings.genres)

    factories = {"inbox": inbox, "spotify": spotify}
    unknown = sorted(set(names) - set(factories))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; available: {sorted(factories)}")
    return {name: factories[name]() for name in names}


def discover(
    settings: Settings,
    sources: list[str],
    max_new: int,
    batch_size: int,
    retry_failed: bool = False,
) -> list[list[dict]]:
    """New candidates from every source, minus what the catalog has seen, in batches."""
    store = open_store(settings.store)
    seen = catalog.read_catalog(store)
    if not retry_failed:
        skip = set(seen["key"])
    else:
        skip = set(seen.loc[seen["status"] != catalog.FAILED, "key"])
    found = Discovery()
    for source in make_sources(settings, sources).values():
        result = source.discover()
        found.tracks += result.tracks
        found.rejected += result.rejected
    new = [t for t in found.tracks if t.key not in skip]
    capped = new[:max_new]
    log.info(
        "discover: %d candidates, %d already in the catalog, %d new, %d taken (cap %d), "
        "%d rejected",
        len(found.tracks), len(found.tracks) - len(new), len(new), len(capped), max_new,
        len(found.rejected),
    )
    for item in found.rejected:
        log.warning("rejected %s: %s", item["source_id"], item["reason"])
    refs = [t.to_dict() for t in capped]
    return [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]


def _record(ref: TrackRef, run_id: str, **fields) -> dict:
    record = dict.fromkeys(catalog.COLUMNS, "")
    record.update(
        key=ref.key, source=ref.source, source_id=ref.source_id, genre=ref.genre,
        name=ref.name, n_segments=0, first_seen=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
    )
    record.update(fields)
    return record


def extract_batch(settings: Settings, batch: list[dict], run_id: str) -> list[dict]:
    """Fetch, keep raw audio, extract features for one batch; one record per track."""
    from genreflow.audio import AudioError
    from genreflow.dataset import track_frame
    from genreflow.extraction import extract_many

    started = time.monotonic()
    store = open_store(settings.store)
    known = catalog.read_catalog(store)
    ok = known[known["status"] == catalog.OK]
    first_with_sha: dict[str, str] = dict(zip(ok["sha256"], ok["key"], strict=True))
    sources = make_sources(settings, sorted({r["source"] for r in batch}))
    refs = [TrackRef.from_dict(r) for r in batch]
    records: dict[str, dict] = {}
    jobs: dict[str, tuple[TrackRef, str]] = {}
    audio: dict[str, bytes] = {}
    for ref in refs:
        try:
            data = sources[ref.source].fetch(ref)
        except FetchError as exc:
            records[ref.key] = _record(ref, run_id, status=catalog.FAILED, reason=str(exc))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha in first_with_sha:
            records[ref.key] = _record(
                ref, run_id, sha256=sha, track_id=sha[:16], status=catalog.DUPLICATE,
                reason=f"same audio as {first_with_sha[sha]}",
            )
            continue
        first_with_sha[sha] = ref.key
        suffix = PurePosixPath(ref.source_id).suffix.lower() or ".audio"
        raw_key = f"raw/{ref.genre}/{sha}{suffix}"
        try:
            store.write_bytes(raw_key, data, overwrite=False)
        except AlreadyExists:
            log.info("raw audio %s already stored", raw_key)
        jobs[ref.key] = (ref, sha)
        audio[ref.key] = data
        records[ref.key] = _record(ref, run_id, sha256=sha, track_id=sha[:16], raw_key=raw_key)

    stream = ((key, audio.pop(key)) for key in list(audio))
    for done, (key, result) in enumerate(extract_many(stream, settings.workers), start=1):
        ref, sha = jobs[key]
        if isinstance(result, AudioError):
            records[key].update(status=catalog.FAILED, reason=str(result))
            log.warning("failed %s: %s", key, result)
        else:
            features_key = f"features/{sha[:16]}.parquet"
            store.write_frame(features_key, track_frame(sha[:16], ref.genre, result))
            records[key].update(status=catalog.OK, features_key=features_key,
                                n_segments=int(len(result)))
        if done % 10 == 0 or done == len(jobs):
            log.info("extract: %d/%d tracks done", done, len(jobs))
    statuses = [r["status"] for r in records.values()]
    log.info(
        "extract batch: %d tracks in, %d ok, %d failed, %d duplicate, %d segments, %.1f s",
        len(refs), statuses.count(catalog.OK), statuses.count(catalog.FAILED),
        statuses.count(catalog.DUPLICATE),
        sum(r["n_segments"] for r in records.values()), time.monotonic() - started,
    )
    return list(records.values())


def assemble(settings: Settings, batches: list[list[dict]], run_id: str) -> dict:
    """Record the run in the catalog and build the training snapshot of every ok track."""
    import pandas as pd

    store = open_store(settings.store)
    records = [r for batch in batches for r in batch]
    table = catalog.merge_records(catalog.read_catalog(store), records)
    catalog.write_catalog(store, table)
    ok = table[table["status"] == catalog.OK].sort_values("track_id")
    if ok.empty:
        raise RuntimeError("no track could be used for training: the catalog has no ok tracks")
    frames = [store.read_frame(key) for key in ok["features_key"]]
    snapshot = pd.concat(frames, ignore_index=True)
    fingerprint = hashlib.sha256("\n".join(ok["track_id"]).encode()).hexdigest()[:16]
    key = f"snapshots/{fingerprint}.parquet"
    if not store.exists(key):
        store.write_frame(key, snapshot)
    new_ok = sum(r["status"] == catalog.OK for r in records)
    log.info(
        "snapshot %s: %d tracks, %d segments (%d new tracks this run)",
        store.location(key), len(ok), len(snapshot), new_ok,
    )
    return {
        "snapshot_key": key, "fingerprint": fingerprint, "n_tracks": int(len(ok)),
        "n_segments": int(len(snapshot)), "new_tracks": int(new_ok),
    }
