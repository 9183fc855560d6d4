"""Where things live and which genres exist: one place, read from env and include/.

Every location is a URI understood by :func:`genreflow.storage.open_store`
(a local path, ``file://...`` or ``s3://bucket/prefix``), so the embedded default
(local folders) and MinIO/S3 differ only in configuration.
"""

from __future__ import annotations

import os
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from genreflow.errors import PermanentError

ENV_HOME = "GENREFLOW_HOME"
ENV_CONFIG = "GENREFLOW_CONFIG"
ENV_STORE = "GENREFLOW_STORE"
ENV_INBOX = "GENREFLOW_INBOX"
ENV_VALID_CSV = "GENREFLOW_VALID_CSV"
ENV_WORKERS = "GENREFLOW_WORKERS"
ENV_SPOTIFY_API = "GENREFLOW_SPOTIFY_API_PREFIX"  # e.g. a proxy or a test server; empty: Spotify
ENV_SPOTIFY_TOKEN_URL = "GENREFLOW_SPOTIFY_TOKEN_URL"
ENV_RETRY_DELAY = "GENREFLOW_RETRY_DELAY_SECONDS"
ENV_WORKER_HOSTNAME = "GENREFLOW_WORKER_HOSTNAME"
ENV_EXECUTOR = "AIRFLOW__CORE__EXECUTOR"
DEFAULT_RETRY_DELAY_SECONDS = 120.0
# Executors that run every task on the scheduler's host, where a local folder is shared.
LOCAL_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


class SharedStorageRequired(PermanentError):
    """A distributed executor with a local folder as store, inbox or valid.csv."""


def project_home() -> Path:
    """The checkout (or image folder) holding include/; defaults resolve against it."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).resolve()
    source_root = Path(__file__).resolve().parents[2]
    if (source_root / "include").is_dir():
        return source_root
    return Path.cwd()


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one run; small and serialisable."""

    home: Path
    store: str
    inbox: str
    valid_csv: str
    genres: tuple[str, ...]
    playlists: dict[str, list[str]] = field(default_factory=dict)
    workers: int = 1
    spotify_api_prefix: str = ""
    spotify_token_url: str = ""

    @property
    def demo_dir(self) -> Path:
        return self.home / "var" / "demo"


def read_project_config(path: Path) -> dict:
    with path.open("rb") as fh:
        config = tomllib.load(fh)
    genres = config.get("genres")
    if not genres or not all(isinstance(g, str) and g for g in genres):
        raise ValueError(f"{path}: 'genres' must be a non-empty list of names")
    if len(set(genres)) != len(genres):
        raise ValueError(f"{path}: 'genres' has duplicates: {genres}")
    return config


def load_settings(**overrides: str | int | None) -> Settings:
    """Settings from env with per-run overrides (DAG params); None means 'not given'."""
    home = project_home()
    config_path = home / os.environ.get(ENV_CONFIG, "include/genreflow.toml")
    config = read_project_config(config_path)
    demo = home / "var" / "demo"
    values = {
        "store": os.environ.get(ENV_STORE, str(home / "var" / "store")),
        "inbox": os.environ.get(ENV_INBOX, str(demo / "inbox")),
        "valid_csv": os.environ.get(ENV_VALID_CSV, str(demo / "valid.csv")),
        "workers": int(os.environ.get(ENV_WORKERS, os.cpu_count() or 1)),
    }
    values.update({k: v for k, v in overrides.items() if v not in (None, "")})
    locations = {name: _absolute(str(values[name]), home) for name in ("store", "inbox",
                                                                         "valid_csv")}
    require_shared_locations(locations, airflow_executors())
    return Settings(
        home=home,
        genres=tuple(config["genres"]),
        playlists=dict(config.get("spotify", {}).get("playlists", {})),
        **locations,
        workers=max(1, int(values["workers"])),
        spotify_api_prefix=os.environ.get(ENV_SPOTIFY_API, ""),
        spotify_token_url=os.environ.get(ENV_SPOTIFY_TOKEN_URL, ""),
    )


def _absolute(uri: str, home: Path) -> str:
    """A relative local path is relative to the project home, not to the working
    directory: Airflow starts task processes in a folder of its own choosing."""
    if urlparse(uri).scheme or Path(uri).is_absolute():
        return uri
    return str(home / uri)


def airflow_executors() -> list[str]:
    """Class names of the executors Airflow is configured with, read cheaply: the env
    variable (how compose and scripts/airflow-cluster.sh set it), else Airflow's config
    when Airflow is already imported (task processes); otherwise none is known."""
    value = os.environ.get(ENV_EXECUTOR)
    if value is None and "airflow.configuration" in sys.modules:
        value = sys.modules["airflow.configuration"].conf.get("core", "executor", fallback="")
    names = []
    for team in (value or "").split(";"):  # "LocalExecutor;team_a=CeleryExecutor"
        for entry in team.rpartition("=")[2].split(","):  # "alias:module.path.Class"
            if entry.strip():
                names.append(entry.rpartition(":")[2].rpartition(".")[2].strip())
    return names


def require_shared_locations(locations: dict[str, str], executors: list[str]) -> None:
    """With an executor that runs tasks on other hosts (Celery, Kubernetes), every task
    must see the same store, inbox and valid.csv: a local folder is only on one host."""
    distributed = sorted(set(executors) - LOCAL_EXECUTORS)
    local = {name: uri for name, uri in locations.items() if urlparse(uri).scheme != "s3"}
    if distributed and local:
        listed = ", ".join(f"{name}={uri}" for name, uri in local.items())
        raise SharedStorageRequired(
            f"Airflow runs tasks with {'/'.join(distributed)}, so tasks run on several hosts, "
            f"but these are local folders that other hosts cannot see: {listed}. Use S3 URIs "
            "(s3://bucket/prefix; AWS_ENDPOINT_URL for MinIO) in GENREFLOW_STORE, "
            "GENREFLOW_INBOX and GENREFLOW_VALID_CSV (or DAG params), or LocalExecutor."
        )


def retry_delay_seconds() -> float:
    """Seconds between task tries (the DAG's retry_delay); tests of worker loss shorten it."""
    return float(os.environ.get(ENV_RETRY_DELAY, DEFAULT_RETRY_DELAY_SECONDS))


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for workers sharing one machine: the name in
    ``GENREFLOW_WORKER_HOSTNAME``, else the machine's (as Airflow's default)."""
    return os.environ.get(ENV_WORKER_HOSTNAME) or socket.getfqdn()
