"""What a published model was trained on, with each track's licence, for attribution.

Creative Commons licences (Jamendo's tracks) require credit to the artist; share-alike
and non-commercial terms may matter to whoever uses the model. The train step records,
from the catalog rows of the snapshot's track ids, the title, artist, licence URL and
source page of each training track; the version keeps that record (``TRACKS_FILE``), so
what it lists never changes when the catalog does (a track removed later).
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from genreflow import catalog, registry
from genreflow.sources.jamendo import CC_LICENCE
from genreflow.storage import Store

log = logging.getLogger(__name__)

NO_LICENCE = "none recorded"
FIELDS = ["track_id", "genre", "key", "source", "title", "artist", "licence_url",
          "source_url"]


def training_tracks(table, track_ids) -> list[dict]:
    """One row per track id (``FIELDS``) from the catalog ``table``.

    A track whose audio came from several keys (duplicates) is listed once, under the key
    that was used for training (``ok``), else under the first key with that audio; keys
    removed since still name the track.
    """
    rows = table[table["track_id"].isin(set(map(str, track_ids)))
                 & table["status"].isin((*catalog.HAS_AUDIO, catalog.REMOVED))]
    rows = rows.assign(rank=rows["status"].ne(catalog.OK)).sort_values(["track_id", "rank",
                                                                        "key"])
    return rows.drop_duplicates("track_id")[FIELDS].fillna("").astype(str).to_dict("records")


def record_bytes(store: Store, track_ids) -> bytes:
    """The record of a training set, as the train step stores it beside the model."""
    return registry.json_bytes({"tracks": training_tracks(catalog.read_catalog(store),
                                                          track_ids)})


def trained_on(store: Store, version: str | None = None) -> tuple[str, list[dict]]:
    """(version, one row per training track: ``FIELDS``), for ``version`` or the latest,
    from the version's own record (sha256-checked); a version published before records
    were kept is listed from today's catalog, with a warning."""
    version, manifest = registry.resolve(store, version)
    if registry.TRACKS_FILE in manifest["files"]:
        data = registry.verify_files(store, version, manifest, [registry.TRACKS_FILE])
        return version, json.loads(data[registry.TRACKS_FILE])["tracks"]
    log.warning("version %s has no record of its training tracks (published before they "
                "were kept): listing them from today's catalog, which may miss or mislabel "
                "tracks changed since", version)
    track_ids = store.read_frame(manifest["snapshot_key"])["track_id"].astype(str)
    return version, training_tracks(catalog.read_catalog(store), track_ids)


def licence_counts(rows: list[dict]) -> dict[str, int]:
    """Tracks per licence (``by-nc-sa 3.0`` style); tracks without one as NO_LICENCE."""
    return dict(Counter(_licence_name(row["licence_url"]) for row in rows).most_common())


def _licence_name(url: str) -> str:
    match = CC_LICENCE.search(url or "")
    if not match:
        return url or NO_LICENCE
    return f"CC {match['terms'].upper()} {match['version']}"
