"""Every track ever seen, so no work is done twice: keyed by source id and audio sha256."""

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
    """Add this run's records; a newer record for a key replaces the older one."""
    import pandas as pd

    new = pd.DataFrame(list(records), columns=COLUMNS)
    if new.empty:
        return catalog
    merged = pd.concat([catalog.astype(object), new.astype(object)], ignore_index=True)
    return merged.drop_duplicates("key", keep="last").reset_index(drop=True)


def write_catalog(store: Store, catalog) -> None:
    store.write_frame(CATALOG_KEY, catalog.astype({"n_segments": "Int64"}))
    counts = catalog["status"].value_counts().to_dict()
    log.info("catalog: %d tracks %s -> %s", len(catalog), counts, store.location(CATALOG_KEY))
