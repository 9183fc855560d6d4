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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import PurePosixPath

from genreflow import catalog
from genreflow.config import Settings
from genreflow.dataset import FEATURE_FINGERPRINT
from genreflow.errors import PermanentError
from genreflow.layout import FEATURES, features_index, features_key
from genreflow.sources import KNOWN_SOURCES
from genreflow.sources.base import Discovery, FetchError, Source, TrackRef, Unsettled
from genreflow.storage import AlreadyExists, KeyNotFound, PermanentStoreError, Store, open_store
from genreflow.tasks import progress
from genreflow.transient import with_retries

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


# The last snapshot built: the next one takes its unchanged tracks from it in one read.
SNAPSHOT_POINTER = "snapshots/latest.json"
# Features files are small and S3 reads wait on the network: read several at once.
READ_THREADS = 8


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
    refs = [t.to_dict() for t in capped] + upgrades(settings, store, seen, max_upgrade)
    return [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]


def missing_sets(settings: Settings, store: Store, table) -> dict[str, list[str]]:
    """{track id: configured feature set names without a features file} of ok tracks:
    a set added to the configuration, or a features file lost."""
    from genreflow.features.sets import resolve

    index = features_index(with_retries("list features files",
                                        lambda: store.list_keys(FEATURES)))
    sets = resolve(settings.feature_sets)
    ok = table.loc[table["status"] == catalog.OK, "track_id"]
    missing = {t: [s.name for s in sets if t not in index.get(s.id, ())] for t in ok}
    return {t: names for t, names in missing.items() if names}


def upgrades(settings: Settings, store: Store, table, limit: int) -> list[dict]:
    """Work items for ok tracks that lack a configured feature set: extracted again from
    their kept raw audio, at most ``limit`` per run (the rest wait for the next runs)."""
    missing = missing_sets(settings, store, table)
    if not missing:
        return []
    rows = table[table["track_id"].isin(missing)].sort_values("track_id")
    taken = rows.head(max(0, limit))
    log.warning("upgrade: %d catalogued tracks lack feature sets (%s): %d taken this run "
                "(max_upgrade_tracks %d), %d left for later runs", len(rows),
                ", ".join(sorted({n for names in missing.values() for n in names})),
                len(taken), limit, len(rows) - len(taken))
    return [{"upgrade": True, "key": row["key"], "missing": missing[row["track_id"]]}
            for _, row in taken.iterrows()]


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
    upgraded = upgrade_tracks(settings, store, known, [r for r in batch if r.get("upgrade")])
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
    return f"raw/{ref.genre}/{sha}{_raw_suffix(ref, data)}"


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


def write_features(store: Store, track_id: str, genre: str, features, sets) -> str:
    """One features file per set of ``features`` (columns of ``sets``, in order); the
    first file's key."""
    from genreflow.dataset import track_frame
    from genreflow.features.sets import resolve

    keys, start = [], 0
    for feature_set in resolve(sets):
        stop = start + len(feature_set.columns)
        keys.append(features_key(feature_set.id, track_id))
        store.write_frame(keys[-1], track_frame(track_id, genre, features[:, start:stop],
                                                [feature_set.name]))
        start = stop
    return keys[0]


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


def upgrade_tracks(settings: Settings, store: Store, known, items: list[dict]) -> list[dict]:
    """Compute the missing feature sets of catalogued tracks from their kept raw audio;
    their catalog records (unchanged, or failed with the reason when the raw audio is
    gone or no longer decodes). Each track's files are written as soon as it is done, so
    a run that stops half-way loses nothing and the next one takes the rest."""
    from genreflow.audio import AudioError
    from genreflow.extraction import extract_many

    if not items:
        return []
    started = time.monotonic()
    rows = known.set_index("key")
    records = {i["key"]: {**rows.loc[i["key"]].to_dict(), "key": i["key"]} for i in items}
    missing = {i["key"]: tuple(i["missing"]) for i in items}

    def failed(key: str, reason: str) -> None:
        records[key].update(status=catalog.FAILED, reason=reason, run_id=records[key]["run_id"])
        log.warning("failed %s: %s", key, reason)

    def raw_audio(keys: list[str]):
        for key in keys:
            record = records[key]
            try:
                data = with_retries(f"read {record['raw_key']}",
                                    lambda k=record["raw_key"]: store.read_bytes(k))
            except KeyNotFound:
                failed(key, f"raw audio {record['raw_key']} is gone, so feature set(s) "
                       f"{', '.join(missing[key])} cannot be computed; ingest the file again")
                continue
            yield key, data

    done = 0
    by_sets: dict[tuple[str, ...], list[str]] = {}
    for key, names in missing.items():
        by_sets.setdefault(names, []).append(key)
    workers = settings.workers if len(items) >= POOL_MIN_TRACKS else 1
    for names, keys in by_sets.items():
        for key, result in extract_many(raw_audio(keys), workers, names):
            record = records[key]
            if isinstance(result, AudioError):
                failed(key, f"its raw audio no longer gives features: {result}")
                continue
            with_retries(f"store features of {key}", lambda r=record, x=result, n=names:
                         write_features(store, r["track_id"], r["genre"], x, n))
            record["upgraded"] = True
            done += 1
            if done % 50 == 0:
                log.info("upgrade: %d of %d tracks done", done, len(items))
    log.info("upgrade: %d of %d catalogued tracks given their missing feature sets from "
             "raw/ in %.1f s, %d failed", done, len(items), time.monotonic() - started,
             sum(r["status"] == catalog.FAILED for r in records.values()))
    return list(records.values())


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
    Tracks in label conflict are left out. The snapshot is keyed by a fingerprint of its
    track ids, genres and feature sets, and carries a record (``snapshots/<fp>.json``) of
    the feature sets' fingerprints and a digest of each track's rows: an existing
    snapshot is reused only when it matches its record, and a new one starts from the
    last one built, taking only the tracks whose rows still match, so a weekly run reads
    the features files of its new tracks only. Each segment's genre is the catalog's
    (features depend on the audio only).
    """
    from genreflow.features.sets import fingerprint as sets_fingerprint
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
    waiting = missing_sets(settings, store, table)
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
    version = sets_fingerprint(sets)
    labelled = "\n".join(f"{t}\t{g}" for t, g in zip(ok["track_id"], ok["genre"], strict=True))
    if version != FEATURE_FINGERPRINT:  # librosa-only snapshots keep their old fingerprints
        labelled += f"\nfeatures\t{version}"
    fingerprint = hashlib.sha256(labelled.encode()).hexdigest()[:16]
    key = f"snapshots/{fingerprint}.parquet"
    snapshot = _verified_snapshot(store, key, version) if store.exists(key) else None
    if snapshot is not None:
        log.info("snapshot %s already exists and matches its record: reused",
                 store.location(key))
    else:
        snapshot, digests = _build_snapshot(store, ok, sets)
        store.write_frame(key, snapshot)
        store.write_json(_record_key(key), {"feature_sets": version, "digests": digests})
        store.write_json(SNAPSHOT_POINTER, {"snapshot_key": key})
    new_ok = sum(r["status"] == catalog.OK and not r.get("upgraded") for r in records)
    log.info(
        "snapshot %s: %d tracks, %d segments, feature sets %s (%d new tracks this run)",
        store.location(key), len(ok), len(snapshot), ", ".join(s.id for s in sets), new_ok,
    )
    return {
        "snapshot_key": key, "fingerprint": fingerprint, "n_tracks": int(len(ok)),
        "n_segments": int(len(snapshot)), "new_tracks": int(new_ok),
        "feature_sets": [s.id for s in sets],
    }


def _record_key(snapshot_key: str) -> str:
    return snapshot_key.removesuffix(".parquet") + ".json"


def row_digests(frame) -> dict[str, str]:
    """{track id: sha256 of its segments' feature values}, frame sorted by track, segment."""
    import numpy as np

    from genreflow.features.sets import columns, present_in

    values = np.ascontiguousarray(frame[columns(present_in(frame.columns))]
                                  .to_numpy(np.float64))
    segments = frame["segment"].to_numpy(np.int64)
    tracks = frame["track_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, tracks[1:] != tracks[:-1]])
    ends = np.r_[starts[1:], len(tracks)]
    return {str(tracks[a]): hashlib.sha256(segments[a:b].tobytes() + values[a:b].tobytes())
            .hexdigest()[:32] for a, b in zip(starts, ends, strict=True)}


def _read_record(store: Store, key: str, version: str) -> dict | None:
    """A snapshot's record if it is one of ``version`` (feature sets); None, logged, if
    it is missing, unreadable or of other feature sets."""
    try:
        record = with_retries(f"read {_record_key(key)}",
                              lambda: store.read_json(_record_key(key)))
        if not isinstance(record, dict) or not isinstance(record.get("digests"), dict):
            raise ValueError("not a snapshot record")
    except KeyNotFound:
        log.warning("snapshot %s has no record of what it was built from: not trusted",
                    store.location(key))
        return None
    except (PermanentStoreError, ValueError) as exc:
        log.warning("snapshot %s: its record cannot be read (%s): not trusted",
                    store.location(key), exc)
        return None
    if record.get("feature_sets") != version:
        log.warning("snapshot %s holds feature sets %s, this run needs %s: not reused",
                    store.location(key), record.get("feature_sets"), version)
        return None
    return record


def _verified_snapshot(store: Store, key: str, version: str):
    """The snapshot at ``key`` if every track's rows match its record; else None (it is
    rebuilt from the features files, with a warning)."""
    record = _read_record(store, key, version)
    if record is None:
        return None
    snapshot = with_retries(f"read {key}", lambda: store.read_frame(key))
    if row_digests(snapshot) != record["digests"]:
        log.warning("snapshot %s does not match its record (rows changed since it was "
                    "built): rebuilding it from the features files", store.location(key))
        return None
    return snapshot


def _previous_snapshot(store: Store, version: str):
    """(the last snapshot built, its record), or None (with the reason logged) if it
    cannot be read or holds other feature sets."""
    try:
        key = with_retries("read the snapshot pointer",
                           lambda: store.read_json(SNAPSHOT_POINTER))["snapshot_key"]
        record = _read_record(store, key, version)
        if record is None:
            return None
        return with_retries(f"read {key}", lambda: store.read_frame(key)), record
    except KeyNotFound:
        log.info("snapshot: no earlier snapshot to start from")
    except (PermanentStoreError, ValueError, KeyError, TypeError) as exc:
        log.warning("snapshot: the earlier snapshot cannot be read (%s); reading every "
                    "features file", exc)
    return None


def _read_track(store: Store, track_id: str, sets):
    """One track's rows with every set's columns, from its features files."""
    frames = [with_retries(f"read {k}", lambda k=k: store.read_frame(k))
              for k in (features_key(s.id, track_id) for s in sets)]
    import pandas as pd

    for frame, feature_set in zip(frames[1:], sets[1:], strict=True):
        if not frame["segment"].equals(frames[0]["segment"]):
            raise PermanentStoreError(f"features of {track_id}: {feature_set.id} has other "
                                      f"segments than {sets[0].id}")
    return pd.concat([frames[0]] + [f[s.columns] for f, s in zip(frames[1:], sets[1:],
                                                                  strict=True)], axis=1)


def _build_snapshot(store: Store, ok, sets):
    """(segments of every ok track ordered by track and segment and labelled by the
    catalog, their row digests).

    A track's features depend on its audio only, so the tracks of the last snapshot with
    the segment count the catalog records and the rows its record vouches for are taken
    from it (one read for the whole catalog); only the others' features files are read,
    several at a time. The result is the same table as reading every features file.
    """
    import pandas as pd

    from genreflow.features.sets import fingerprint as sets_fingerprint

    parts, taken, digests = [], [], {}
    segments = dict(zip(ok["track_id"], ok["n_segments"].astype(int), strict=True))
    found = _previous_snapshot(store, sets_fingerprint(sets))
    if found is not None:
        previous, record = found
        previous = previous[previous["track_id"].isin(segments)].sort_values(
            ["track_id", "segment"], ignore_index=True)
        counts = previous.groupby("track_id", sort=False).size()
        whole = set(counts.index[counts.to_numpy() == counts.index.map(segments).to_numpy()])
        actual = row_digests(previous[previous["track_id"].isin(whole)])
        taken = [t for t, d in actual.items() if record["digests"].get(t) == d]
        if len(taken) < len(actual):
            log.warning("snapshot: %d tracks of the earlier snapshot do not match its record "
                        "(changed since it was built): read again from their features files",
                        len(actual) - len(taken))
        parts.append(previous[previous["track_id"].isin(taken)])
        digests.update({t: actual[t] for t in taken})
        log.info("snapshot: %d of %d tracks taken from the earlier snapshot", len(taken),
                 len(ok))
    to_read = sorted(set(ok["track_id"]) - set(taken))
    log.info("snapshot: reading the features files of %d tracks (%d feature sets)",
             len(to_read), len(sets))
    with ThreadPoolExecutor(READ_THREADS) as pool:
        frames = list(progress(pool.map(lambda t: _read_track(store, t, sets), to_read),
                               len(to_read), "snapshot: tracks read", log))
    parts += frames
    for frame in frames:
        digests.update(row_digests(frame.sort_values("segment")))
    snapshot = pd.concat(parts, ignore_index=True)
    snapshot["genre"] = snapshot["track_id"].map(dict(zip(ok["track_id"], ok["genre"],
                                                          strict=True)))
    return snapshot.sort_values(["track_id", "segment"], ignore_index=True), digests
