"""Which tracks a run takes in: every source's candidates minus what the catalog has seen.

Rejected items (unknown genre, no preview, a skipped playlist) go straight into the
catalog so a person can see them; they are re-evaluated each run (a genre added to the
config makes its inbox folder count) but recorded again only if their reason changed. A
key with audio (ok, duplicate, conflict) that a complete listing of its source no longer
holds (a file deleted from the inbox) is recorded ``removed``: it leaves training, and a
label conflict it was in is resolved when the keys left agree on one genre. A known key
whose content changed at its source is offered again as a new version of the track.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from genreflow import catalog
from genreflow.sources import make_sources
from genreflow.sources.base import Discovery, TrackRef
from genreflow.storage import Store
from genreflow.track_features import upgrade_items
from genreflow.workspace import Workspace

log = logging.getLogger(__name__)


def discover(ws: Workspace, sources: list[str], max_new: int, retry_failed: bool = False,
             max_upgrade: int = 0) -> list[dict]:
    """Work items for this run: at most ``max_new`` new tracks, then up to ``max_upgrade``
    catalogued tracks that lack a configured feature set."""
    known = catalog.read_versioned(ws.store)
    seen = known[0]
    again = {catalog.REJECTED, catalog.REMOVED} | ({catalog.FAILED} if retry_failed else set())
    skip = set(seen.loc[~seen["status"].isin(again), "key"])
    tracks: list[TrackRef] = []
    rejected: list[dict] = []
    listed: dict[str, Discovery] = {}
    for name, source in make_sources(ws.settings, sources, frozenset(skip)).items():
        listed[name] = result = source.discover()
        tracks += result.tracks
        rejected += [catalog.new_record(_rejected_ref(name, item), ws.run_id,
                                        status=catalog.REJECTED, reason=item["reason"])
                     for item in result.rejected]
    changed = _changed(seen, tracks)
    new = [changed.get(t.key, t) for t in tracks if t.key not in skip or t.key in changed]
    capped = new[:max_new]
    present = ({t.key for t in tracks} | {r["key"] for r in rejected}
               | {TrackRef(name, key, "").key for name, found in listed.items()
                  for key in found.waiting})
    gone = _gone(seen, listed, present)
    recorded = _record(ws.store, known, rejected, {t.key for t in tracks}, gone, ws.run_id)
    log.info(
        "discover: %d candidates, %d already in the catalog, %d new, %d taken (cap %d), "
        "%d rejected (%d newly recorded in the catalog)",
        len(tracks), len(tracks) - len(new), len(new), len(capped), max_new,
        len(rejected), recorded,
    )
    if len(new) > len(capped):
        log.warning("discover: %d new tracks left for later runs by the cap of %d",
                    len(new) - len(capped), max_new)
    return [t.to_dict() for t in capped] + upgrade_items(ws.store, seen,
                                                          ws.settings.feature_sets, max_upgrade)


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


def _record(store: Store, known, rejected: list[dict], candidates: set[str],
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
