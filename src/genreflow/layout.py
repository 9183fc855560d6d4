"""Where a track's feature files live in the store, one file per feature set.

The librosa set keeps the key it had before feature sets existed (``features/<id>``),
so stores written then need no migration; every other set has its own folder.
"""

from __future__ import annotations

from collections.abc import Iterable

FEATURES = "features/"
LEGACY_SET = "librosa-v1"


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
