"""Shared fixtures: a tiny synthetic corpus, a migrated Airflow home, a moto S3 server.

Everything real: audio files on disk, Airflow run as a subprocess (`airflow dags
test`), S3 spoken over HTTP to a moto server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEST_GENRES = ("classical", "metal", "electronic")  # a custom genre on purpose


def shared_data() -> Path:
    return Path(os.environ.get("GENREFLOW_SHARED_DATA", PROJECT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_clips() -> Path:
    """The real GTZAN excerpts beside the project; skip where a clone has none."""
    root = shared_data() / "gtzan-excerpts"
    if not root.is_dir():
        pytest.skip(f"real clips not found at {root} (set GENREFLOW_SHARED_DATA)")
    return root


@pytest.fixture
def sleeps() -> list[float]:
    """Collects the waits of a source's retry policy, which tests give ``sleeps.append``."""
    return []


@pytest.fixture(scope="session")
def genres_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "genreflow.toml"
    path.write_text(f"genres = {json.dumps(list(TEST_GENRES))}\n")
    return path


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory, genres_config) -> dict[str, Path]:
    """3 genres x 3 training tracks and 2 validation tracks, 9.2 s each."""
    from genreflow.cli import build_valid_csv
    from genreflow.synth import write_corpus

    root = tmp_path_factory.mktemp("demo")
    write_corpus(root / "inbox", TEST_GENRES, 3, seed=1)
    write_corpus(root / "valid-audio", TEST_GENRES, 2, seed=2, prefix="valid_")
    build_valid_csv(root / "valid-audio", root / "valid.csv", TEST_GENRES, workers=1)
    return {"root": root, "inbox": root / "inbox", "valid_csv": root / "valid.csv"}


def write_bad_tracks(inbox: Path, genre: str) -> dict[str, str]:
    """A corrupt, a too-short and a silent file, with the reason each must get."""
    import numpy as np
    import soundfile as sf

    folder = inbox / genre
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really audio" * 50)
    rng = np.random.default_rng(0)
    sf.write(folder / "short.wav", 0.3 * rng.standard_normal(22050).astype("float32"), 22050)
    sf.write(folder / "silent.wav", np.zeros(22050 * 5, dtype="float32"), 22050)
    return {
        f"inbox:{genre}/corrupt.wav": "decode",
        f"inbox:{genre}/short.wav": "shorter than one",
        f"inbox:{genre}/silent.wav": "silent",
    }


def airflow_base_env(home: Path, genres_config: Path) -> dict[str, str]:
    """A project-local SQLite Airflow in ``home`` seeing this repo's DAGs and plugins."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "GENREFLOW_HOME": str(PROJECT),
        "GENREFLOW_CONFIG": str(genres_config),
    }


@pytest.fixture
def standalone_env(tmp_path, demo_corpus, genres_config) -> tuple[dict[str, str], Path, int]:
    """Env, AIRFLOW_HOME and a free port for scripts/airflow-standalone.sh on the demo corpus,
    storing into tmp_path/store."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    port = free_port()
    env = {
        **airflow_base_env(home, genres_config),
        "AIRFLOW__API__PORT": str(port),
        "GENREFLOW_STORE": str(tmp_path / "store"),
        "GENREFLOW_INBOX": str(demo_corpus["inbox"]),
        "GENREFLOW_VALID_CSV": str(demo_corpus["valid_csv"]),
        "GENREFLOW_WORKERS": "1",
    }
    return env, home, port


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory, genres_config) -> dict[str, str]:
    """Environment of a project-local SQLite Airflow, migrated once per session."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**airflow_base_env(home, genres_config), "GENREFLOW_WORKERS": "2"}
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True,
        timeout=300,
    )
    return env


@dataclass
class DagRun:
    returncode: int
    log: str
    env: dict[str, str]

    @property
    def run_id(self) -> str:
        found = re.findall(r"DagRun Finished: .*?run_id=([^,]+),", self.log)
        return found[-1] if found else ""

    @property
    def state(self) -> str:
        found = re.findall(r"DagRun Finished: .*?state=(\w+)", self.log)
        return found[-1] if found else "unknown"

    def task_logs(self) -> dict[str, list[str]]:
        """Each task's lines as `airflow dags test` prints them, keyed "task" or
        "task[map index]", timestamps cut (so that repeats show)."""
        logs: dict[str, list[str]] = {}
        current = None
        for line in self.log.splitlines():
            marker = re.search(r"\[DAG TEST\] (starting|end task) task_id=(\w+) map_index=(-?\d+)",
                               line)
            if marker:
                name = marker[2] if marker[3] == "-1" else f"{marker[2]}[{marker[3]}]"
                current = logs.setdefault(name, []) if marker[1] == "starting" else None
            elif current is not None:
                current.append(re.sub(r"^\S+Z ", "", line))
        return logs

    def task_states(self) -> dict[str, str]:
        """State per task id (mapped tasks: the last map index), from Airflow's database."""
        done = subprocess.run(
            [str(BIN / "airflow"), "tasks", "states-for-dag-run", "genre_retrain", self.run_id,
             "-o", "json"],
            env=self.env, capture_output=True, text=True, timeout=120, check=True,
        )
        return {row["task_id"]: row["state"] for row in json.loads(done.stdout)}


@pytest.fixture(scope="session")
def run_dag(airflow_env):
    """Run genre_retrain through `airflow dags test` with extra env and conf."""

    def run(env: dict[str, str], conf: dict | None = None, timeout: int = 600) -> DagRun:
        command = [str(BIN / "airflow"), "dags", "test", "genre_retrain"]
        if conf:
            command += ["--conf", json.dumps(conf)]
        full_env = {**airflow_env, **env}
        done = subprocess.run(
            command, env=full_env, capture_output=True, text=True, timeout=timeout
        )
        return DagRun(done.returncode, done.stdout + done.stderr, full_env)

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback, spoken to over real HTTP by boto3."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch) -> tuple[str, dict[str, str]]:
    """A fresh bucket (moto state is shared per process) and the env to reach it."""
    import boto3

    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"genreflow-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return bucket, env


@pytest.fixture(scope="session")
def short_clips(tmp_path_factory) -> dict[str, Path]:
    """Two 3.2-s clips (one segment each) per genre for classical and metal, by file name."""
    from genreflow.synth import write_corpus

    root = tmp_path_factory.mktemp("short-clips")
    return {p.name: p for p in write_corpus(root, TEST_GENRES[:2], 2, seconds=3.2, seed=3)}


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path) -> str:
    """A fresh, empty store URI on each backend: a local folder, and a bucket on moto."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket, _ = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/registry"


def segment_table(genres=TEST_GENRES, tracks: int = 4, segments: int = 5, seed: int = 0,
                  shift: dict[int, float] | None = None, prefix: str = "t",
                  sets=("librosa",)):
    """A segment table of standard-normal features of ``sets``; ``shift`` = {column
    index: step}, added to that column times the genre's position, makes it differ by
    genre."""
    import numpy as np
    import pandas as pd

    from genreflow.dataset import track_frame
    from genreflow.features.sets import columns, resolve

    n_columns = len(columns(resolve(sets)))
    rng = np.random.default_rng(seed)
    frames = []
    for g, genre in enumerate(genres):
        for t in range(tracks):
            X = rng.standard_normal((segments, n_columns))
            for column, step in (shift or {}).items():
                X[:, column] += step * g
            frames.append(track_frame(f"{prefix}{genre}{t}", genre, X, sets))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def make_table():
    """Factory of hand-checkable segment tables (see segment_table)."""
    return segment_table
