"""The model registry in a Store: immutable ``models/<version>/`` folders and a pointer.

Readers only ever follow ``latest.json``, which is written last, after every file of
the version is uploaded and read back with a matching sha256: a failure anywhere
before that leaves the previous champion in place. The pointer is replaced by a
conditional write (compare-and-swap on its ETag), so two publishers racing cannot
silently clobber each other, and it carries the sha256 of the champion's manifest, so
the chain latest -> manifest -> files is checked end to end.

Every name read from the store (the version in ``latest.json``, file names in a
manifest) is checked to be one plain path segment before anything is read or written
with it: a manifest is data anyone with write access to the bucket can forge.
"Promoted" is what the pointer's history says (a version that held ``latest.json``),
never the manifest's ``promoted`` field, which is only the gate's intent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

from genreflow.errors import PermanentError
from genreflow.layout import (
    LATEST_KEY,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODELS,
    TRACKS_FILE,
    version_key,
)
from genreflow.storage import AlreadyExists, KeyNotFound, Store, WriteConflict

log = logging.getLogger(__name__)

# What a version holds besides its reports, so no report may take these names.
RESERVED_FILES = frozenset({MODEL_FILE, MANIFEST_FILE, METRICS_FILE, TRACKS_FILE})
PLOT_SUFFIX = ".png"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CURRENT = object()  # publish(expected_champion=...) default: latest as read at the start


class RegistryError(PermanentError, RuntimeError):
    """A model cannot be published or trusted; the message says which file and why."""


class NoModel(RegistryError):
    """The store has no champion (no ``latest.json``)."""


class UnknownVersion(RegistryError):
    """No file at all exists under ``models/<version>/``."""


class IncompleteVersion(RegistryError):
    """The version lacks its manifest or a file its manifest lists."""


class TamperedFile(RegistryError):
    """A file's sha256 differs from the one recorded when it was published."""


class UntrustedModel(RegistryError):
    """The model file holds types outside genreflow.trusted_types, or is not skops."""


class NotAModel(RegistryError):
    """The model file loads, but holds no fitted classifier (``predict`` could not use it)."""


class PromotionConflict(RegistryError):
    """``latest.json`` moved while this publish or rollback was deciding: not promoted."""


class BrokenPointer(RegistryError):
    """``latest.json`` is not a pointer (garbage, ``{}``, ``[]``, a bad version name)."""


REPAIR_HINT = "repair it with `genreflow rollback VERSION` (see docs/operations.md)"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def new_version(now: datetime | None = None) -> str:
    """Sortable and unique: UTC timestamp plus a short random suffix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def check_name(name: str, what: str = "version") -> str:
    """Versions and file names are single path segments (no ``..``, no ``/``)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise UnknownVersion(f"{name!r} is not a valid {what} name")
    return name


def check_manifest(manifest, where: str) -> dict:
    """A manifest whose ``files`` table holds anything but plain names and sha256s is
    refused as a whole, before any of its names is used as a key or a local path."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise TamperedFile(f"{where} has no 'files' table; refusing the version")
    for name, entry in files.items():
        if name == MANIFEST_FILE or not _SAFE_NAME.fullmatch(name):
            raise TamperedFile(
                f"{where} lists an unsafe file name {name!r} (plain names only); "
                "refusing the version"
            )
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise TamperedFile(f"{where}: entry {name!r} has no sha256; refusing the version")
    return manifest


def parse_pointer(data: bytes, where: str) -> dict:
    """``latest.json`` bytes -> the pointer; BrokenPointer unless it names a valid version."""
    try:
        pointer = json.loads(data)
    except ValueError as exc:
        raise BrokenPointer(f"{where} is not JSON ({exc}); {REPAIR_HINT}") from exc
    version = pointer.get("version") if isinstance(pointer, dict) else None
    if not isinstance(version, str) or not _SAFE_NAME.fullmatch(version):
        raise BrokenPointer(
            f"{where} names no valid version (content {data[:80]!r}); {REPAIR_HINT}"
        )
    return pointer


def read_latest(store: Store) -> dict | None:
    """The pointer, None without one; BrokenPointer if it cannot be followed."""
    try:
        data = store.read_bytes(LATEST_KEY)
    except KeyNotFound:
        return None
    return parse_pointer(data, store.location(LATEST_KEY))


def _read_latest_etag(store: Store) -> tuple[dict | None, str | None, str]:
    """(pointer, ETag, problem) for a compare-and-swap; a broken pointer reads as None
    with its ETag and the problem, so a publish or a rollback can replace it (still
    conditionally)."""
    try:
        data, etag = store.read_bytes_with_etag(LATEST_KEY)
    except KeyNotFound:
        return None, None, ""
    try:
        return parse_pointer(data, store.location(LATEST_KEY)), etag, ""
    except BrokenPointer as exc:
        log.warning("%s; the next promotion or rollback replaces it", exc)
        return None, etag, str(exc)


def _version_folders(store: Store) -> dict[str, bool]:
    """Every ``models/<version>/`` folder -> whether it has a manifest."""
    folders: dict[str, bool] = {}
    for key in store.list_keys(MODELS):
        version, *names = key.removeprefix(MODELS).split("/")
        if names:
            folders[version] = folders.get(version, False) or names == [MANIFEST_FILE]
    return folders


def list_versions(store: Store) -> list[str]:
    """Complete-looking versions (those with a manifest), oldest first."""
    return sorted(version for version, complete in _version_folders(store).items() if complete)


def promoted_versions(pointer: dict) -> set[str]:
    """Versions that held ``latest.json``: the pointer's own and its history."""
    return {pointer["version"], *pointer.get("history", [])}


def _manifest_with_bytes(
    store: Store, version: str, expected_sha256: str | None = None
) -> tuple[dict, bytes]:
    """The parsed manifest and its bytes; typed errors for unknown/incomplete/broken."""
    key = version_key(check_name(version), MANIFEST_FILE)
    try:
        data = store.read_bytes(key)
    except KeyNotFound as exc:
        if store.list_keys(version_key(version, "")):
            raise IncompleteVersion(
                f"version {version} has no manifest (a publish that failed half-way, or "
                "the manifest was deleted): not a complete version"
            ) from exc
        raise UnknownVersion(f"unknown version {version} in {store.uri}") from exc
    if expected_sha256 and sha256_hex(data) != expected_sha256:
        raise TamperedFile(
            f"{store.location(key)}: sha256 differs from the one in {LATEST_KEY}; refusing it"
        )
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise TamperedFile(f"{store.location(key)} is not valid JSON: {exc}") from exc
    return check_manifest(manifest, store.location(key)), data


def read_manifest(store: Store, version: str, expected_sha256: str | None = None) -> dict:
    return _manifest_with_bytes(store, version, expected_sha256)[0]


def resolve(store: Store, version: str | None = None) -> tuple[str, dict]:
    """(version, manifest) of ``version``, or of the champion (checked against latest.json)."""
    if version is not None:
        return version, read_manifest(store, version)
    latest = read_latest(store)
    if latest is None:
        raise NoModel(f"{store.uri} has no published model (no {LATEST_KEY})")
    version = latest["version"]
    return version, read_manifest(store, version, latest.get("manifest_sha256"))


def version_summaries(store: Store, only: str | None = None) -> list[dict]:
    """One row per version folder, newest first: metrics, gate, plots, latest mark
    (``only``: just that version's row, reading one manifest instead of all).

    The one listing both `genreflow models` and the registry page show, in this order
    (versions sort by their UTC timestamp).

    A version that cannot be read (no manifest, tampered, the champion's manifest
    deleted, or a pointer to a version that is gone) gets a row with ``error`` instead
    of being hidden: whoever lists versions (CLI, registry page) decides how to show it.
    ``promoted`` comes from the pointer's history: None when latest.json is broken, and
    the manifest's intent for a pointer written before history was kept.
    """
    try:
        pointer, broken = read_latest(store), False
    except BrokenPointer as exc:
        log.warning("%s", exc)
        pointer, broken = None, True
    latest = pointer["version"] if pointer else None
    rows = []
    versions = sorted({*_version_folders(store), *([latest] if latest else [])}, reverse=True)
    for version in versions if only is None else [v for v in versions if v == only]:
        row = {"version": version, "latest": version == latest,
               "location": store.location(version_key(version, ""))}
        try:
            manifest = read_manifest(store, version)
        except RegistryError as exc:
            rows.append({**row, "error": str(exc)})
            continue
        metrics, gate = manifest.get("metrics", {}), manifest.get("gate", {})
        rows.append({
            **row,
            "created_at": manifest.get("created_at"),
            "run_id": manifest.get("run_id"),
            "n_training_tracks": manifest.get("n_training_tracks"),
            "n_training_segments": manifest.get("n_training_segments"),
            "model_name": manifest.get("model_name"),
            "feature_sets": manifest.get("feature_sets") or ["librosa-v1"],
            "cv_roc_auc_ovo": manifest.get("cv_roc_auc_ovo"),
            "cv_roc_auc_ovo_std": manifest.get("cv_roc_auc_ovo_std"),
            "synthetic_demo": bool(manifest.get("synthetic_demo")),
            "roc_auc_ovo": metrics.get("roc_auc_ovo"),
            "song_accuracy": metrics.get("song_accuracy"),
            "song_macro_f1": metrics.get("song_macro_f1"),
            "promoted": None if broken else _was_promoted(pointer, version, manifest),
            "gate_promote": gate.get("promote"),
            "gate_reason": gate.get("reason", ""),
            "gate_champion": gate.get("champion"),
            "plots": sorted(n for n in manifest.get("files", {}) if n.endswith(PLOT_SUFFIX)),
        })
    return rows


def _was_promoted(pointer: dict | None, version: str, manifest: dict) -> bool:
    if pointer and "history" not in pointer:  # written before history was kept
        return bool(manifest.get("promoted"))
    return bool(pointer) and version in promoted_versions(pointer)


@dataclass(frozen=True)
class Champion:
    """The champion as training and the gate see it. ``manifest`` is None when there is
    no usable champion; ``problem`` then says why a pointer exists but cannot be used."""

    version: str | None
    manifest: dict | None
    problem: str = ""


def read_champion(store: Store) -> Champion:
    """The champion, checked along latest -> manifest; a broken one is logged, not raised,
    so a deleted manifest or a corrupt pointer never stops the next model from training.
    ``version`` is what a publish's compare-and-swap will expect latest to hold."""
    try:
        latest = read_latest(store)
    except BrokenPointer as exc:
        champion = Champion(None, None, f"{type(exc).__name__}: {exc}")
    else:
        if latest is None:
            return Champion(None, None)
        try:
            manifest = read_manifest(store, latest["version"], latest.get("manifest_sha256"))
        except RegistryError as exc:
            champion = Champion(latest["version"], None, f"{type(exc).__name__}: {exc}")
        else:
            return Champion(latest["version"], manifest)
    log.warning("no usable champion (%s); training and publishing as if there were none",
                champion.problem)
    return champion


def verify_files(
    store: Store, version: str, manifest: dict, names: list[str] | None = None
) -> dict[str, bytes]:
    """Read files of a version back (all by default) and check the manifest's sha256."""
    listed = check_manifest(manifest, f"manifest of {version}")["files"]
    contents = {}
    for name in sorted(listed) if names is None else names:
        key = version_key(version, name)
        if name not in listed:
            raise IncompleteVersion(f"manifest of {version} lists no {name}")
        try:
            data = store.read_bytes(key)
        except KeyNotFound as exc:
            raise IncompleteVersion(f"{store.location(key)} is missing") from exc
        if sha256_hex(data) != listed[name]["sha256"]:
            raise TamperedFile(
                f"{store.location(key)}: sha256 mismatch (the file changed after publishing); "
                "refusing it"
            )
        contents[name] = data
    return contents


def publish(
    store: Store, version: str, files: dict[str, bytes], manifest: dict, *, promote: bool,
    expected_champion: str | None | object = _CURRENT,
) -> dict:
    """Write a new version (never overwriting one), verify it, then maybe move latest.

    ``expected_champion`` is the version the gate compared against (None: no champion);
    if latest no longer points there, the version stays stored but is not promoted
    (PromotionConflict). Latest is replaced by compare-and-swap on the ETag read before
    the upload began, so a concurrent publisher that won in between is never clobbered.
    """
    check_name(version)
    for name in files:
        check_name(name, "file")
    if MODEL_FILE not in files or MANIFEST_FILE in files:
        raise RegistryError(f"a version needs {MODEL_FILE} and must not bring its own manifest")
    current, etag, _ = _read_latest_etag(store)
    if store.list_keys(version_key(version, "")):
        raise RegistryError(f"version {version} is already published; versions are immutable")
    checksums = {}
    try:
        for name, data in sorted(files.items()):
            store.write_bytes(version_key(version, name), data, overwrite=False)
            checksums[name] = {"sha256": sha256_hex(data), "bytes": len(data)}
        manifest = {**manifest, "version": version, "files": checksums, "promoted": promote}
        manifest_data = json_bytes(manifest)
        store.write_bytes(version_key(version, MANIFEST_FILE), manifest_data, overwrite=False)
    except AlreadyExists as exc:
        raise RegistryError(f"version {version} appeared while publishing it: {exc}") from exc
    verify_files(store, version, manifest)
    log.info("stored %s (%d files, sha256 verified)", store.location(version_key(version, "")),
             len(files))
    if promote:
        expected = (current or {}).get("version") if expected_champion is _CURRENT \
            else expected_champion
        _swap_latest(store, version, sha256_hex(manifest_data), current, etag, expected)
    return manifest


def _swap_latest(
    store: Store, version: str, manifest_sha256: str, current: dict | None, etag: str | None,
    expected: str | None,
) -> None:
    """Point latest at ``version`` iff it still points at ``expected`` (compare-and-swap)."""
    previous = (current or {}).get("version")
    if previous != expected:
        raise PromotionConflict(
            f"latest points at {previous}, not {expected} as the gate saw; {version} is stored "
            "but NOT promoted (rerun the gate, or `genreflow rollback` to choose)"
        )
    if current is None:
        history = []
    else:  # a pointer written before history was kept knows one predecessor
        known = current.get("history", [current.get("previous")])
        history = [v for v in known if isinstance(v, str)] + [previous]
    pointer = json_bytes({
        "version": version, "manifest_sha256": manifest_sha256, "previous": previous,
        "history": history, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    try:
        if etag is None:
            store.write_bytes(LATEST_KEY, pointer, overwrite=False)
        else:
            store.write_bytes(LATEST_KEY, pointer, if_match=etag)
    except WriteConflict as exc:
        winner = (_read_latest_etag(store)[0] or {}).get("version")
        raise PromotionConflict(
            f"another publisher moved latest to {winner} while {version} was being promoted; "
            f"{version} is stored but NOT promoted ({exc})"
        ) from exc
    log.info("latest -> %s (was %s)", version, previous)


def rollback(store: Store, version: str) -> dict:
    """Point latest at an existing version after checking every one of its files.

    Works on a broken or dangling pointer too (that is how one is repaired), and is a
    compare-and-swap like a publish: a pointer that moves meanwhile -> PromotionConflict.
    Returns ``previous`` (None if there was none or it was broken), ``repaired`` (the
    broken pointer's problem, or ""), and the target's ``manifest``.
    """
    current, etag, repaired = _read_latest_etag(store)
    manifest, manifest_data = _manifest_with_bytes(store, version)
    contents = verify_files(store, version, manifest)
    if MODEL_FILE not in contents:
        raise IncompleteVersion(f"manifest of {version} lists no {MODEL_FILE}")
    check_model(contents[MODEL_FILE], version)
    previous = (current or {}).get("version")
    _swap_latest(store, version, sha256_hex(manifest_data), current, etag, previous)
    return {"version": version, "previous": previous, "repaired": repaired,
            "manifest": manifest}


def skops_io():
    """``skops.io``, imported with Airflow's deprecation shim modules set aside.

    On import skops names every scipy.special ufunc by probing each loaded module for it
    (skops.io._utils.whichmodule). In a task process those modules include Airflow's
    shims (``airflow.utils.timezone`` and some 20 more), which answer any attribute by
    warning and trying an import: ~1,160 DeprecatedImportWarning lines per process and
    seconds of work. The shims hold no ufunc, so skops' tables come out the same.
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    shims = {name: module for name, module in list(sys.modules.items())
             if name.startswith("airflow.") and _is_deprecation_shim(module)}
    for name in shims:
        del sys.modules[name]
    try:
        import skops.io
    finally:
        sys.modules.update(shims)
    return skops.io


def _is_deprecation_shim(module) -> bool:
    """A module whose ``__getattr__`` is Airflow's getattr_with_deprecation."""
    hook = getattr(module, "__dict__", {}).get("__getattr__")
    return getattr(getattr(hook, "func", None), "__name__", "") == "getattr_with_deprecation"


def dump_model(model) -> bytes:
    return skops_io().dumps(model)


def check_trusted(data: bytes) -> None:
    """UntrustedModel unless ``data`` is skops holding only genreflow.trusted_types:
    checked on pull too, so "verified" never names a file predict would refuse."""
    from genreflow.trusted_types import TRUSTED_TYPES

    try:
        untrusted = sorted(set(skops_io().get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    except Exception as exc:  # skops raises zip/JSON/key errors for foreign bytes
        raise UntrustedModel(f"not a skops model file ({type(exc).__name__}: {exc})") from exc
    if untrusted:
        raise UntrustedModel(
            f"model holds types outside the allow-list (genreflow.trusted_types): {untrusted}"
        )


def load_model_bytes(data: bytes):
    """skops load allowing only the types listed in genreflow.trusted_types."""
    from genreflow.trusted_types import TRUSTED_TYPES

    check_trusted(data)
    return skops_io().loads(data, trusted=list(TRUSTED_TYPES))


def check_model(data: bytes, version: str) -> None:
    """NotAModel unless ``data`` loads (allow-listed types) as a fitted classifier: an
    allow-listed file can still hold a plain dict, which predict would fail on."""
    model = load_model_bytes(data)
    if not (hasattr(model, "predict_proba") and hasattr(model, "classes_")):
        raise NotAModel(f"{MODEL_FILE} of {version} holds a {type(model).__name__}, not a "
                        "fitted pipeline; refusing it")


def load_model(store: Store, version: str | None = None):
    """(model, manifest) of ``version`` or of the current champion, checksums verified."""
    version, manifest = resolve(store, version)
    contents = verify_files(store, version, manifest, [MODEL_FILE])
    return load_model_bytes(contents[MODEL_FILE]), manifest


# Recorded in every manifest: what a retrain needs to match (genreflow reproduce).
PACKAGES = (
    "genreflow", "apache-airflow", "librosa", "numpy", "pandas", "scikit-learn",
    "imbalanced-learn", "scipy", "skops",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
