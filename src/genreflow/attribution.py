"""What a published model was trained on, with each track's licence, for attribution.

Creative Commons licences (Jamendo's tracks) require credit to the artist; share-alike
and non-commercial terms may matter to whoever uses the model. A version's manifest names
its training snapshot; the snapshot's track ids lead to the catalog rows that carry the
title, artist, licence URL and source page of each track.
"""

from __future__ import annotations

from collections import Counter

from genreflow import catalog, registry
from genreflow.sources.jamendo import CC_LICENCE
from genreflow.storage import Store

NO_LICENCE = "none recorded"
FIELDS = ["track_id", "genre", "key", "title", "artist", "licence_url", "source_url"]


def trained_on(store: Store, version: str | None = None) -> tuple[str, list[dict]]:
    """(version, one row per training track: ``FIELDS``), for ``version`` or the latest.

    A track whose audio came from several keys (duplicates) is listed once, under the key
    that was used for training (``ok``), else under the first key with that audio.
    """
    version, manifest = registry.resolve(store, version)
    track_ids = set(store.read_frame(manifest["snapshot_key"])["track_id"].astype(str))
    table = catalog.read_catalog(store)
    rows = table[table["track_id"].isin(track_ids) & table["status"].isin(catalog.HAS_AUDIO)]
    rows = rows.assign(rank=rows["status"].ne(catalog.OK)).sort_values(["track_id", "rank",
                                                                        "key"])
    listed = rows.drop_duplicates("track_id")[FIELDS].fillna("").astype(str)
    return version, listed.to_dict("records")


def licence_counts(rows: list[dict]) -> dict[str, int]:
    """Tracks per licence (``by-nc-sa 3.0`` style); tracks without one as NO_LICENCE."""
    return dict(Counter(_licence_name(row["licence_url"]) for row in rows).most_common())


def _licence_name(url: str) -> str:
    match = CC_LICENCE.search(url or "")
    if not match:
        return url or NO_LICENCE
    return f"CC {match['terms'].upper()} {match['version']}"
