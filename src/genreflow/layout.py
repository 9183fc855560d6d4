"""Where everything lives in a store: the one place that spells a key or a prefix.

The keys are the format of published stores, so they change only with a migration:
a store written by an earlier version must still read. The librosa set keeps the key it
had before feature sets existed (``features/<id>``); every other set has its own folder.

- ``raw/<genre>/<sha256><suffix>``: each usable track's audio as fetched
- ``features/[<set>/]<track id>.parquet``: one file per track and feature set
- ``catalog/tracks.parquet``: every track ever seen, with its status
- ``snapshots/<fingerprint>.parquet`` and ``.json`` (its record), ``snapshots/latest.json``
- ``runs/<run>/``: one run's model before it is published, its reports and figures
- ``models/<version>/``: the published versions; ``latest.json``: the champion pointer
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RAW = "raw/"
FEATURES = "features/"
CATALOG_KEY = "catalog/tracks.parquet"
SNAPSHOTS = "snapshots/"
SNAPSHOT_POINTER = f"{SNAPSHOTS}latest.json"  # the last snapshot built
RUNS = "runs/"
MODELS = "models/"
LATEST_KEY = "latest.json"
LEGACY_SET = "librosa-v1"

# Files of a model version (and of the run folder that trains it).
MODEL_FILE = "model.skops"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
TRACKS_FILE = "training_tracks.json"  # what the version was trained on (genreflow licences)
# Reports of a run, published with its version.
CHECKS_FILE = "checks.json"
CONFUSION_FILE = "confusion_matrix.png"
UMAP_FILE = "umap.png"


def raw_key(genre: str, sha256: str, suffix: str) -> str:
    return f"{RAW}{genre}/{sha256}{suffix}"


def features_key(set_id: str, track_id: str) -> str:
    if set_id == LEGACY_SET:
        return f"{FEATURES}{track_id}.parquet"
    return f"{FEATURES}{set_id}/{track_id}.parquet"


def features_index(keys: Iterable[str]) -> dict[str, set[str]]:
    """{set id: track ids with a features file}, from a listing of ``FEATURES``."""
    index: dict[str, set[str]] = {}
    for key in keys:
        rest = key.removeprefix(FEATURES).removesuffix(".parquet")
        set_id, _, track_id = rest.rpartition("/")
        index.setdefault(set_id or LEGACY_SET, set()).add(track_id)
    return index


def snapshot_key(fingerprint: str) -> str:
    return f"{SNAPSHOTS}{fingerprint}.parquet"


def snapshot_record_key(snapshot: str) -> str:
    """What the snapshot at ``snapshot`` was built from, beside it."""
    return snapshot.removesuffix(".parquet") + ".json"


def run_dir(run_id: str) -> str:
    """The folder of one run: its Airflow run id made safe as one path segment."""
    return RUNS + re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")


def run_file(folder: str, name: str) -> str:
    """A file in a run's folder (:func:`run_dir`)."""
    return f"{folder}/{name}"


def version_key(version: str, name: str) -> str:
    """A file of a published version (``name`` empty: the version's folder)."""
    return f"{MODELS}{version}/{name}"
