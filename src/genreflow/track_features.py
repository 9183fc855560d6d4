"""The features files of catalogued tracks: one file per track and feature set, which
sets a track lacks, and the upgrade that computes them from its kept raw audio.

A set added to the configuration, or a features file lost, is made good from ``raw/``
(never from the source, which may have changed or gone): a bounded number of tracks per
run, each written as soon as it is done, so a run that stops half-way loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from genreflow import catalog
from genreflow.extraction import POOL_MIN_TRACKS
from genreflow.features.sets import resolve
from genreflow.layout import FEATURES, features_index, features_key
from genreflow.retry import with_retries
from genreflow.storage import KeyNotFound, Store

log = logging.getLogger(__name__)


def missing_sets(store: Store, table, sets: Sequence[str]) -> dict[str, list[str]]:
    """{track id: names of ``sets`` without a features file} of the catalog's ok tracks:
    a set added to the configuration, or a features file lost."""
    index = features_index(with_retries("list features files",
                                        lambda: store.list_keys(FEATURES)))
    sets = resolve(sets)
    ok = table.loc[table["status"] == catalog.OK, "track_id"]
    missing = {t: [s.name for s in sets if t not in index.get(s.id, ())] for t in ok}
    return {t: names for t, names in missing.items() if names}


def upgrade_items(store: Store, table, sets: Sequence[str], limit: int) -> list[dict]:
    """Work items for ok tracks that lack one of ``sets``: extracted again from their kept
    raw audio, at most ``limit`` per run (the rest wait for the next runs)."""
    missing = missing_sets(store, table, sets)
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


def write_features(store: Store, track_id: str, genre: str, features, sets) -> str:
    """One features file per set of ``features`` (columns of ``sets``, in order); the
    first file's key."""
    from genreflow.dataset import track_frame

    keys, start = [], 0
    for feature_set in resolve(sets):
        stop = start + len(feature_set.columns)
        keys.append(features_key(feature_set.id, track_id))
        store.write_frame(keys[-1], track_frame(track_id, genre, features[:, start:stop],
                                                [feature_set.name]))
        start = stop
    return keys[0]


def upgrade_tracks(store: Store, known, items: list[dict], workers: int = 1) -> list[dict]:
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
        records[key].update(status=catalog.FAILED, reason=reason)
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
    workers = workers if len(items) >= POOL_MIN_TRACKS else 1
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
