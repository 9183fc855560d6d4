"""Every track ever seen, so no work is done twice: keyed by source id and audio sha256.

One row per key (``<source>:<source_id>``) with its status: ``ok`` (features stored),
``failed`` (the audio's own fault, or it vanished; retried only when a run asks for it),
``duplicate`` (same audio and genre as another key, named in the reason), ``conflict``
(same audio as a key of another genre: neither trains until one is removed),
``removed`` (a key that left its source, e.g. deleted from the inbox: it no longer trains;
offered again if it comes back) or
``rejected`` (refused at discovery: unknown genre, no preview, a skipped playlist;
re-evaluated every run, recorded again only if its reason changes). Stored as one parquet
file through the run's Store (local folder or S3), written with compare-and-swap so
concurrent runs never lose each other's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from genreflow.errors import PermanentError
from genreflow.layout import CATALOG_KEY
from genreflow.retry import until_won
from genreflow.storage import KeyNotFound, Store, WriteConflict

log = logging.getLogger(__name__)

# What a source knows about a track, for attribution: empty where it knows nothing (an
# inbox file) and in rows written before these columns existed.
TRACK_META = ["title", "artist", "licence_url", "source_url"]
COLUMNS = [
    "key", "source", "source_id", "genre", "name", "track_id", "sha256", "raw_key",
    "features_key", "n_segments", "status", "reason", "first_seen", "run_id", *TRACK_META,
    "source_stamp",  # the file's size and mtime (or ETag) when fetched: new content shows
]
OK, FAILED, DUPLICATE, REJECTED = "ok", "failed", "duplicate", "rejected"
CONFLICT, REMOVED = "conflict", "removed"
HAS_AUDIO = (OK, DUPLICATE, CONFLICT)  # statuses of keys whose audio counts for its label
CAS_ATTEMPTS = 20  # each lost compare-and-swap means another writer's update landed


class CatalogError(PermanentError, ValueError):
    """The stored catalog cannot be read (not parquet): a person must restore it."""


def read_catalog(store: Store):
    return read_versioned(store)[0]


def read_versioned(store: Store):
    """(table, ETag to write it back with; None when there is no catalog yet)."""
    import io

    import pandas as pd

    try:
        data, etag = store.read_bytes_with_etag(CATALOG_KEY)
    except KeyNotFound:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}), None
    try:
        table = pd.read_parquet(io.BytesIO(data))
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise CatalogError(
            f"{store.location(CATALOG_KEY)} is not a readable catalog ({exc}); restore it "
            "(a backup, S3 versioning), or delete it to record every track again (stored "
            "features are reused)") from exc
    for column in COLUMNS:  # a catalog from before a column was added: empty values
        if column not in table:
            table[column] = ""
    return table[[*COLUMNS, *(c for c in table if c not in COLUMNS)]], etag


def new_record(ref, run_id: str, **fields) -> dict:
    """The catalog row of a source's track (a ``TrackRef``) as this run saw it."""
    record = dict.fromkeys(COLUMNS, "")
    record.update(
        key=ref.key, source=ref.source, source_id=ref.source_id, genre=ref.genre,
        name=ref.name, n_segments=0, first_seen=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id, **{k: str(ref.meta.get(k) or "") for k in TRACK_META},
        source_stamp=str(ref.meta.get("stamp") or ""),
    )
    if ref.meta.get("replaces"):
        record["reason"] = f"new content at its source; replaces audio {ref.meta['replaces']}"
    record.update(fields)
    return record


def first_keys(catalog, statuses: Iterable[str], excluding: Iterable[str] = ()) -> dict[str, str]:
    """{sha256: key} of the rows in ``statuses`` (keys in ``excluding`` left out): the
    audio a new key would be a copy of."""
    rows = catalog[catalog["status"].isin(list(statuses)) & ~catalog["key"].isin(list(excluding))]
    return dict(zip(rows["sha256"], rows["key"], strict=True))


def duplicate_of(first: dict[str, str], sha: str, key: str) -> str | None:
    """The key that had this audio first, if another; else None, and ``key`` is now its
    first (``first`` as from :func:`first_keys`)."""
    found = first.setdefault(sha, key)
    return None if found == key else found


def settle_duplicates(catalog, records: list[dict]) -> None:
    """Mapped batches run in parallel, so the same audio can be ok in two of them: keep
    the one already in the catalog, else the first by key; mark the rest duplicate
    (:func:`settle_labels` then turns those of another genre into conflicts)."""
    first = first_keys(catalog, [OK], excluding={r["key"] for r in records})
    for record in sorted(records, key=lambda r: r["key"]):
        if record["status"] != OK:
            continue
        copy_of = duplicate_of(first, record["sha256"], record["key"])
        if copy_of:
            record.update(status=DUPLICATE, reason=f"same audio as {copy_of}",
                          raw_key="", features_key="", n_segments=0)
            log.info("duplicate %s: same audio as %s (in another batch)", record["key"], copy_of)


def record_run(store: Store, records: list[dict]):
    """Record a run's tracks (duplicates across its batches settled, then labels) with
    compare-and-swap, so a run beside this one loses nothing; the table written. Label
    conflicts are logged."""

    def change(table):
        mine = [dict(r) for r in records]
        settle_duplicates(table, mine)
        merged = merge_records(table, mine)
        return merged if settle_labels(merged) or mine else None

    table = update(store, change)
    for row in conflicts(table):
        log.warning("conflict %s (%s): %s", row["key"], row["genre"], row["reason"])
    return table


def merge_records(catalog, records: Iterable[dict]):
    """Add this run's records; a newer record for a key replaces the older one but keeps
    the older ``first_seen``, so a retried or re-rejected track still shows when it came."""
    import pandas as pd

    new = pd.DataFrame(list(records), columns=COLUMNS)
    if new.empty:
        return catalog
    known_since = dict(zip(catalog["key"], catalog["first_seen"], strict=True))
    new["first_seen"] = [known_since.get(k, f) for k, f in zip(new["key"], new["first_seen"],
                                                                strict=True)]
    merged = pd.concat([catalog.astype(object), new.astype(object)], ignore_index=True)
    return merged.drop_duplicates("key", keep="last").reset_index(drop=True)


def settle_labels(catalog) -> int:
    """Mark label conflicts in place; the number of rows changed.

    Keys with the same audio (sha256) but different genres are all ``conflict``, each
    reason naming the others. A former conflict whose keys now agree on one genre (the
    wrong one was removed), or an audio left with duplicates only (its ok key was
    removed), is resolved: one key is ``ok`` again, with the audio's stored features
    (features depend on the audio only), the others ``duplicate``.
    """
    changed = 0
    live = catalog[catalog["status"].isin(HAS_AUDIO) & catalog["sha256"].fillna("").ne("")]
    genres = live.groupby("sha256")["genre"].nunique()
    unsettled = (live["status"].eq(CONFLICT).groupby(live["sha256"]).any()
                 | ~live["status"].eq(OK).groupby(live["sha256"]).any())
    concerned = genres.index[(genres > 1) | unsettled.reindex(genres.index)]
    for sha, group in live[live["sha256"].isin(concerned)].groupby("sha256"):
        if group["genre"].nunique() > 1:
            for index, key in zip(group.index, group["key"], strict=True):
                others = "; ".join(f"{k} ({g})" for k, g in zip(group["key"], group["genre"],
                                                                 strict=True) if k != key)
                reason = (f"label conflict: same audio as {others}; kept out of training "
                          "until the wrong file is removed")
                changed += _update(catalog, index, status=CONFLICT, reason=reason)
        else:
            changed += _resolve(catalog, sha, group)
    return changed


def _resolve(catalog, sha: str, group) -> int:
    """One genre left for this audio and no ok key: the earliest key is ok again, the rest
    duplicates."""
    same_audio = catalog[catalog["sha256"] == sha]
    stored = same_audio[same_audio["features_key"].fillna("").ne("")]
    if stored.empty:  # no key of this audio ever had features (a hand-edited catalog)
        return 0
    source = stored.iloc[0]
    keeper = group.sort_values(["first_seen", "key"]).index[0]
    changed = _update(catalog, keeper, status=OK, reason="", raw_key=source["raw_key"],
                      features_key=source["features_key"], n_segments=source["n_segments"])
    log.info("audio %s settled (conflict resolved or its ok key removed): %s (%s) is ok "
             "again", sha[:16], catalog.at[keeper, "key"], catalog.at[keeper, "genre"])
    for index in group.index.drop(keeper):
        changed += _update(catalog, index, status=DUPLICATE, raw_key="", features_key="",
                           n_segments=0, reason=f"same audio as {catalog.at[keeper, 'key']}")
    return changed


def _update(catalog, index, **fields) -> int:
    """Set ``fields`` on one row; 1 if anything changed."""
    if all(str(catalog.at[index, name]) == str(value) for name, value in fields.items()):
        return 0
    for name, value in fields.items():
        catalog.at[index, name] = value
    return 1


def conflicts(catalog) -> list[dict]:
    """The rows in label conflict, for reports: key, genre, sha256, reason."""
    rows = catalog[catalog["status"] == CONFLICT].sort_values(["sha256", "key"])
    return rows[["key", "genre", "sha256", "reason"]].astype(str).to_dict("records")


def write_catalog(store: Store, catalog, etag: str | None) -> None:
    """Write only over the version read (``etag``; None: only if still absent)."""
    import io

    buffer = io.BytesIO()
    catalog.astype({"n_segments": "Int64"}).to_parquet(buffer, index=False)
    if etag is None:
        store.write_bytes(CATALOG_KEY, buffer.getvalue(), overwrite=False)
    else:
        store.write_bytes(CATALOG_KEY, buffer.getvalue(), if_match=etag)
    counts = catalog["status"].value_counts().to_dict()
    log.info("catalog: %d tracks %s -> %s", len(catalog), counts, store.location(CATALOG_KEY))


def update(store: Store, change: Callable, known=None):
    """Apply ``change`` to the stored catalog with compare-and-swap; the table written.

    ``change(table)`` returns the new table, or None when there is nothing to write; it
    must be a pure function of the table it gets: when another writer got in first, the
    catalog is read again and ``change`` re-applied, so neither update is lost.
    ``known``: (table, etag) from :func:`read_versioned`, already read by the caller.
    """
    read = [known if known is not None else read_versioned(store)]

    def attempt():
        table, etag = read[0]
        new = change(table.copy())
        if new is None:
            return table
        write_catalog(store, new, etag)
        return new

    def read_again(attempt: int) -> None:
        log.info("catalog changed since it was read (attempt %d of %d): merging again",
                 attempt, CAS_ATTEMPTS)
        read[0] = read_versioned(store)

    try:
        return until_won(attempt, WriteConflict, CAS_ATTEMPTS, read_again)
    except WriteConflict as exc:
        raise WriteConflict(f"{store.location(CATALOG_KEY)}: still changing after "
                            f"{CAS_ATTEMPTS} attempts to update it") from exc


def record_all(store: Store, records: list[dict]):
    """Merge ``records`` into the stored catalog and write it back; the merged table."""
    return update(store, lambda table: merge_records(table, records) if records else None)
