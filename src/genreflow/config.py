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
ENV_INBOX_MIN_AGE = "GENREFLOW_INBOX_MIN_AGE"  # seconds a file must be unchanged to be taken
ENV_SPOTIFY_API = "GENREFLOW_SPOTIFY_API_PREFIX"  # e.g. a proxy or a test server; empty: Spotify
ENV_SPOTIFY_TOKEN_URL = "GENREFLOW_SPOTIFY_TOKEN_URL"
ENV_JAMENDO_API = "GENREFLOW_JAMENDO_API_URL"  # e.g. a test server; empty: api.jamendo.com
ENV_RETRY_DELAY = "GENREFLOW_RETRY_DELAY_SECONDS"
ENV_WORKER_HOSTNAME = "GENREFLOW_WORKER_HOSTNAME"
ENV_EXECUTOR = "AIRFLOW__CORE__EXECUTOR"
DEFAULT_RETRY_DELAY_SECONDS = 120.0
# Executors that run every task on the scheduler's host, where a local folder is shared.
LOCAL_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


JAMENDO_AUDIO_FORMATS = ("mp31", "mp32", "ogg", "flac")  # the API's `audiodlformat` values
JAMENDO_TAG_MATCH = ("tags", "fuzzytags")  # exact (AND) or fuzzy (OR) tag search
LICENCE_TERMS = ("by", "nc", "nd", "sa")  # elements of a Creative Commons licence URL
# The API's quota for a free non-commercial client id (developer.jamendo.com, docs/sources.md).
JAMENDO_MONTHLY_REQUESTS = 35_000


class ConfigError(PermanentError, ValueError):
    """The configuration (include/genreflow.toml, a GENREFLOW_* variable) is not usable."""


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
class JamendoConfig:
    """The ``[jamendo]`` table of include/genreflow.toml (see docs/sources.md)."""

    tags: dict[str, list[str]] = field(default_factory=dict)
    tag_match: str = "tags"
    audio_format: str = "mp32"
    per_genre_cap: int = 50
    exclude_licence_terms: tuple[str, ...] = ()
    monthly_requests: int = JAMENDO_MONTHLY_REQUESTS
    run_share: float = 0.05
    api_url: str = ""

    @property
    def max_requests(self) -> int:
        """API requests one run may make: its share of the monthly quota."""
        return max(1, int(self.monthly_requests * self.run_share))

    @classmethod
    def from_toml(cls, table: dict, where: str, api_url: str = "") -> JamendoConfig:
        """Validated, so a typo fails the run with its place instead of querying wrongly."""
        tags = table.get("tags", {})
        if not isinstance(tags, dict) or not all(
            isinstance(v, list) and v and all(isinstance(t, str) and t for t in v)
            for v in tags.values()
        ):
            raise ConfigError(f"{where}: [jamendo.tags] must map genres to non-empty lists of tags")
        config = cls(
            tags={genre: list(values) for genre, values in tags.items()},
            tag_match=table.get("tag_match", cls.tag_match),
            audio_format=table.get("audio_format", cls.audio_format),
            per_genre_cap=table.get("per_genre_cap", cls.per_genre_cap),
            exclude_licence_terms=tuple(table.get("exclude_licence_terms", ())),
            monthly_requests=table.get("monthly_requests", cls.monthly_requests),
            run_share=table.get("run_share", cls.run_share),
            api_url=api_url,
        )
        problems = [f"exclude_licence_terms: {term!r} not in {LICENCE_TERMS}"
                    for term in config.exclude_licence_terms if term not in LICENCE_TERMS]
        if config.tag_match not in JAMENDO_TAG_MATCH:
            problems.append(f"tag_match {config.tag_match!r} not in {JAMENDO_TAG_MATCH}")
        if config.audio_format not in JAMENDO_AUDIO_FORMATS:
            problems.append(f"audio_format {config.audio_format!r} not in {JAMENDO_AUDIO_FORMATS}")
        if not isinstance(config.per_genre_cap, int) or config.per_genre_cap < 1:
            problems.append(f"per_genre_cap must be a positive integer: {config.per_genre_cap!r}")
        if not isinstance(config.monthly_requests, int) or config.monthly_requests < 1:
            problems.append("monthly_requests must be a positive integer")
        if not isinstance(config.run_share, int | float) or not 0 < config.run_share <= 1:
            problems.append(f"run_share must be in (0, 1], not {config.run_share!r}")
        if problems:
            raise ConfigError(f"{where} [jamendo]: " + "; ".join(problems))
        return config


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one run; small and serialisable."""

    home: Path
    store: str
    inbox: str
    valid_csv: str
    genres: tuple[str, ...]
    playlists: dict[str, list[str]] = field(default_factory=dict)
    feature_sets: tuple[str, ...] = ("librosa",)
    workers: int = 1
    inbox_min_age: float = 0.0
    spotify_api_prefix: str = ""
    spotify_token_url: str = ""
    jamendo: JamendoConfig = field(default_factory=JamendoConfig)

    @property
    def demo_dir(self) -> Path:
        return self.home / "var" / "demo"

    @property
    def is_demo_inbox(self) -> bool:
        """Whether the inbox is the synthetic corpus `genreflow demo` writes (the default
        when GENREFLOW_INBOX is unset): a model trained on it has never heard real music."""
        inbox = self.inbox.removeprefix("file://")
        return "://" not in inbox and Path(inbox).resolve() == (self.demo_dir / "inbox").resolve()


def read_project_config(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            config = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc} (see {ENV_CONFIG})") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc} (see {ENV_CONFIG})") \
            from exc
    genres = config.get("genres")
    if not genres or not all(isinstance(g, str) and g for g in genres):
        raise ConfigError(f"{path}: 'genres' must be a non-empty list of names")
    if len(set(genres)) != len(genres):
        raise ConfigError(f"{path}: 'genres' has duplicates: {genres}")
    from genreflow.features.sets import DEFAULT_SETS, UnknownFeatureSet, resolve

    try:
        config["feature_sets"] = tuple(s.name for s in resolve(
            config.get("feature_sets", DEFAULT_SETS)))
    except UnknownFeatureSet as exc:
        raise ConfigError(f"{path}: 'feature_sets': {exc}") from exc
    return config


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{name}={value!r} is not a number of seconds (0 or more)")
    return seconds


def _whole_number(name: str, value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a whole number") from None


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
        "workers": os.environ.get(ENV_WORKERS, os.cpu_count() or 1),
    }
    values.update({k: v for k, v in overrides.items() if v not in (None, "")})
    locations = {name: _absolute(str(values[name]), home) for name in ("store", "inbox",
                                                                         "valid_csv")}
    require_shared_locations(locations, airflow_executors())
    return Settings(
        home=home,
        genres=tuple(config["genres"]),
        playlists=dict(config.get("spotify", {}).get("playlists", {})),
        feature_sets=config["feature_sets"],
        **locations,
        workers=max(1, _whole_number(f"workers ({ENV_WORKERS})", values["workers"])),
        inbox_min_age=_seconds(ENV_INBOX_MIN_AGE, os.environ.get(ENV_INBOX_MIN_AGE, "0")),
        spotify_api_prefix=os.environ.get(ENV_SPOTIFY_API, ""),
        spotify_token_url=os.environ.get(ENV_SPOTIFY_TOKEN_URL, ""),
        jamendo=JamendoConfig.from_toml(config.get("jamendo", {}), str(config_path),
                                        os.environ.get(ENV_JAMENDO_API, "")),
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
