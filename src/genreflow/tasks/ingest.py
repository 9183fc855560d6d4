"""Ingest steps: discover new tracks, fetch and extract them, assemble the snapshot.

The catalog makes every step idempotent: a key already ok, duplicate or failed is not
offered again (failed ones only with ``retry_failed``), audio already ok under another
key is recorded as a duplicate instead of extracted, and an unchanged set of ok tracks
gives the same snapshot fingerprint without reading a single features file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import PurePosixPath

from genreflow import catalog
from genreflow.config import Settings
from genreflow.errors import PermanentError
from genreflow.sources.base import FetchError, Source, TrackRef
from genreflow.storage import AlreadyExists, Store, open_store

log = logging.getLogger(__name__)

# A worker pool costs ~3 s to start (each spawned worker imports librosa and loads numba's
# cache) and saves ~40 ms per track per extra worker (bench/RESULTS.md "## Features"):
# smaller batches run in-process, and Airflow runs the mapped batches in parallel instead.
POOL_MIN_TRACKS = 60

# Leading bytes of the formats we decode -> suffix for raw/; the content decides, not the
# name (Spotify previews have none; a mislabelled inbox file keeps its real type).
MAGIC_SUFFIXES = (
    (b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"),
    (b"\xff\xfb", ".mp3"), (b"\xff\xf3", ".mp3"), (b"\xff\xf2", ".mp3"), (b"FORM", ".aiff"),
    (b".snd", ".au"),
)


class NoUsableTracks(PermanentError):
    """The catalog holds no ok track, so there is nothing to train on."""


def make_sources(settings: Settings, names: list[str]) -> dict[str, Source]:
    """The named sources, built from settings; Spotify credentials come from env or an
    Airflow connection (see :func:`genreflow.sources.spotify.credentials`)."""

    def inbox() -> Source:
        from genreflow.sources.inbox import InboxSource

        return InboxSource(open_store(settings.inbox, must_exist=True), settings.genres)

    def spotify() -> Source:
        from genreflow.sources.spotify import SpotifySource

        endpoints = {
            "api_prefix": settings.spotify_api_prefix,
            "token_url": settings.spotify_token_url,
        }
        return SpotifySource.from_env(
            settings.playlists, genres=settings.genres,
            **{name: value for name, value in endpoints.items() if value},
        )

    factories = {"inbox": inbox, "spotify": spotify}
    unknown = sorted(set(names) - set(factories))
    if unknown:
        raise PermanentError(f"unknown source(s) {unknown}; available: {sorted(factories)}")
    return {name: factories[name]() for name in names}


def discover(
    settings: Settings,
    sources: list[str],
    max_new: int,
    batch_size: int,
    retry_failed: bool = False,
    run_id: str = "",
) -> list[list[dict]]:
    """New candidates from every source, minus what the catalog has seen, in batches.

    Rejected items (unknown genre, no preview, a skipped playlist) go straight into the
    catalog so a person can see them; they are re-evaluated each run (a genre added to
    the config makes its inbox folder count) but recorded again only if their reason
    changed.
    """
    store = open_store(settings.store)
    seen = catalog.read_catalog(store)
    settled = seen["status"] != catalog.REJECTED
    if retry_failed:
        settled &= seen["status"] != catalog.FAILED
    skip = set(seen.loc[settled, "key"])
    tracks: list[TrackRef] = []
    rejected: list[dict] = []
    for name, source in make_sources(settings, sources).items():
        result = source.discover()
        tracks += result.tracks
        rejected += [_record(_rejected_ref(name, item), run_id, status=catalog.REJECTED,
                             reason=item["reason"]) for item in result.rejected]
    new = [t for t in tracks if t.key not in skip]
    capped = new[:max_new]
    recorded = _record_rejections(store, seen, rejected, {t.key for t in tracks})
    log.info(
        "discover: %d candidates, %d already in the catalog, %d new, %d taken (cap %d), "
        "%d rejected (%d newly recorded in the catalog)",
        len(tracks), len(tracks) - len(new), len(new), len(capped), max_new,
        len(rejected), recorded,
    )
    if len(new) > len(capped):
        log.warning("discover: %d new tracks left for later runs by the cap of %d",
                    len(new) - len(capped), max_new)
    refs = [t.to_dict() for t in capped]
    return [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]


def _rejected_ref(source: str, item: dict) -> TrackRef:
    return TrackRef(source, item["source_id"], item.get("genre", ""), name=item.get("name", ""))


def _record_rejections(store: Store, seen, rejected: list[dict], candidates: set[str]) -> int:
    """Write rejections that are new or whose reason changed, the first per key (a track
    can be refused twice in one run); never over a settled key or a candidate (a Spotify
    track rejected as a cross-playlist duplicate is also a candidate)."""
    known = dict(zip(seen["key"], zip(seen["status"], seen["reason"], strict=True),
                     strict=True))
    fresh: dict[str, dict] = {}
    for record in rejected:
        status, reason = known.get(record["key"], (None, None))
        if record["key"] in candidates or record["key"] in fresh:
            continue
        if status is None or (status == catalog.REJECTED and reason != record["reason"]):
            fresh[record["key"]] = record
            log.warning("rejected %s: %s", record["key"], record["reason"])
    catalog.record_all(store, list(fresh.values()), known=seen)
    return len(fresh)


def _record(ref: TrackRef, run_id: str, **fields) -> dict:
    record = dict.fromkeys(catalog.COLUMNS, "")
    record.update(
        key=ref.key, source=ref.source, source_id=ref.source_id, genre=ref.genre,
        name=ref.name, n_segments=0, first_seen=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
    )
    record.update(fields)
    return record


def _raw_suffix(ref: TrackRef, data: bytes) -> str:
    for magic, suffix in MAGIC_SUFFIXES:
        if data.startswith(magic):
            return suffix
    return PurePosixPath(ref.source_id).suffix.lower() or ".audio"


def extract_batch(settings: Settings, batch: list[dict], run_id: str) -> list[dict]:
    """Fetch, keep raw audio, extract features for one batch; one record per track.

    Audio is fetched lazily, as the extractor's pool asks for work, so at most the jobs
    in flight (``IN_FLIGHT_PER_WORKER * workers``, plus the one being handed over) are
    held in memory, however large the batch.
    """
    from genreflow.audio import AudioError
    from genreflow.extraction import extract_many

    started = time.monotonic()
    store = open_store(settings.store)
    known = catalog.read_catalog(store)
    ok = known[known["status"] == catalog.OK]
    first_with_sha: dict[str, str] = dict(zip(ok["sha256"], ok["key"], strict=True))
    sources = make_sources(settings, sorted({r["source"] for r in batch}))
    refs = {ref.key: ref for ref in map(TrackRef.from_dict, batch)}
    records: dict[str, dict] = {}
    in_flight: dict[str, bytes] = {}

    def fetched():
        for key, ref in refs.items():
            try:
                data = sources[ref.source].fetch(ref)
            except FetchError as exc:
                records[key] = _record(ref, run_id, status=catalog.FAILED, reason=str(exc))
                log.warning("failed %s: %s", key, exc)
                continue
            sha = hashlib.sha256(data).hexdigest()
            records[key] = _record(ref, run_id, sha256=sha, track_id=sha[:16])
            if sha in first_with_sha:
                reason = f"same audio as {first_with_sha[sha]}"
                records[key].update(status=catalog.DUPLICATE, reason=reason)
                log.info("duplicate %s: %s", key, reason)
                continue
            first_with_sha[sha] = key
            in_flight[key] = data
            yield key, data

    workers = settings.workers if len(refs) >= POOL_MIN_TRACKS else 1
    log.info("extract batch: %d tracks, %d worker process(es)", len(refs), workers)
    extracted = 0
    for key, result in extract_many(fetched(), workers):
        data, record = in_flight.pop(key), records[key]
        if isinstance(result, AudioError):
            record.update(status=catalog.FAILED, reason=str(result))
            log.warning("failed %s: %s", key, result)
        else:
            record.update(_store_track(store, refs[key], record["sha256"], data, result))
        extracted += 1
        if extracted % 10 == 0:
            log.info("extract: %d tracks extracted, %d of %d fetched", extracted,
                     len(records), len(refs))
    statuses = [r["status"] for r in records.values()]
    log.info(
        "extract batch: %d tracks in, %d extracted: %d ok, %d failed, %d duplicate, "
        "%d segments, %.1f s",
        len(refs), extracted, statuses.count(catalog.OK), statuses.count(catalog.FAILED),
        statuses.count(catalog.DUPLICATE), sum(r["n_segments"] for r in records.values()),
        time.monotonic() - started,
    )
    return list(records.values())


def _store_track(store: Store, ref: TrackRef, sha: str, data: bytes, features) -> dict:
    """Keep the raw audio (so features can be re-extracted without the source) and the
    features of one usable track; the catalog fields that point at them."""
    from genreflow.dataset import track_frame

    track_id = sha[:16]
    raw_key = f"raw/{ref.genre}/{sha}{_raw_suffix(ref, data)}"
    try:
        store.write_bytes(raw_key, data, overwrite=False)
    except AlreadyExists:
        log.info("raw audio %s already stored", raw_key)
    features_key = f"features/{track_id}.parquet"
    store.write_frame(features_key, track_frame(track_id, ref.genre, features))
    return {"status": catalog.OK, "raw_key": raw_key, "features_key": features_key,
            "n_segments": int(len(features))}


def _settle_duplicates(table, records: list[dict]) -> None:
    """Mapped batches run in parallel, so the same audio can be ok in two of them: keep
    the one already in the catalog, else the first by key; mark the rest duplicate."""
    mine = {r["key"] for r in records}
    earlier = table[(table["status"] == catalog.OK) & ~table["key"].isin(mine)]
    first_with_sha = dict(zip(earlier["sha256"], earlier["key"], strict=True))
    for record in sorted(records, key=lambda r: r["key"]):
        if record["status"] != catalog.OK:
            continue
        first = first_with_sha.setdefault(record["sha256"], record["key"])
        if first != record["key"]:
            record.update(status=catalog.DUPLICATE, reason=f"same audio as {first}",
                          raw_key="", features_key="", n_segments=0)
            log.info("duplicate %s: same audio as %s (in another batch)", record["key"], first)


def assemble(settings: Settings, batches: list[list[dict]], run_id: str) -> dict:
    """Record the run in the catalog and build the training snapshot of every ok track.

    The snapshot is keyed by a fingerprint of its track ids: when no ok track was added,
    the existing snapshot is reused without reading any features file.
    """
    import pandas as pd

    store = open_store(settings.store)
    records = [r for batch in batches for r in batch]
    known = catalog.read_catalog(store)
    _settle_duplicates(known, records)
    table = catalog.record_all(store, records, known=known)
    ok = table[table["status"] == catalog.OK].sort_values("track_id")
    if ok.empty:
        raise NoUsableTracks(
            "no track can be used for training: the catalog has no ok tracks "
            f"({len(table)} recorded; see {store.location(catalog.CATALOG_KEY)})"
        )
    fingerprint = hashlib.sha256("\n".join(ok["track_id"]).encode()).hexdigest()[:16]
    key = f"snapshots/{fingerprint}.parquet"
    n_segments = int(ok["n_segments"].astype(int).sum())
    if store.exists(key):
        log.info("snapshot %s already exists: reused", store.location(key))
    else:
        snapshot = pd.concat([store.read_frame(k) for k in ok["features_key"]],
                             ignore_index=True)
        n_segments = len(snapshot)
        store.write_frame(key, snapshot)
    new_ok = sum(r["status"] == catalog.OK for r in records)
    log.info(
        "snapshot %s: %d tracks, %d segments (%d new tracks this run)",
        store.location(key), len(ok), n_segments, new_ok,
    )
    return {
        "snapshot_key": key, "fingerprint": fingerprint, "n_tracks": int(len(ok)),
        "n_segments": int(n_segments), "new_tracks": int(new_ok),
    }
