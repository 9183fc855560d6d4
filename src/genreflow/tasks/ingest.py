"""Ingest steps: discover new tracks, fetch and extract them, assemble the snapshot.

The catalog makes every step idempotent: a key already ok, duplicate, in conflict or
failed is not offered again (failed ones only with ``retry_failed``), audio already known
under another key is recorded as a duplicate (or, under another genre, a label conflict)
instead of extracted, features already stored for an audio are reused, and an unchanged
set of ok tracks gives the same snapshot fingerprint without reading a single features
file. A store or source outage is retried briefly and then fails the task; it is never
recorded against a track.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import PurePosixPath

from genreflow import catalog, snapshot
from genreflow.config import Settings
from genreflow.errors import PermanentError
from genreflow.extraction import POOL_MIN_TRACKS
from genreflow.layout import features_key, raw_key
from genreflow.retry import with_retries
from genreflow.sources import KNOWN_SOURCES
from genreflow.sources.base import Discovery, FetchError, Source, TrackRef, Unsettled
from genreflow.storage import AlreadyExists, Store, open_store
from genreflow.track_features import missing_sets, upgrade_items, upgrade_tracks, write_features

log = logging.getLogger(__name__)

# Leading bytes of the formats we decode -> suffix for raw/; the content decides, not the
# name (Spotify previews have none; a mislabelled inbox file keeps its real type).
MAGIC_SUFFIXES = (
    (b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"),
    (b"\xff\xfb", ".mp3"), (b"\xff\xf3", ".mp3"), (b"\xff\xf2", ".mp3"), (b"FORM", ".aiff"),
    (b".snd", ".au"),
)




class NoUsableTracks(PermanentError):
    """The catalog holds no ok track, so there is nothing to train on."""


def make_sources(settings: Settings, names: list[str],
                 known: frozenset[str] = frozenset()) -> dict[str, Source]:
    """The named sources, built from settings; Spotify and Jamendo credentials come from
    env or an Airflow connection (see ``credentials`` in their modules). ``known``: catalog
    keys already settled, so a capped source (Jamendo) counts only new tracks."""

    def inbox() -> Source:
        from genreflow.sources.inbox import InboxSource

        return InboxSource(open_store(settings.inbox, must_exist=True), settings.genres,
                           settings.inbox_min_age)

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

    def jamendo() -> Source:
        from genreflow.sources.jamendo import JamendoSource

        return JamendoSource.from_env(settings.jamendo, genres=settings.genres, known=known)

    factories = {"inbox": inbox, "spotify": spotify, "jamendo": jamendo}
    unknown = sorted(set(names) - set(factories))
    if unknown:
        raise PermanentError(f"unknown source(s) {unknown}; available: {list(KNOWN_SOURCES)}")
    return {name: factories[name]() for name in names}


def discover(
    settings: Settings,
    sources: list[str],
    max_new: int,
    batch_size: int,
    retry_failed: bool = False,
    run_id: str = "",
    max_upgrade: int = 0,
) -> list[list[dict]]:
    """New candidates from every source, minus what the catalog has seen, in batches.

    Rejected items (unknown genre, no preview, a skipped playlist) go straight into the
    catalog so a person can see them; they are re-evaluated each run (a genre added to
    the config makes its inbox folder count) but recorded again only if their reason
    changed. A key with audio (ok, duplicate, conflict) that a complete listing of its
    source no longer holds (a file deleted from the inbox) is recorded ``removed``: it
    leaves training, and a label conflict it was in is resolved when the keys left
    agree on one genre.
    """
    log.info("discover: asking %s", ", ".join(sources))
    store = open_store(settings.store)
    known = catalog.read_versioned(store)
    seen = known[0]
    again = {catalog.REJECTED, catalog.REMOVED} | ({catalog.FAILED} if retry_failed else set())
    skip = set(seen.loc[~seen["status"].isin(again), "key"])
    tracks: list[TrackRef] = []
    rejected: list[dict] = []
    listed: dict[str, Discovery] = {}
    for name, source in make_sources(settings, sources, frozenset(skip)).items():
        listed[name] = result = source.discover()
        tracks += result.tracks
        rejected += [_record(_rejected_ref(name, item), run_id, status=catalog.REJECTED,
                             reason=item["reason"]) for item in result.rejected]
    changed = _changed(seen, tracks)
    new = [changed.get(t.key, t) for t in tracks if t.key not in skip or t.key in changed]
    capped = new[:max_new]
    present = ({t.key for t in tracks} | {r["key"] for r in rejected}
               | {f"{name}:{key}" for name, found in listed.items() for key in found.waiting})
    gone = _gone(seen, listed, present)
    recorded = _record_discovery(store, known, rejected, {t.key for t in tracks}, gone, run_id)
    log.info(
        "discover: %d candidates, %d already in the catalog, %d new, %d taken (cap %d), "
        "%d rejected (%d newly recorded in the catalog)",
        len(tracks), len(tracks) - len(new), len(new), len(capped), max_new,
        len(rejected), recorded,
    )
    if len(new) > len(capped):
        log.warning("discover: %d new tracks left for later runs by the cap of %d",
                    len(new) - len(capped), max_new)
    refs = [t.to_dict() for t in capped] + upgrade_items(store, seen, settings.feature_sets,
                                                          max_upgrade)
    return [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]


def _changed(seen, tracks: list[TrackRef]) -> dict[str, TrackRef]:
    """Known keys whose content changed since it was fetched (a stamp that differs from
    the catalog's), each as a candidate that replaces the old audio: a new version of
    the track. Rows without a stamp (fetched before stamps were kept) are not compared."""
    recorded = seen[seen["source_stamp"].fillna("").ne("") & seen["status"].ne(
        catalog.REJECTED)].set_index("key")
    changed = {}
    for ref in tracks:
        stamp = ref.meta.get("stamp")
        if ref.key in recorded.index and stamp and stamp != recorded.at[ref.key,
                                                                        "source_stamp"]:
            old = str(recorded.at[ref.key, "sha256"] or "")[:16] or "no audio"
            log.warning("changed %s: new content since it was ingested as %s (%s); the new "
                        "version replaces it", ref.key, old, recorded.at[ref.key, "status"])
            changed[ref.key] = replace(ref, meta={**ref.meta, "replaces": old})
    return changed


def _rejected_ref(source: str, item: dict) -> TrackRef:
    return TrackRef(source, item["source_id"], item.get("genre", ""), name=item.get("name", ""),
                    meta={k: item[k] for k in catalog.TRACK_META if k in item})


def _gone(seen, listed: dict[str, Discovery], present: set[str]) -> list[str]:
    """Keys with audio that a complete listing of their source no longer holds."""
    complete = [name for name, found in listed.items() if found.complete]
    rows = seen[seen["status"].isin(catalog.HAS_AUDIO) & seen["source"].isin(complete)]
    return sorted(set(rows["key"]) - present)


def _fresh_rejections(seen, rejected: list[dict], candidates: set[str]) -> list[dict]:
    """Rejections that are new or whose reason changed, the first per key (a track can be
    refused twice in one run); never over a settled key or a candidate (a Spotify track
    rejected as a cross-playlist duplicate is also a candidate)."""
    known = dict(zip(seen["key"], zip(seen["status"], seen["reason"], strict=True),
                     strict=True))
    fresh: dict[str, dict] = {}
    for record in rejected:
        status, reason = known.get(record["key"], (None, None))
        if record["key"] in candidates or record["key"] in fresh:
            continue
        if status is None or (status == catalog.REJECTED and reason != record["reason"]):
            fresh[record["key"]] = record
    return list(fresh.values())


def _record_discovery(store: Store, known, rejected: list[dict], candidates: set[str],
                       gone: list[str], run_id: str) -> int:
    """Record fresh rejections and keys gone from their source, and settle the labels
    that leaves; the number of rejections recorded."""
    written: list[dict] = []

    def change(table):
        written[:] = _fresh_rejections(table, rejected, candidates)
        removed = table["key"].isin(gone) & table["status"].isin(catalog.HAS_AUDIO)
        table.loc[removed, "reason"] = [
            f"removed from its source while {status}" for status in table.loc[removed, "status"]]
        table.loc[removed, ["status", "run_id"]] = [catalog.REMOVED, run_id]
        merged = catalog.merge_records(table, written)
        settled = catalog.settle_labels(merged)
        return merged if written or removed.any() or settled else None

    catalog.update(store, change, known)
    for record in written:
        log.warning("rejected %s: %s", record["key"], record["reason"])
    for key in gone:
        log.warning("removed %s: no longer at its source; it leaves training", key)
    return len(written)


def _record(ref: TrackRef, run_id: str, **fields) -> dict:
    record = dict.fromkeys(catalog.COLUMNS, "")
    record.update(
        key=ref.key, source=ref.source, source_id=ref.source_id, genre=ref.genre,
        name=ref.name, n_segments=0, first_seen=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id, **{k: str(ref.meta.get(k) or "") for k in catalog.TRACK_META},
        source_stamp=str(ref.meta.get("stamp") or ""),
    )
    if ref.meta.get("replaces"):
        record["reason"] = f"new content at its source; replaces audio {ref.meta['replaces']}"
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
    held in memory, however large the batch. A track whose raw audio and features are
    already stored (an earlier try of this task that failed part-way) is not extracted
    again. A store or source that stays unreachable through :func:`with_retries` fails
    the batch (for Airflow to retry), recording nothing against its tracks.
    """
    from genreflow.audio import AudioError
    from genreflow.extraction import extract_many

    started = time.monotonic()
    store = open_store(settings.store)
    known = catalog.read_catalog(store)
    upgraded = upgrade_tracks(store, known, [r for r in batch if r.get("upgrade")],
                              settings.workers)
    batch = [r for r in batch if not r.get("upgrade")]
    refs = {ref.key: ref for ref in map(TrackRef.from_dict, batch)}
    audio_known = known[known["status"].isin((catalog.OK, catalog.CONFLICT))
                        & ~known["key"].isin(refs)]  # a changed key is no copy of itself
    first_with_sha: dict[str, str] = dict(zip(audio_known["sha256"], audio_known["key"],
                                              strict=True))
    sources = make_sources(settings, sorted({r["source"] for r in batch}))
    records: dict[str, dict] = {}
    in_flight: dict[str, bytes] = {}
    reused: list[str] = []
    waiting: list[str] = []

    def fetched():
        for key, ref in refs.items():
            try:
                data = with_retries(f"fetch {key}", lambda ref=ref: sources[ref.source].fetch(ref))
            except FetchError as exc:
                records[key] = _record(ref, run_id, status=catalog.FAILED, reason=str(exc))
                log.warning("failed %s: %s", key, exc)
                continue
            except Unsettled as exc:
                waiting.append(key)
                log.warning("waiting %s", exc)  # "<file>: changed since discovery ..."
                continue
            sha = hashlib.sha256(data).hexdigest()
            records[key] = _record(ref, run_id, sha256=sha, track_id=sha[:16])
            if sha in first_with_sha:
                reason = f"same audio as {first_with_sha[sha]}"
                records[key].update(status=catalog.DUPLICATE, reason=reason)
                log.info("duplicate %s: %s", key, reason)
                continue
            first_with_sha[sha] = key
            stored = with_retries(f"look up stored features of {key}",
                                  lambda ref=ref, data=data, sha=sha:
                                  _stored_track(store, ref, sha, data, settings.feature_sets))
            if stored:
                records[key].update(stored)
                reused.append(key)
                continue
            in_flight[key] = data
            yield key, data

    workers = settings.workers if len(refs) >= POOL_MIN_TRACKS else 1
    log.info("extract batch: %d tracks, %d worker process(es)", len(refs), workers)
    extracted = 0
    for key, result in extract_many(fetched(), workers, settings.feature_sets):
        data, record = in_flight.pop(key), records[key]
        if isinstance(result, AudioError):
            record.update(status=catalog.FAILED, reason=str(result))
            log.warning("failed %s", result)  # "<key>: <reason in words>"
        else:
            record.update(with_retries(
                f"store {key}",
                lambda key=key, data=data, result=result:
                _store_track(store, refs[key], records[key]["sha256"], data, result,
                             settings.feature_sets)))
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
    return raw_key(ref.genre, sha, _raw_suffix(ref, data))


def _stored_track(store: Store, ref: TrackRef, sha: str, data: bytes, sets) -> dict:
    """The catalog fields of a track whose raw audio and every set's features are stored
    already (writes are whole-object, so an existing features file is complete); {}
    otherwise."""
    from genreflow.features.sets import resolve

    raw_key = _raw_key(ref, sha, data)
    keys = [features_key(s.id, sha[:16]) for s in resolve(sets)]
    if not (store.exists(raw_key) and all(store.exists(k) for k in keys)):
        return {}
    n_segments = len(store.read_frame(keys[0]))
    log.info("reused %s: features already stored at %s", ref.key, store.location(keys[0]))
    return {"status": catalog.OK, "raw_key": raw_key, "features_key": keys[0],
            "n_segments": n_segments}


def _store_track(store: Store, ref: TrackRef, sha: str, data: bytes, features, sets) -> dict:
    """Keep the raw audio (so features can be re-extracted without the source) and the
    features of one usable track; the catalog fields that point at them."""
    raw_key = _raw_key(ref, sha, data)
    try:
        store.write_bytes(raw_key, data, overwrite=False)
    except AlreadyExists:
        log.info("raw audio %s already stored", raw_key)
    first = write_features(store, sha[:16], ref.genre, features, sets)
    return {"status": catalog.OK, "raw_key": raw_key, "features_key": first,
            "n_segments": int(len(features))}


def _settle_duplicates(table, records: list[dict]) -> None:
    """Mapped batches run in parallel, so the same audio can be ok in two of them: keep
    the one already in the catalog, else the first by key; mark the rest duplicate
    (:func:`catalog.settle_labels` then turns those of another genre into conflicts)."""
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
    """Record the run in the catalog and build the training snapshot of every ok track
    that has all configured feature sets (the others wait for their upgrade, counted).

    The catalog is updated with compare-and-swap, so a run beside this one loses nothing.
    Tracks in label conflict are left out. The snapshot (genreflow.snapshot) is reused
    when it matches its record, else built from the last one and the new tracks' features
    files. Each segment's genre is the catalog's (features depend on the audio only).
    """
    from genreflow.features.sets import resolve

    store = open_store(settings.store)
    records = [r for batch in batches for r in batch]

    def change(table):
        mine = [dict(r) for r in records]
        _settle_duplicates(table, mine)
        merged = catalog.merge_records(table, mine)
        return merged if catalog.settle_labels(merged) or mine else None

    table = catalog.update(store, change)
    for row in catalog.conflicts(table):
        log.warning("conflict %s (%s): %s", row["key"], row["genre"], row["reason"])
    ok = table[table["status"] == catalog.OK].sort_values("track_id")
    waiting = missing_sets(store, table, settings.feature_sets)
    if waiting:
        log.warning("snapshot: %d ok tracks lack feature sets and are left out until they "
                    "are upgraded from raw/ (max_upgrade_tracks per run)", len(waiting))
        ok = ok[~ok["track_id"].isin(waiting)]
    if ok.empty:
        raise NoUsableTracks(
            "no track can be used for training: the catalog has no ok tracks with every "
            f"feature set ({len(table)} recorded, {len(waiting)} waiting for an upgrade; "
            f"see {store.location(catalog.CATALOG_KEY)})"
        )
    sets = resolve(settings.feature_sets)
    key, fingerprint, frame = snapshot.assemble(store, ok, sets)
    new_ok = sum(r["status"] == catalog.OK and not r.get("upgraded") for r in records)
    log.info(
        "snapshot %s: %d tracks, %d segments, feature sets %s (%d new tracks this run)",
        store.location(key), len(ok), len(frame), ", ".join(s.id for s in sets), new_ok,
    )
    return {
        "snapshot_key": key, "fingerprint": fingerprint, "n_tracks": int(len(ok)),
        "n_segments": int(len(frame)), "new_tracks": int(new_ok),
        "feature_sets": [s.id for s in sets],
    }
