"""One batch of new tracks taken in: fetched, kept as raw audio, extracted, recorded.

Audio is fetched lazily, as the extractor's pool asks for work, so at most the jobs in
flight (``IN_FLIGHT_PER_WORKER * workers``, plus the one being handed over) are held in
memory, however large the batch. Audio the catalog already knows under another key is
recorded as a duplicate instead of extracted. A track whose raw audio and features are
already stored (an earlier try of this task that failed part-way) is not extracted
again. A store or source that stays unreachable through :func:`with_retries` fails the
batch (for Airflow to retry), recording nothing against its tracks.
"""

from __future__ import annotations

import hashlib
import logging
import time

from genreflow import catalog, extraction
from genreflow.audio import AudioError, sniff_suffix
from genreflow.layout import features_key, raw_key
from genreflow.retry import with_retries
from genreflow.sources import make_sources
from genreflow.sources.base import FetchError, TrackRef, Unsettled
from genreflow.storage import AlreadyExists, Store
from genreflow.track_features import upgrade_tracks, write_features
from genreflow.workspace import Workspace

log = logging.getLogger(__name__)


def take_in(ws: Workspace, batch: list[dict]) -> list[dict]:
    """One catalog record per track of ``batch`` (new tracks, and upgrades of catalogued
    ones: :func:`genreflow.track_features.upgrade_tracks`)."""
    started = time.monotonic()
    store, sets = ws.store, ws.settings.feature_sets
    known = catalog.read_catalog(store)
    upgraded = upgrade_tracks(store, known, [r for r in batch if r.get("upgrade")],
                              ws.settings.workers)
    batch = [r for r in batch if not r.get("upgrade")]
    refs = {ref.key: ref for ref in map(TrackRef.from_dict, batch)}
    # a changed key is no copy of itself
    first = catalog.first_keys(known, (catalog.OK, catalog.CONFLICT), excluding=refs)
    sources = make_sources(ws.settings, sorted({r["source"] for r in batch}))
    records: dict[str, dict] = {}
    in_flight: dict[str, bytes] = {}
    reused: list[str] = []
    waiting: list[str] = []

    def fetched():
        for key, ref in refs.items():
            try:
                data = with_retries(f"fetch {key}", lambda ref=ref: sources[ref.source].fetch(ref))
            except FetchError as exc:
                records[key] = catalog.new_record(ref, ws.run_id, status=catalog.FAILED,
                                                  reason=str(exc))
                log.warning("failed %s: %s", key, exc)
                continue
            except Unsettled as exc:
                waiting.append(key)
                log.warning("waiting %s", exc)  # "<file>: changed since discovery ..."
                continue
            sha = hashlib.sha256(data).hexdigest()
            records[key] = catalog.new_record(ref, ws.run_id, sha256=sha, track_id=sha[:16])
            copy_of = catalog.duplicate_of(first, sha, key)
            if copy_of:
                reason = f"same audio as {copy_of}"
                records[key].update(status=catalog.DUPLICATE, reason=reason)
                log.info("duplicate %s: %s", key, reason)
                continue
            stored = with_retries(f"look up stored features of {key}",
                                  lambda ref=ref, data=data, sha=sha:
                                  _stored_track(store, ref, sha, data, sets))
            if stored:
                records[key].update(stored)
                reused.append(key)
                continue
            in_flight[key] = data
            yield key, data

    workers = ws.settings.workers if len(refs) >= extraction.POOL_MIN_TRACKS else 1
    log.info("extract batch: %d tracks, %d worker process(es)", len(refs), workers)
    extracted = 0
    for key, result in extraction.extract_many(fetched(), workers, sets):
        data, record = in_flight.pop(key), records[key]
        if isinstance(result, AudioError):
            record.update(status=catalog.FAILED, reason=str(result))
            log.warning("failed %s", result)  # "<key>: <reason in words>"
        else:
            record.update(with_retries(
                f"store {key}", lambda key=key, data=data, result=result:
                _store_track(store, refs[key], records[key]["sha256"], data, result, sets)))
        extracted += 1
        if extracted % 10 == 0:
            log.info("extract: %d tracks extracted, %d of %d fetched", extracted,
                     len(records), len(refs))
    statuses = [r["status"] for r in records.values()]
    log.info(
        "extract batch: %d tracks in, %d extracted, %d reused from an earlier try: %d ok, "
        "%d failed, %d duplicate, %d still changing (left for the next run), %d segments, "
        "%.1f s",
        len(refs), extracted, len(reused), statuses.count(catalog.OK),
        statuses.count(catalog.FAILED), statuses.count(catalog.DUPLICATE), len(waiting),
        sum(r["n_segments"] for r in records.values()), time.monotonic() - started,
    )
    return list(records.values()) + upgraded


def _raw_key(ref: TrackRef, sha: str, data: bytes) -> str:
    return raw_key(ref.genre, sha, sniff_suffix(data, ref.source_id))


def _stored_track(store: Store, ref: TrackRef, sha: str, data: bytes, sets) -> dict:
    """The catalog fields of a track whose raw audio and every set's features are stored
    already (writes are whole-object, so an existing features file is complete); {}
    otherwise."""
    from genreflow.features.sets import resolve

    raw = _raw_key(ref, sha, data)
    keys = [features_key(s.id, sha[:16]) for s in resolve(sets)]
    if not (store.exists(raw) and all(store.exists(k) for k in keys)):
        return {}
    n_segments = len(store.read_frame(keys[0]))
    log.info("reused %s: features already stored at %s", ref.key, store.location(keys[0]))
    return {"status": catalog.OK, "raw_key": raw, "features_key": keys[0],
            "n_segments": n_segments}


def _store_track(store: Store, ref: TrackRef, sha: str, data: bytes, features, sets) -> dict:
    """Keep the raw audio (so features can be re-extracted without the source) and the
    features of one usable track; the catalog fields that point at them."""
    raw = _raw_key(ref, sha, data)
    try:
        store.write_bytes(raw, data, overwrite=False)
    except AlreadyExists:
        log.info("raw audio %s already stored", raw)
    first = write_features(store, sha[:16], ref.genre, features, sets)
    return {"status": catalog.OK, "raw_key": raw, "features_key": first,
            "n_segments": int(len(features))}
