"""The one-off upgrade of a live store to a new feature set: time per 1,000 tracks.

    .venv/bin/python bench/bench_upgrade.py --tracks 200 --seconds 30 --workers 2

A local store holds --tracks catalogued ok tracks with raw audio (synthesised 30-s WAVs,
cached in bench/out) and librosa features; musicnn is then configured and
track_features.upgrade_tracks gives every track the set from raw/ (reading raw audio, decoding,
extracting, writing the features files), as an upgrade run's extract tasks do. Prints the
wall time, the time per 1,000 tracks, and the same run's librosa-only extraction of the
same audio (the reference, measured in the same process) for the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bench_model import OUT
from bench_weekly import synth_inbox

from genreflow import catalog
from genreflow.config import Settings
from genreflow.extraction import extract_many
from genreflow.features.sets import SETS
from genreflow.layout import raw_key
from genreflow.storage import LocalStore
from genreflow.track_features import missing_sets, upgrade_tracks, write_features

GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop",
          "reggae", "rock"]


def seed(store: LocalStore, files: list[Path]) -> list[dict]:
    """Catalog rows, raw audio and (random) librosa features of ``files``."""
    rng = np.random.default_rng(0)
    records = []
    for path in files:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        genre = path.parent.name
        raw = raw_key(genre, sha, ".wav")
        store.write_bytes(raw, data)
        n = 10
        write_features(store, sha[:16], genre,
                       rng.standard_normal((n, len(SETS["librosa"].columns))), ["librosa"])
        records.append({**dict.fromkeys(catalog.COLUMNS, ""), "key": f"inbox:{path.name}",
                        "source": "inbox", "source_id": path.name, "genre": genre,
                        "track_id": sha[:16], "sha256": sha, "raw_key": raw,
                        "n_segments": n, "status": catalog.OK, "run_id": "bench"})
    catalog.record_all(store, records)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    audio = synth_inbox(GENRES, args.tracks, args.seconds)
    files = sorted(audio.rglob("*.wav"))[: args.tracks]
    folder = OUT / "upgrade-store"
    shutil.rmtree(folder, ignore_errors=True)
    store = LocalStore(folder)
    seed(store, files)
    settings = Settings(home=OUT, store=str(folder), inbox="", valid_csv="",
                        genres=tuple(GENRES), workers=args.workers,
                        feature_sets=("librosa", "musicnn"))
    table = catalog.read_catalog(store)
    items = [{"upgrade": True, "key": key, "missing": missing}
             for key, missing in zip(table["key"], table["track_id"].map(
                 missing_sets(store, table, settings.feature_sets)), strict=True)]
    started = time.perf_counter()
    done = upgrade_tracks(store, table, items, settings.workers)
    upgrade_s = time.perf_counter() - started
    failed = sum(r["status"] != catalog.OK for r in done)
    started = time.perf_counter()
    list(extract_many(((p.name, p) for p in files), args.workers, ("librosa",)))
    librosa_s = time.perf_counter() - started
    per_1000 = upgrade_s / len(files) * 1000
    print(f"upgrade to musicnn: {len(files)} tracks of {args.seconds:g} s, {args.workers} "
          f"worker(s): {upgrade_s:.1f} s wall ({per_1000:.0f} s = {per_1000 / 60:.1f} min per "
          f"1,000 tracks), {failed} failed")
    print(f"reference, librosa extraction of the same files: {librosa_s:.1f} s wall; "
          f"upgrade / librosa {upgrade_s / librosa_s:.2f}x")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
