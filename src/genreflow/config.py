"""Where things live and which genres exist: one place, read from env and include/.

Every location is a URI understood by :func:`genreflow.storage.open_store`
(a local path, ``file://...`` or ``s3://bucket/prefix``), so the embedded default
(local folders) and MinIO/S3 differ only in configuration.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ENV_HOME = "GENREFLOW_HOME"
ENV_CONFIG = "GENREFLOW_CONFIG"
ENV_STORE = "GENREFLOW_STORE"
ENV_INBOX = "GENREFLOW_INBOX"
ENV_VALID_CSV = "GENREFLOW_VALID_CSV"
ENV_WORKERS = "GENREFLOW_WORKERS"
ENV_SPOTIFY_API = "GENREFLOW_SPOTIFY_API_PREFIX"  # e.g. a proxy or a test server; empty: Spotify
ENV_SPOTIFY_TOKEN_URL = "GENREFLOW_SPOTIFY_TOKEN_URL"


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
    config_path = Path(os.environ.get(ENV_CONFIG, home / "include" / "genreflow.toml"))
    config = read_project_config(config_path)
    demo = home / "var" / "demo"
    values = {
        "store": os.environ.get(ENV_STORE, str(home / "var" / "store")),
        "inbox": os.environ.get(ENV_INBOX, str(demo / "inbox")),
        "valid_csv": os.environ.get(ENV_VALID_CSV, str(demo / "valid.csv")),
        "workers": int(os.environ.get(ENV_WORKERS, os.cpu_count() or 1)),
    }
    values.update({k: v for k, v in overrides.items() if v not in (None, "")})
    return Settings(
        home=home,
        genres=tuple(config["genres"]),
        playlists=dict(config.get("spotify", {}).get("playlists", {})),
        store=str(values["store"]),
        inbox=str(values["inbox"]),
        valid_csv=str(values["valid_csv"]),
        workers=max(1, int(values["workers"])),
        spotify_api_prefix=os.environ.get(ENV_SPOTIFY_API, ""),
        spotify_token_url=os.environ.get(ENV_SPOTIFY_TOKEN_URL, ""),
    )
