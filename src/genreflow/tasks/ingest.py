"""Ingest steps: discover new tracks, take them in batch by batch, assemble the snapshot.

The catalog makes every step idempotent (genreflow.catalog, genreflow.discovery,
genreflow.intake); a store or source outage is retried briefly and then fails the task
(genreflow.retry); it is never recorded against a track.
"""

from __future__ import annotations

import logging

from genreflow import catalog, discovery, intake, snapshot
from genreflow.config import Settings
from genreflow.workspace import Workspace

log = logging.getLogger(__name__)


def discover(settings: Settings, sources: list[str], max_new: int, batch_size: int,
             retry_failed: bool = False, run_id: str = "", max_upgrade: int = 0,
             ) -> list[list[dict]]:
    """New candidates from every source, minus what the catalog has seen, in batches."""
    log.info("discover: asking %s", ", ".join(sources))
    refs = discovery.discover(Workspace.open(settings, run_id), sources, max_new,
                              retry_failed, max_upgrade)
    return [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]


def extract_batch(settings: Settings, batch: list[dict], run_id: str) -> list[dict]:
    """Fetch, keep raw audio, extract features for one batch; one record per track."""
    return intake.take_in(Workspace.open(settings, run_id), batch)


def assemble(settings: Settings, batches: list[list[dict]], run_id: str) -> dict:
    """Record the run in the catalog and build the training snapshot of every ok track
    that has all configured feature sets. The snapshot is reused when it matches its
    record, else built from the last one and the new tracks' features files."""
    ws = Workspace.open(settings, run_id)
    records = [r for batch in batches for r in batch]
    built = snapshot.of_catalog(ws.store, catalog.record_run(ws.store, records),
                                settings.feature_sets)
    new_ok = sum(r["status"] == catalog.OK and not r.get("upgraded") for r in records)
    log.info(
        "snapshot %s: %d tracks, %d segments, feature sets %s (%d new tracks this run)",
        ws.store.location(built["snapshot_key"]), built["n_tracks"], built["n_segments"],
        ", ".join(built["feature_sets"]), new_ok,
    )
    return {**built, "new_tracks": int(new_ok)}
