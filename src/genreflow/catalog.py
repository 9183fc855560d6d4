"""Every track ever seen, so no work is done twice: keyed by source id and audio sha256.

One row per key (``<source>:<source_id>``) with its status: ``ok`` (features stored),
``failed`` (reason; retried only when a run asks for it), ``duplicate`` (same audio as
another key, named in the reason) or ``rejected`` (refused at discovery: unknown genre, no
preview, a skipped playlist; re-evaluated every run, recorded again only if its reason
changes). Stored as one parquet file through the run's Store (local folder or S3).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from genreflow.storage import KeyNotFound, Store

log = logging.getLogger(__name__)

CATALOG_KEY = "catalog/tracks.parquet"
COLUMNS = [
    "key", "source", "source_id", "genre", "name", "track_id", "sha256", "raw_key",
    "features_key", "n_segments", "status", "reason", "first_seen", "run_id",
]
OK, FAILED, DUPLICATE, REJECTED = "ok", "failed", "duplicate", "rejected"


def read_catalog(store: Store):
    import pandas as pd

    try:
        return store.read_frame(CATALOG_KEY)
    except KeyNotFound:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


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


def write_catalog(store: Store, catalog) -> None:
    store.write_frame(CATALOG_KEY, catalog.astype({"n_segments": "Int64"}))
    counts = catalog["status"].value_counts().to_dict()
    log.info("catalog: %d tracks %s -> %s", len(catalog), counts, store.location(CATALOG_KEY))


def record_all(store: Store, records: list[dict], known=None):
    """Merge ``records`` into the stored catalog (``known``: it, already read by the
    caller) and write it back; the merged table."""
    table = merge_records(read_catalog(store) if known is None else known, records)
    if records:
        write_catalog(store, table)
    return table
