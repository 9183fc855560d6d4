"""Training snapshots: every ok track's segments with all configured feature sets, and a
record of what each was built from, so a snapshot is reused only as far as it is vouched
for.

``snapshots/<fp>.parquet`` is keyed by a fingerprint of its tracks, genres and feature
sets; ``snapshots/<fp>.json`` records the feature sets' fingerprint and a digest of each
track's rows. A new snapshot starts from the last one built (``snapshots/latest.json``),
taking only the tracks whose rows still match that record, and reads the others' features
files, so a weekly run reads its new tracks only and never trains on rows it cannot
trace to their features files.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from genreflow import catalog
from genreflow.dataset import FEATURE_FINGERPRINT
from genreflow.errors import PermanentError
from genreflow.features.sets import FeatureSet, resolve
from genreflow.features.sets import fingerprint as sets_fingerprint
from genreflow.layout import (
    CATALOG_KEY,
    SNAPSHOT_POINTER,
    features_key,
    snapshot_key,
    snapshot_record_key,
)
from genreflow.progress import progress
from genreflow.retry import with_retries
from genreflow.storage import KeyNotFound, PermanentStoreError, Store
from genreflow.track_features import missing_sets

log = logging.getLogger(__name__)

# Features files are small and S3 reads wait on the network: read several at once.
READ_THREADS = 8


class NoUsableTracks(PermanentError):
    """The catalog holds no ok track, so there is nothing to train on."""


def of_catalog(store: Store, table, sets: Sequence[str]) -> dict:
    """The snapshot of every ok track of the catalog ``table`` that has all ``sets``
    (the others wait for their upgrade, counted), as the run passes it on: key,
    fingerprint, tracks, segments, feature set ids. Tracks in label conflict are left
    out. Each segment's genre is the catalog's (features depend on the audio only)."""
    ok = table[table["status"] == catalog.OK].sort_values("track_id")
    waiting = missing_sets(store, table, sets)
    if waiting:
        log.warning("snapshot: %d ok tracks lack feature sets and are left out until they "
                    "are upgraded from raw/ (max_upgrade_tracks per run)", len(waiting))
        ok = ok[~ok["track_id"].isin(waiting)]
    if ok.empty:
        raise NoUsableTracks(
            "no track can be used for training: the catalog has no ok tracks with every "
            f"feature set ({len(table)} recorded, {len(waiting)} waiting for an upgrade; "
            f"see {store.location(CATALOG_KEY)})"
        )
    resolved = resolve(sets)
    key, found, frame = assemble(store, ok, resolved)
    return {"snapshot_key": key, "fingerprint": found, "n_tracks": int(len(ok)),
            "n_segments": int(len(frame)), "feature_sets": [s.id for s in resolved]}


def fingerprint(ok, sets: list[FeatureSet]) -> str:
    """Of the tracks, their genres and the feature sets (librosa-only snapshots keep the
    fingerprints they had before feature sets existed)."""
    labelled = "\n".join(f"{t}\t{g}" for t, g in zip(ok["track_id"], ok["genre"], strict=True))
    version = sets_fingerprint(sets)
    if version != FEATURE_FINGERPRINT:
        labelled += f"\nfeatures\t{version}"
    return hashlib.sha256(labelled.encode()).hexdigest()[:16]


def assemble(store: Store, ok, sets: list[FeatureSet]) -> tuple[str, str, object]:
    """(key, fingerprint, frame) of the snapshot of ``ok`` tracks with ``sets``: the
    stored one if it matches its record, else built, written with its record, and made
    the pointer's."""
    version = sets_fingerprint(sets)
    found = fingerprint(ok, sets)
    key = snapshot_key(found)
    snapshot = verified(store, key, version) if store.exists(key) else None
    if snapshot is not None:
        log.info("snapshot %s already exists and matches its record: reused",
                 store.location(key))
        return key, found, snapshot
    snapshot, digests = build(store, ok, sets)
    store.write_frame(key, snapshot)
    store.write_json(snapshot_record_key(key), {"feature_sets": version, "digests": digests})
    store.write_json(SNAPSHOT_POINTER, {"snapshot_key": key})
    return key, found, snapshot


def row_digests(frame) -> dict[str, str]:
    """{track id: sha256 of its segments' feature values}, frame sorted by track, segment."""
    import numpy as np

    from genreflow.features.sets import columns, present_in

    values = np.ascontiguousarray(frame[columns(present_in(frame.columns))]
                                  .to_numpy(np.float64))
    segments = frame["segment"].to_numpy(np.int64)
    tracks = frame["track_id"].to_numpy()
    if not len(tracks):
        return {}
    starts = np.flatnonzero(np.r_[True, tracks[1:] != tracks[:-1]])
    ends = np.r_[starts[1:], len(tracks)]
    return {str(tracks[a]): hashlib.sha256(segments[a:b].tobytes() + values[a:b].tobytes())
            .hexdigest()[:32] for a, b in zip(starts, ends, strict=True)}


def _read_record(store: Store, key: str, version: str) -> dict | None:
    """A snapshot's record if it is one of ``version`` (feature sets); None, logged, if
    it is missing, unreadable or of other feature sets."""
    try:
        record = with_retries(f"read {snapshot_record_key(key)}",
                              lambda: store.read_json(snapshot_record_key(key)))
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


def verified(store: Store, key: str, version: str):
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


def _previous(store: Store, version: str):
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


def build(store: Store, ok, sets):
    """(segments of every ok track ordered by track and segment and labelled by the
    catalog, their row digests).

    A track's features depend on its audio only, so the tracks of the last snapshot with
    the segment count the catalog records and the rows its record vouches for are taken
    from it (one read for the whole catalog); only the others' features files are read,
    several at a time. The result is the same table as reading every features file.
    """
    import pandas as pd

    parts, taken, digests = [], [], {}
    segments = dict(zip(ok["track_id"], ok["n_segments"].astype(int), strict=True))
    found = _previous(store, sets_fingerprint(sets))
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
