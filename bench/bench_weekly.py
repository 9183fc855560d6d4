"""Weekly run at scale on the distributed deployment: a grown catalog plus a week of new tracks.

    .venv/bin/python bench/bench_weekly.py --audio ../shared/data/gtzan-excerpts/ \\
        --catalog 10000 --new 1000 --seconds 30 --batch-size 50 --workers 2
    (the same with --workers 1 gives the one-worker extraction time for the ratio)

Starts scripts/airflow-cluster.sh (CeleryExecutor, Postgres, Redis, moto S3) in
bench/out, fills its bucket with last week's store: a catalog of --catalog ok tracks, a
features file per track and feature set (features drawn from the real clips' per-genre
statistics, bench_model.synthetic_rows), their snapshot with its record and
snapshots/latest.json (made once and cached in bench/out), an inbox of --new synthesised
tracks (real WAVs, genreflow.synth, cached too) and valid.csv (the real clips'
segments); then triggers genre_retrain through the REST API. Reports wall time per task
(mapped extract: the span from its first start to its last end), the run's total, and
the peak RSS of each task process (VmHWM, sampled from /proc while the run goes).
Batches below extraction.POOL_MIN_TRACKS extract in-process, so each Celery worker then uses
one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import requests
from bench_model import OUT, cached_features, markdown, synthetic_rows

from genreflow import catalog
from genreflow.dataset import write_valid_table
from genreflow.features.sets import SETS, columns
from genreflow.features.sets import fingerprint as sets_fingerprint
from genreflow.layout import (
    FEATURES,
    SNAPSHOT_POINTER,
    features_key,
    snapshot_key,
    snapshot_record_key,
)
from genreflow.snapshot import row_digests
from genreflow.storage import S3Store
from genreflow.track_features import write_features

FEATURE_SETS = tuple(SETS)  # as include/genreflow.toml

PROJECT = Path(__file__).resolve().parents[1]
DAG_ID = "genre_retrain"
SEGMENTS_PER_TRACK = 10  # a 30-s track


def start_cluster(directory: Path, workers: int) -> tuple[subprocess.Popen, dict]:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    env = {**os.environ, "GENREFLOW_CLUSTER_DIR": str(directory), "GENREFLOW_CLUSTER_DEMO": "0",
           "GENREFLOW_CLUSTER_WORKERS": str(workers),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    output = directory / "script.log"
    process = subprocess.Popen(["bash", str(PROJECT / "scripts" / "airflow-cluster.sh")],
                               env=env, stdout=output.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    while "cluster is up" not in output.read_text(errors="replace"):
        if process.poll() is not None:
            raise SystemExit(f"the cluster script failed:\n{output.read_text()[-3000:]}")
        time.sleep(2)
    values = dict(re.findall(r'^(?:declare -x )?(\w+)="?([^"\n]*)"?$',
                             (directory / "cluster.env").read_text(), re.MULTILINE))
    return process, values


def bucket(values: dict, prefix: str) -> S3Store:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=values["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )
    return S3Store("genreflow", prefix, client=client)


def _write_track_files(folder: Path, ids: list[str], genres: list[str], features) -> None:
    from genreflow.storage import LocalStore

    store = LocalStore(folder)
    for i, (track_id, genre) in enumerate(zip(ids, genres, strict=True)):
        rows = features[i * SEGMENTS_PER_TRACK:(i + 1) * SEGMENTS_PER_TRACK]
        write_features(store, track_id, genre, rows, FEATURE_SETS)


def catalog_files(real, n_tracks: int) -> Path:
    """Last week's store as files, made once and cached in bench/out: a features file per
    track and set (written by two processes: parquet encoding of 311 columns is ~45 ms a
    file), their snapshot with its record and the catalog records."""
    import pandas as pd

    folder = OUT / f"weekly-catalog-{n_tracks}-{'-'.join(FEATURE_SETS)}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = synthetic_rows(real, n_tracks * SEGMENTS_PER_TRACK, seed=1)
    shas = [hashlib.sha256(f"bench-{i}".encode()).hexdigest() for i in range(n_tracks)]
    ids = [sha[:16] for sha in shas]
    genres = rows["genre"].to_numpy()[::SEGMENTS_PER_TRACK].tolist()
    names = columns([SETS[s] for s in FEATURE_SETS])
    features = rows[names].to_numpy()
    chunk, per = -(-n_tracks // 8), SEGMENTS_PER_TRACK
    starts = range(0, n_tracks, chunk)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_track_files, [folder] * len(starts),
                      [ids[i:i + chunk] for i in starts], [genres[i:i + chunk] for i in starts],
                      [features[i * per:(i + chunk) * per] for i in starts]))
    keys = pd.DataFrame({"track_id": np.repeat(ids, SEGMENTS_PER_TRACK), "genre": rows["genre"],
                         "segment": np.tile(np.arange(SEGMENTS_PER_TRACK), n_tracks)})
    snapshot = pd.concat([keys, rows[names]], axis=1).sort_values(["track_id", "segment"],
                                                                   ignore_index=True)
    snapshot.to_parquet(folder / "snapshot.parquet", index=False)
    record = {"feature_sets": sets_fingerprint([SETS[s] for s in FEATURE_SETS]),
              "digests": row_digests(snapshot)}
    (folder / "snapshot.json").write_text(json.dumps(record))
    records = []
    for sha, genre in zip(shas, genres, strict=True):
        name = f"{genre}/old_{sha[:8]}.wav"
        # from an earlier intake this run does not list (an inbox lists completely, so
        # inbox tracks whose files are gone would be recorded removed)
        records.append({**dict.fromkeys(catalog.COLUMNS, ""), "key": f"archive:{name}",
                        "source": "archive", "source_id": name, "genre": genre, "name": name,
                        "track_id": sha[:16], "sha256": sha, "features_key":
                        features_key(SETS[FEATURE_SETS[0]].id, sha[:16]),
                        "n_segments": SEGMENTS_PER_TRACK,
                        "status": catalog.OK, "first_seen": "2026-01-05T03:00:00+00:00",
                        "run_id": "bench_previous_week"})
    pd.DataFrame(records).to_json(folder / "catalog.json", orient="records")
    (folder / ".complete").touch()
    return folder


def seed_catalog(store: S3Store, folder: Path) -> int:
    """Upload last week's store: features files, catalog, snapshot, its record and its
    pointer. Returns the number of catalogued tracks."""
    files = sorted(p for p in (folder / FEATURES).rglob("*.parquet"))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: store.write_bytes(p.relative_to(folder).as_posix(),
                                                  p.read_bytes()), files))
    records = json.loads((folder / "catalog.json").read_text())
    catalog.record_all(store, records)
    key = snapshot_key("bench-previous-week")
    store.write_bytes(key, (folder / "snapshot.parquet").read_bytes())
    store.write_bytes(snapshot_record_key(key), (folder / "snapshot.json").read_bytes())
    store.write_json(SNAPSHOT_POINTER, {"snapshot_key": key})
    return len(records)


def synth_inbox(genres: list[str], n_tracks: int, seconds: float) -> Path:
    from genreflow.synth import write_corpus

    folder = OUT / f"weekly-inbox-{n_tracks}x{seconds:g}s"
    if not (folder / ".complete").exists():
        per_genre = -(-n_tracks // len(genres))
        write_corpus(folder, genres, per_genre, seconds=seconds, seed=21, prefix="new_")
        (folder / ".complete").touch()
    return folder


def upload_inbox(store: S3Store, folder: Path, n_tracks: int) -> int:
    files = sorted(p for p in folder.rglob("*.wav"))[:n_tracks]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: store.write_bytes(p.relative_to(folder).as_posix(),
                                                  p.read_bytes()), files))
    return len(files)


class RssSampler(threading.Thread):
    """Peak VmHWM per task process (titled ``airflow worker -- <ti id>``)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for entry in Path("/proc").iterdir():
                try:
                    title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
                    if title.startswith("airflow worker -- "):
                        status = (entry / "status").read_text()
                        kib = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
                        ti = title.split("-- ", 1)[1].strip()
                        self.peaks[ti] = max(self.peaks.get(ti, 0), kib)
                except (OSError, AttributeError, ValueError):
                    continue
            time.sleep(0.5)


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_weekly(values: dict, conf: dict) -> tuple[dict, list[dict], dict[str, int]]:
    url = values["GENREFLOW_CLUSTER_URL"]
    session = requests.Session()
    token = session.post(f"{url}/auth/token", json={
        "username": "admin", "password": values["GENREFLOW_CLUSTER_PASSWORD"]}, timeout=30)
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    while not session.get(f"{url}/api/v2/dags/{DAG_ID}", timeout=30).ok:
        time.sleep(2)
    session.patch(f"{url}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=30)
    sampler = RssSampler()
    sampler.start()
    run = session.post(f"{url}/api/v2/dags/{DAG_ID}/dagRuns",
                       json={"logical_date": None, "conf": conf}, timeout=30).json()
    path = f"{url}/api/v2/dags/{DAG_ID}/dagRuns/{quote(run['dag_run_id'], safe='')}"
    while (run := session.get(path, timeout=30).json())["state"] not in ("success", "failed"):
        time.sleep(5)
    sampler.done.set()
    tis = session.get(f"{path}/taskInstances", params={"limit": 1000},
                      timeout=30).json()["task_instances"]
    return run, tis, sampler.peaks


def task_table(run: dict, tis: list[dict], peaks: dict[str, int]) -> list[dict]:
    rows = []
    for task in dict.fromkeys(t["task_id"] for t in sorted(tis, key=lambda t: t["start_date"]
                                                              or "9")):
        mine = [t for t in tis if t["task_id"] == task and t["start_date"]]
        if not mine:
            continue
        start = min(when(t["start_date"]) for t in mine)
        end = max(when(t["end_date"]) for t in mine if t["end_date"])
        rss = max((peaks.get(t["id"], 0) for t in mine), default=0)
        rows.append({"task": task, "instances": len(mine), "wall_s": round(end - start, 1),
                     "sum_task_s": round(sum(t["duration"] or 0 for t in mine), 1),
                     "peak_RSS_MiB": round(rss / 1024) if rss else "n/a",
                     "states": ",".join(sorted({t["state"] for t in mine}))})
    total = when(run["end_date"]) - when(run["start_date"])
    rows.append({"task": "run (queued to end)", "instances": "", "wall_s": round(total, 1),
                 "sum_task_s": "", "peak_RSS_MiB": "", "states": run["state"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, required=True, help="real clips <genre>/<file>")
    parser.add_argument("--catalog", type=int, default=10000, help="tracks already catalogued")
    parser.add_argument("--new", type=int, default=1000, help="new tracks in the inbox")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of a new track")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers")
    parser.add_argument("--batch-size", type=int, default=50, help="tracks per extract task")
    args = parser.parse_args(argv)
    real = cached_features(args.audio, 2)
    genres = sorted(real["genre"].unique())
    inbox = synth_inbox(genres, args.new, args.seconds)
    last_week = catalog_files(real, args.catalog)
    directory = OUT / f"cluster-{os.getpid()}"
    process, values = start_cluster(directory, args.workers)
    try:
        started = time.perf_counter()
        seeded = seed_catalog(bucket(values, "store"), last_week)
        uploaded = upload_inbox(bucket(values, "inbox"), inbox, args.new)
        valid = OUT / "weekly-valid.csv"
        write_valid_table(real, valid, FEATURE_SETS)
        bucket(values, "valid").write_bytes("valid.csv", valid.read_bytes())
        print(f"seeded {seeded} catalogued tracks and {uploaded} new ones in "
              f"{time.perf_counter() - started:.0f} s; running {DAG_ID} on {args.workers} "
              f"worker(s)", flush=True)
        run, tis, peaks = run_weekly(values, {"batch_size": args.batch_size,
                                              "max_new_tracks": args.new})
        print(markdown(task_table(run, tis, peaks)))
        print(json.dumps({"catalog": args.catalog, "new": uploaded, "workers": args.workers,
                          "state": run["state"]}))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=180)
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
