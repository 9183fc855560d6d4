"""The segment feature table: one row per 3-s segment, keyed by track, labelled by genre.

Training snapshots, per-track feature files and valid.csv share this schema (key
columns, then the columns of their feature sets), so a validation table made by a user
and one made by the pipeline are interchangeable. valid.csv also carries a
``feature_version`` column naming its sets' fingerprints (genreflow.features.sets): the
same names computed by another extractor version would otherwise be scored silently.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genreflow.errors import PermanentError
from genreflow.features import sets as feature_sets
from genreflow.features.sets import DEFAULT_SETS

if TYPE_CHECKING:
    from genreflow.config import Settings

log = logging.getLogger(__name__)

KEY_COLUMNS = ["track_id", "genre", "segment"]
VERSION_COLUMN = "feature_version"
FEATURE_FINGERPRINT = feature_sets.fingerprint(feature_sets.resolve(DEFAULT_SETS))
REBUILD_HINT = "rebuild it with `genreflow valid-table <folder> -o valid.csv`"


class TableError(PermanentError, ValueError):
    """A feature table (valid.csv, a snapshot) is not usable; the message says why."""


def track_frame(track_id: str, genre: str, features: np.ndarray,
                sets: Sequence[str] = DEFAULT_SETS):
    """Rows of one track in the shared schema."""
    import pandas as pd

    names = feature_sets.columns(feature_sets.resolve(sets))
    frame = pd.DataFrame(np.asarray(features, dtype=np.float64), columns=names)
    frame.insert(0, "segment", np.arange(len(frame), dtype=np.int64))
    frame.insert(0, "genre", genre)
    frame.insert(0, "track_id", track_id)
    return frame


def check_table(frame, genres: Sequence[str], name: str, sets: Sequence[str] = DEFAULT_SETS):
    """Schema, values and genres of a table; raises TableError naming every problem."""
    names = feature_sets.columns(feature_sets.resolve(sets))
    missing = [c for c in KEY_COLUMNS + names if c not in frame.columns]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        shown = ", ".join(missing[:10]) + more
        raise TableError(f"{name}: missing {len(missing)} required column(s): {shown}")
    if frame.empty:
        raise TableError(f"{name}: has no rows")
    values = frame[names]
    non_numeric = [c for c in names if not np.issubdtype(values[c].dtype, np.number)]
    if non_numeric:
        raise TableError(f"{name}: non-numeric feature column(s): {', '.join(non_numeric[:10])}")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise TableError(
            f"{name}: {bad.sum()} NaN/inf value(s), first at row {rows[0]} column "
            f"{names[cols[0]]}"
        )
    unknown = sorted(set(frame["genre"].astype(str)) - set(genres))
    if unknown:
        raise TableError(f"{name}: unknown genre(s) {unknown}; configured: {list(genres)}")
    return frame


def read_valid_table(data: bytes, genres: Sequence[str], name: str = "valid.csv",
                     sets: Sequence[str] = DEFAULT_SETS):
    """Parse and check a validation table (CSV bytes): schema, values, configured genres,
    at least 2 genres (ROC-AUC compares genres) and this code's fingerprint of every
    feature set in ``sets`` (a table may hold more sets than a model needs)."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={"track_id": str, "genre": str,
                                                      VERSION_COLUMN: str})
    except (ValueError, UnicodeDecodeError) as exc:
        raise TableError(f"{name}: not a readable CSV ({exc})") from exc
    wanted = feature_sets.resolve(sets)
    expected = feature_sets.fingerprint(wanted)
    if VERSION_COLUMN not in frame.columns:
        raise TableError(f"{name}: no {VERSION_COLUMN} column, so its features cannot be "
                         f"trusted to match this code ({expected}); {REBUILD_HINT}")
    for value in sorted(set(frame[VERSION_COLUMN].astype(str))):
        stale = [s.fingerprint for s in wanted
                 if s.fingerprint not in feature_sets.parse_fingerprint(value)]
        if stale:
            raise TableError(f"{name}: made with features {value}, the model needs "
                             f"{expected} (missing or of another version: "
                             f"{', '.join(stale)}); {REBUILD_HINT}")
    _parse_numbers(frame, name, feature_sets.columns(wanted))
    check_table(frame, genres, name, sets)
    _check_songs(frame, name)
    present = sorted(set(frame["genre"]))
    if len(present) < 2:
        raise TableError(f"{name}: has songs of {len(present)} genre ({present}); ROC-AUC "
                         "compares genres and needs at least 2")
    return frame


def read_valid(settings: Settings, sets: Sequence[str]):
    """(table, sha256) of valid.csv with the feature ``sets``; a missing or broken table
    (or one without those sets, or of another version) fails here with the reason."""
    from genreflow.storage import KeyNotFound, split_uri

    valid_store, valid_name = split_uri(settings.valid_csv)
    try:
        data = valid_store.read_bytes(valid_name)
    except KeyNotFound as exc:
        raise TableError(f"valid.csv not found: {exc}") from exc
    return (read_valid_table(data, settings.genres, settings.valid_csv, sets),
            hashlib.sha256(data).hexdigest())


def check_valid(settings: Settings, training):
    """valid.csv, checked usable with a model trained on ``training``: readable, this
    code's features, 2+ genres, and every one of its genres has training tracks."""
    valid, _ = read_valid(settings, [s.name for s in feature_sets.present_in(training.columns)])
    untrained = sorted(set(valid["genre"]) - set(training["genre"].astype(str)))
    if untrained:
        raise TableError(f"{settings.valid_csv}: genre(s) {untrained} have no training tracks "
                         "in this snapshot, so the model could not score them")
    log.info("valid.csv %s: %d songs of %d genres, features match this code",
             settings.valid_csv, valid["track_id"].nunique(), valid["genre"].nunique())
    return valid


def _parse_numbers(frame, name: str, names: list[str]) -> None:
    """Feature columns read as text (a stray word in a cell) become numbers, or the first
    cell that is not one is named: pandas' string columns would otherwise fail later with
    a dtype TypeError that says nothing about the file."""
    import pandas as pd

    for column in (c for c in names if c in frame.columns):
        if pd.api.types.is_numeric_dtype(frame[column]):
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & frame[column].notna()
        if bad.any():
            row = bad.to_numpy().nonzero()[0][0]
            raise TableError(f"{name}: non-numeric value {frame[column].iloc[row]!r} in "
                             f"column {column} (row {row})")
        frame[column] = numbers.astype(np.float64)


def _check_songs(frame, name: str) -> None:
    """Refuse what would make the song-level score wrong without an error: rows without a
    track id (not a song), a (track_id, segment) twice (a song weighs double) and a song
    under two genres (one of its labels is wrong, and the soft vote mixes them)."""
    empty = frame["track_id"].isna() | frame["track_id"].astype(str).str.strip().eq("")
    if empty.any():
        raise TableError(f"{name}: {int(empty.sum())} row(s) without a track_id, first row "
                         f"{empty.to_numpy().nonzero()[0][0]}")
    repeated = frame.duplicated(["track_id", "segment"])
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise TableError(f"{name}: {int(repeated.sum())} duplicated (track_id, segment) "
                         f"row(s), first {first['track_id']} segment {first['segment']}")
    genres = frame.groupby("track_id")["genre"].nunique()
    mixed = sorted(genres.index[genres > 1])
    if mixed:
        raise TableError(f"{name}: {len(mixed)} song(s) labelled with 2+ genres: "
                         f"{', '.join(mixed[:10])}")


def is_current_valid_table(path: Path, sets: Sequence[str] = DEFAULT_SETS) -> bool:
    """Whether ``path``'s first row carries this code's fingerprint of ``sets``."""
    import pandas as pd

    first = pd.read_csv(path, nrows=1, dtype=str)
    expected = feature_sets.fingerprint(feature_sets.resolve(sets))
    return first.get(VERSION_COLUMN, pd.Series(dtype=str)).tolist() == [expected]


HASH_COLUMN = "audio_sha256"  # of each valid.csv song's file: the checks find it in training


def with_audio_hashes(table, labelled: Iterable[tuple[str, str, Path]]):
    """``table`` with each song's file sha256, which the catalog keeps for every training
    track: a validation song that is also trained on is found by it (a leak)."""
    hashes = {track_id: hashlib.sha256(path.read_bytes()).hexdigest()
              for track_id, _, path in labelled}
    return table.assign(**{HASH_COLUMN: table["track_id"].map(hashes)})


def write_valid_table(table, dest: Path, sets: Sequence[str] = DEFAULT_SETS) -> None:
    """Write a validation table with this code's fingerprint of its feature ``sets``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    version = feature_sets.fingerprint(feature_sets.resolve(sets))
    table.assign(**{VERSION_COLUMN: version}).to_csv(dest, index=False)


def build_table(
    labelled: Iterable[tuple[str, str, Path]], workers: int = 1,
    sets: Sequence[str] = DEFAULT_SETS,
) -> tuple[object, list[dict[str, str]]]:
    """Features of labelled audio ``(track_id, genre, path)``; returns (table, failures)."""
    import pandas as pd

    from genreflow.audio import AudioError
    from genreflow.extraction import extract_many

    items = {track_id: (genre, path) for track_id, genre, path in labelled}
    frames, failures = [], []
    jobs = ((track_id, path) for track_id, (_, path) in items.items())
    sets = tuple(sets)
    for done, (track_id, result) in enumerate(extract_many(jobs, workers, sets), start=1):
        if isinstance(result, AudioError):
            failures.append({"track_id": track_id, "reason": str(result)})
            log.warning("skipped %s", result)  # "<track id>: <reason in words>"
        else:
            frames.append(track_frame(track_id, items[track_id][0], result, sets))
        if done % 10 == 0 or done == len(items):
            log.info("features: %d/%d tracks done, %d failed", done, len(items), len(failures))
    if not frames:
        raise TableError("no track could be turned into features")
    table = pd.concat(frames, ignore_index=True).sort_values(["track_id", "segment"])
    return table.reset_index(drop=True), failures


def labelled_audio(folder: Path) -> list[tuple[str, str, Path]]:
    """``<genre>/<file>`` under ``folder`` -> (track_id, genre, path); id is genre/file."""
    from genreflow.audio import AUDIO_SUFFIXES

    return [
        (path.relative_to(folder).as_posix(), path.parent.name, path)
        for path in sorted(folder.glob("*/*"))
        if path.suffix.lower() in AUDIO_SUFFIXES
    ]
