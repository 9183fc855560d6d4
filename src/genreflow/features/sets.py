"""Feature sets: named, versioned groups of segment columns, each with its extractor.

A features file, a snapshot, a valid.csv and a published model each record the sets
(``<name>-v<version>`` ids, plus a fingerprint of the column names) they hold or need,
so rows computed by different extractor versions are never mixed, and ``predict``
computes exactly the sets of the model it loads. Bump a set's ``version`` whenever any
of its columns is computed differently.

``librosa``: the study's 311 hand-made features (docs/method.md). ``musicnn``: the
pretrained MSD and MTT taggers' 50 tag probabilities and 200-d embedding each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from genreflow.errors import PermanentError
from genreflow.features.names import FEATURE_NAMES


class UnknownFeatureSet(PermanentError, ValueError):
    """A configuration or a record names a feature set (or version) this code lacks."""


@dataclass(frozen=True)
class FeatureSet:
    name: str
    version: int
    columns_of: Callable[[], list[str]]
    extractor: str  # "module:function" taking (segments, sample rate), imported lazily

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    @cached_property
    def columns(self) -> list[str]:
        return list(self.columns_of())

    @cached_property
    def fingerprint(self) -> str:
        """Version and a hash of the column names. The librosa set keeps the form valid
        tables have carried since before feature sets existed (``v1-<hash>``)."""
        digest = hashlib.sha256(",".join(self.columns).encode()).hexdigest()[:12]
        prefix = "" if self.name == LIBROSA else f"{self.name}-"
        return f"{prefix}v{self.version}-{digest}"

    def extract(self, segments: np.ndarray, sr: int) -> np.ndarray:
        import importlib

        module, function = self.extractor.split(":")
        return getattr(importlib.import_module(module), function)(segments, sr)


def _musicnn_columns() -> list[str]:
    from genreflow.features.musicnn import MODELS, column_names

    return [c for model in MODELS for c in column_names(model)]


LIBROSA = "librosa"
MUSICNN = "musicnn"
SETS: dict[str, FeatureSet] = {
    LIBROSA: FeatureSet(LIBROSA, 1, lambda: FEATURE_NAMES, "genreflow.features.fast:fast_features"),
    MUSICNN: FeatureSet(MUSICNN, 1, _musicnn_columns,
                        "genreflow.features.musicnn:musicnn_features"),
}
DEFAULT_SETS = (LIBROSA,)
JOIN = "+"


def resolve(names: Iterable[str]) -> list[FeatureSet]:
    """The sets named (by name or id), in the canonical order (``SETS``), once each."""
    wanted = set()
    for name in names:
        base = str(name).rsplit("-v", 1)[0] if str(name) not in SETS else str(name)
        found = SETS.get(base)
        if found is None or str(name) not in (found.name, found.id):
            raise UnknownFeatureSet(f"unknown feature set {name!r}; this code has "
                                    f"{', '.join(s.id for s in SETS.values())}")
        wanted.add(found.name)
    if not wanted:
        raise UnknownFeatureSet("no feature set named")
    return [s for n, s in SETS.items() if n in wanted]


def columns(sets: Sequence[FeatureSet]) -> list[str]:
    return [c for s in sets for c in s.columns]


def fingerprint(sets: Sequence[FeatureSet]) -> str:
    """What a table of these sets records (valid.csv's ``feature_version``)."""
    return JOIN.join(s.fingerprint for s in sets)


def parse_fingerprint(value: str) -> set[str]:
    return set(str(value).split(JOIN))


def ids(sets: Sequence[FeatureSet]) -> list[str]:
    return [s.id for s in sets]


def manifest_entries(names: Iterable[str]) -> dict:
    """What a manifest records of the sets its model reads: their ids and fingerprints,
    which :func:`manifest_sets` and serving check against this code."""
    sets = resolve(names)
    return {"feature_sets": ids(sets), "feature_fingerprints": [s.fingerprint for s in sets]}


def manifest_sets(manifest: dict) -> list[FeatureSet]:
    """The sets a published model needs; versions from before feature sets used librosa's
    311 columns only (and recorded them as ``feature_names``)."""
    recorded = manifest.get("feature_sets")
    if recorded is None:
        if manifest.get("feature_names", FEATURE_NAMES) != FEATURE_NAMES:
            raise UnknownFeatureSet("the model expects other features than this code computes")
        return resolve(DEFAULT_SETS)
    return resolve(recorded)


def present_in(table_columns) -> list[FeatureSet]:
    """The sets all of whose columns a table has, in canonical order."""
    have = set(table_columns)
    return [s for s in SETS.values() if set(s.columns) <= have]
