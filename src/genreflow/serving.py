"""Serving a published model: download, cache, verify, load, predict, and follow ``latest``.

`genreflow predict`, `genreflow serve` (genreflow.server) and the registry page's "Try a
clip" all classify through :func:`predict` (features by ``extraction.model_input``, then
:func:`classify`), so one file gets the same decision and numbers everywhere.

A model is only ever served after its manifest was checked against ``latest.json`` and
its file against the manifest's sha256 and the type allow-list (registry). Heavy
libraries (skops/scikit-learn, librosa/numba, pandas) are imported inside functions: the
CLI imports this module for every command.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from genreflow import registry
from genreflow.audio import AudioError

log = logging.getLogger(__name__)

ENV_CACHE = "GENREFLOW_CACHE"
PROGRESS_BYTES = 4_000_000  # log download progress for files larger than this


class TooLongAudio(AudioError):
    """The audio lasts longer than the server accepts."""


def cache_dir(store, version: str) -> Path:
    """Per store and version, so two stores never share a cached file of the same name."""
    root = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "genreflow")
    return root / hashlib.sha256(store.uri.encode()).hexdigest()[:12] / version


def download(store, version: str, manifest: dict, dest: Path,
             names: list[str] | None = None) -> dict[str, bytes]:
    """Fetch files of a version, verify each sha256 (and the model's types), then write
    them into ``dest``; names were checked to be plain when the manifest was read."""
    contents = {}
    for name in sorted(manifest["files"]) if names is None else names:
        size = manifest["files"].get(name, {}).get("bytes", 0)
        if size > PROGRESS_BYTES:
            log.info("downloading %s of %s (%.1f MB)...", name, version, size / 1e6)
        contents.update(registry.verify_files(store, version, manifest, [name]))
        if size > PROGRESS_BYTES:
            log.info("downloaded %s (%.1f MB), sha256 verified", name, size / 1e6)
    if registry.MODEL_FILE in contents:
        registry.check_trusted(contents[registry.MODEL_FILE])
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in {**contents, registry.MANIFEST_FILE: registry.json_bytes(manifest)}.items():
        tmp = dest / f".{name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, dest / name)
    return contents


def model_bytes(store, version: str, manifest: dict) -> bytes:
    """The model file: the cached copy when its sha256 matches the manifest, else fetched
    (verified) and cached."""
    path = cache_dir(store, version) / registry.MODEL_FILE
    expected = manifest.get("files", {}).get(registry.MODEL_FILE, {}).get("sha256")
    data = path.read_bytes() if path.is_file() else b""
    if registry.sha256_hex(data) != expected:
        if data:
            log.warning("cached %s does not match its manifest; downloading it again", path)
        data = download(store, version, manifest, path.parent, [path.name])[path.name]
    return data


@dataclass(frozen=True)
class Served:
    """A loaded, verified version; replaced as a whole, never changed in place."""

    version: str
    manifest: dict
    model: object
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(
        timespec="seconds"))
    manifest_sha256: str | None = None  # what latest.json named (None: chosen by version)

    @property
    def synthetic_demo(self) -> bool:
        return bool(self.manifest.get("synthetic_demo"))


def check_servable(version: str, manifest: dict) -> None:
    """RegistryError unless this code computes the feature sets (and versions) the model
    was trained on."""
    from genreflow.features.sets import UnknownFeatureSet, manifest_sets

    try:
        sets = manifest_sets(manifest)
    except UnknownFeatureSet as exc:
        raise registry.RegistryError(f"model {version}: {exc}") from exc
    recorded = manifest.get("feature_fingerprints")
    if recorded is not None and recorded != [s.fingerprint for s in sets]:
        raise registry.RegistryError(f"model {version} was trained on features {recorded}, "
                                     "this code computes other columns under those names")


def resolve(store, version: str | None = None) -> tuple[str, dict, str | None]:
    """(version, manifest, the manifest sha256 latest.json named or None) of ``version``
    or of the champion, checked to be servable by this code."""
    if version is None:
        pointer = registry.read_latest(store)
        if pointer is None:
            raise registry.NoModel(f"{store.uri} has no published model "
                                   f"(no {registry.LATEST_KEY})")
        version, expected = pointer["version"], pointer.get("manifest_sha256")
        manifest = registry.read_manifest(store, version, expected)
    else:
        expected, manifest = None, registry.read_manifest(store, version)
    check_servable(version, manifest)
    return version, manifest, expected


def load(store, version: str | None = None) -> Served:
    """``version``, or the champion (its manifest checked against latest.json), loaded
    from the verified cache."""
    version, manifest, expected = resolve(store, version)
    model = registry.load_model_bytes(model_bytes(store, version, manifest))
    return Served(version, manifest, model, manifest_sha256=expected)


def predict_files(store, version: str | None, paths: list[Path]) -> tuple[Served, list]:
    """The served version and, per file, :func:`predict`'s result or the AudioError or
    OSError that refused it.

    For a one-shot command, whose time goes to imports: once the manifest is read, the
    files are featurised in a forked child process (soundfile, numpy; librosa and numba
    only for a model that needs the hand-made features) while this one imports pandas,
    scikit-learn and skops and loads the model, so the two halves overlap on two cores
    instead of adding up. The child runs :func:`features`, this process :func:`classify`:
    what :func:`predict` does.
    """
    from concurrent.futures.process import BrokenProcessPool

    version, manifest, expected = resolve(store, version)
    pool = _fork_pool()
    jobs = [pool.submit(features, path, str(path), manifest) for path in paths] if pool \
        else []
    try:
        model = registry.load_model_bytes(model_bytes(store, version, manifest))
        served = Served(version, manifest, model, manifest_sha256=expected)
        results = []
        for i, path in enumerate(paths):
            try:
                try:
                    rows = jobs[i].result() if pool else features(path, str(path), manifest)
                except BrokenProcessPool:  # the child died (killed?): featurise here
                    rows = features(path, str(path), manifest)
                results.append(classify(served, rows, str(path)))
            except (AudioError, OSError) as exc:
                results.append(exc)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return served, results


def _fork_pool():
    """One forked worker (cheap to start: it inherits this process), where fork is safe
    (Linux); None elsewhere, and the files are featurised here, after the model loads.
    The worker computes on one thread: the other core is the parent's, importing."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    from genreflow.extraction import single_threaded

    if sys.platform != "linux" or multiprocessing.current_process().daemon:
        return None
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                               initializer=single_threaded)


def audio_seconds(data: bytes, name: str) -> float:
    """Duration from the file's header, without decoding it."""
    import io

    import soundfile as sf

    from genreflow.audio import SAMPLE_RATE, decode

    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # soundfile raises several types for foreign bytes
        return decode(data, name).size / SAMPLE_RATE  # UndecodableAudio, in plain words
    return float(info.frames) / float(info.samplerate or 1)


def features(source: bytes | Path, name: str, manifest: dict,
             max_seconds: float | None = None):
    """The model's input for one file, as an array (see ``extraction.model_input``); with
    ``max_seconds``, a longer file is refused from its header, before it is decoded
    (TooLongAudio)."""
    from genreflow.audio import UndecodableAudio
    from genreflow.extraction import model_input

    if isinstance(source, bytes) and not source:
        raise UndecodableAudio(f"{name}: empty file (0 bytes)")
    if max_seconds is not None:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        seconds = audio_seconds(data, name)
        if seconds > max_seconds:
            raise TooLongAudio(f"{name}: {seconds:.1f} s is longer than the {max_seconds:g} s "
                               "this server accepts")
    return model_input(source, name, manifest)


def classify(served: Served, rows, name: str) -> dict:
    """Song genre by the soft vote evaluation.py validates (mean segment probabilities),
    with the probability of every genre, largest first, and the version that answered.
    ``rows``: :func:`features` of one file."""
    import numpy as np
    import pandas as pd

    from genreflow.evaluation import song_genres, song_probabilities
    from genreflow.features.sets import columns, manifest_sets

    table = pd.DataFrame(rows, columns=columns(manifest_sets(served.manifest)))
    proba = served.model.predict_proba(table)
    song = song_probabilities(np.zeros(len(proba)), proba, served.model.classes_)
    ranked = song.iloc[0].sort_values(ascending=False, kind="stable")
    return {
        "file": name, "genre": str(song_genres(song).iloc[0]), "segments": len(proba),
        "probabilities": {str(g): round(float(p), 6) for g, p in ranked.items()},
        "version": served.version, "synthetic_demo": served.synthetic_demo,
    }


def predict(served: Served, source: bytes | Path, name: str,
            max_seconds: float | None = None) -> dict:
    """The one serving function: features of one audio file, then :func:`classify`."""
    return classify(served, features(source, name, served.manifest, max_seconds), name)


class Follower:
    """The model ``latest.json`` names, followed while a server runs.

    ``current()`` re-reads the pointer (one small read) when the last read is older than
    ``poll`` seconds; a moved pointer is loaded (one loader at a time) and swapped in as
    one reference, so a request uses either the old or the new version, whole. A version
    that fails to load (tampered, untrusted, incomplete, other features) is never served:
    the old one stays, the error is logged and kept for /health, and the same pointer is
    tried again only after ``retry`` seconds.
    """

    def __init__(self, store, poll: float = 2.0, retry: float = 60.0):
        self.store, self.poll, self.retry = store, poll, retry
        self.served: Served | None = None
        self.error = ""
        self.error_at: str | None = None
        self._failed: tuple[tuple, float] | None = None  # (pointer key, monotonic time)
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> Served | None:
        if time.monotonic() - self._checked >= self.poll:
            self.refresh()
        return self.served

    def refresh(self) -> None:
        """Read the pointer; load and swap in a version it newly names."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                pointer = registry.read_latest(self.store)
                if pointer is None:
                    raise registry.NoModel(f"{self.store.uri} has no published model "
                                           f"(no {registry.LATEST_KEY})")
            except Exception as exc:  # a broken pointer or the store down: keep serving
                self._fail(None, exc)
                return
            key = (pointer["version"], pointer.get("manifest_sha256"))
            served = self.served
            if served is not None and key == (served.version, served.manifest_sha256):
                self.error, self.error_at, self._failed = "", None, None  # e.g. rolled back
                return
            if self._failed and self._failed[0] == key \
                    and time.monotonic() - self._failed[1] < self.retry:
                return
            started = time.perf_counter()
            try:
                new = load(self.store)
            except Exception as exc:  # whatever it is, the old version stays
                self._fail(key, exc)
                return
            self.served, self._failed, self.error, self.error_at = new, None, "", None
            log.info("serving %s (was %s), loaded in %.2f s", new.version,
                     served.version if served else None, time.perf_counter() - started)

    def _fail(self, key: tuple | None, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != self.error:
            log.error("not serving %s: %s; still serving %s", key[0] if key else "latest",
                      message, self.served.version if self.served else "nothing")
        self.error = message
        self.error_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._failed = (key, time.monotonic()) if key else None
