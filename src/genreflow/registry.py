"""The model registry in a Store: immutable ``models/<version>/`` folders and a pointer.

Readers only ever follow ``latest.json``, which is written last, after every file of
the version is uploaded and read back with a matching sha256: a failure anywhere
before that leaves the previous champion in place.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime

from genreflow.errors import PermanentError
from genreflow.storage import KeyNotFound, Store

log = logging.getLogger(__name__)

MODELS_PREFIX = "models"
LATEST_KEY = "latest.json"
MODEL_FILE = "model.skops"
MANIFEST_FILE = "manifest.json"


class RegistryError(PermanentError, RuntimeError):
    """A model cannot be published or trusted; the message says which file and why."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_version(now: datetime | None = None) -> str:
    """Sortable and unique: UTC timestamp plus a short random suffix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def version_key(version: str, name: str) -> str:
    return f"{MODELS_PREFIX}/{version}/{name}"


def read_latest(store: Store) -> dict | None:
    try:
        return store.read_json(LATEST_KEY)
    except KeyNotFound:
        return None


def read_manifest(store: Store, version: str) -> dict:
    try:
        return store.read_json(version_key(version, MANIFEST_FILE))
    except KeyNotFound as exc:
        raise RegistryError(f"version {version} has no manifest: not a complete version") from exc


def champion_manifest(store: Store) -> dict | None:
    latest = read_latest(store)
    return read_manifest(store, latest["version"]) if latest else None


def publish(
    store: Store, version: str, files: dict[str, bytes], manifest: dict, *, promote: bool
) -> dict:
    """Write a new version (never overwriting one), verify it, then maybe move latest."""
    if store.exists(version_key(version, MANIFEST_FILE)):
        raise RegistryError(f"version {version} is already published; versions are immutable")
    checksums = {}
    for name, data in sorted(files.items()):
        store.write_bytes(version_key(version, name), data, overwrite=False)
        checksums[name] = {"sha256": sha256_hex(data), "bytes": len(data)}
    manifest = {**manifest, "version": version, "files": checksums, "promoted": promote}
    store.write_json(version_key(version, MANIFEST_FILE), manifest, overwrite=False)
    verify_files(store, version, manifest)
    log.info("stored %s (%d files, verified)", store.location(version_key(version, "")), len(files))
    if promote:
        store.write_json(
            LATEST_KEY,
            {"version": version, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")},
        )
        log.info("latest -> %s", version)
    return manifest


def verify_files(store: Store, version: str, manifest: dict) -> dict[str, bytes]:
    """Read every file of a version back and check it against the manifest's sha256."""
    contents = {}
    for name, expected in manifest["files"].items():
        data = store.read_bytes(version_key(version, name))
        if sha256_hex(data) != expected["sha256"]:
            raise RegistryError(
                f"{store.location(version_key(version, name))}: sha256 mismatch "
                "(the file changed after publishing); refusing it"
            )
        contents[name] = data
    return contents


def dump_model(model) -> bytes:
    import skops.io as sio

    return sio.dumps(model)


def load_model_bytes(data: bytes):
    """skops load allowing only the types listed in genreflow.trusted_types."""
    import skops.io as sio

    from genreflow.trusted_types import TRUSTED_TYPES

    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise RegistryError(f"model holds types outside the allow-list: {untrusted}")
    return sio.loads(data, trusted=list(TRUSTED_TYPES))


def load_model(store: Store, version: str | None = None):
    """(model, manifest) of ``version`` or of the current champion, checksums verified."""
    if version is None:
        latest = read_latest(store)
        if latest is None:
            raise RegistryError(f"{store.uri} has no published model (no {LATEST_KEY})")
        version = latest["version"]
    manifest = read_manifest(store, version)
    contents = verify_files(store, version, {"files": {MODEL_FILE: manifest["files"][MODEL_FILE]}})
    return load_model_bytes(contents[MODEL_FILE]), manifest
