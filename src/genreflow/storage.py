"""One storage interface, two backends: a local folder (the embedded default) and S3.

Everything a run writes (raw audio, features, snapshots, reports, models) goes through
a :class:`Store`, addressed by ``/``-separated keys, so a run on a laptop and a run on
MinIO differ only in the URI given to :func:`open_store`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from genreflow.errors import PermanentError
from genreflow.retry import poll


class StoreError(RuntimeError):
    """A storage operation failed (server down, a timeout, ...); retrying may help."""

    transient = True  # genreflow.retry tries again; the subclasses below are answers


class PermanentStoreError(StoreError, PermanentError):
    """Retrying cannot help: bad credentials, no such bucket, no permission, a bad URI."""

    transient = False


class BadStoreUri(PermanentStoreError, ValueError):
    """The URI names no usable store (empty, no bucket, unknown scheme, a file, missing)."""


class KeyNotFound(StoreError, FileNotFoundError):
    """The key does not exist in the store."""

    transient = False


class WriteConflict(StoreError):
    """A conditional write lost: the key changed (or appeared) since the writer read it."""

    transient = False


class AlreadyExists(WriteConflict, FileExistsError):
    """A write with ``overwrite=False`` found the key already there."""


LOCK_WAIT_SECONDS = 10.0  # a local conditional write holds its lock for microseconds
LOCK_POLL_SECONDS = 0.01
# S3 error codes a retry cannot fix: the configuration (keys, bucket, policy) must change.
PERMANENT_S3_CODES = frozenset({
    "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "AllAccessDisabled", "InvalidBucketName", "AccountProblem", "InvalidToken",
    "ExpiredToken", "PermanentRedirect", "AuthorizationHeaderMalformed", "403",
})
# Local write errors a retry cannot fix: permissions, a read-only disk, a file in the way.
PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                              errno.EEXIST})


@dataclass(frozen=True)
class Stamp:
    """What changes whenever an object's content does (``tag``: size and mtime of a local
    file, size and ETag of an S3 object) and when it last changed (epoch seconds)."""

    tag: str
    modified: float


class Store(ABC):
    """Key/value blobs; writes are whole-object and readers never see a partial one."""

    uri: str

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(
        self, key: str, data: bytes, *, overwrite: bool = True, if_match: str | None = None
    ) -> None:
        """Write a whole object. ``overwrite=False``: only if absent (else AlreadyExists).
        ``if_match``: only if the object still has that ETag from :meth:`read_bytes_with_etag`
        (else WriteConflict): a compare-and-swap, so concurrent writers cannot clobber."""

    @abstractmethod
    def read_bytes_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object and an ETag to pass as ``if_match`` to a later write."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def list_stamps(self, prefix: str = "") -> dict[str, Stamp]:
        """Every key under ``prefix`` with its :class:`Stamp`, in one listing."""
        raise NotImplementedError(f"{type(self).__name__} keeps no stamps")

    def stamp(self, key: str) -> Stamp | None:
        """The key's :class:`Stamp`; None when it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} keeps no stamps")

    def escapes(self, key: str) -> bool:
        """True when the key leads out of the store (a local link to a file elsewhere):
        listed, but never read or written."""
        return False

    def location(self, key: str) -> str:
        """A URI a person can paste (for logs and manifests)."""
        return f"{self.uri.rstrip('/')}/{key}"

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, obj: Any, *, overwrite: bool = True) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        self.write_bytes(key, data, overwrite=overwrite)

    def read_frame(self, key: str):
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(key)))

    def write_frame(self, key: str, frame, *, overwrite: bool = True) -> None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self.write_bytes(key, buffer.getvalue(), overwrite=overwrite)


class LocalStore(Store):
    """A folder; writes go to a temp file and are renamed into place (atomic on POSIX).

    Opening creates nothing: the folder appears with the first write, so read-only use
    (listing models, a missing valid.csv or inbox) never leaves folders behind.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise BadStoreUri(f"{self.root} is a file, not a folder: it cannot be a store")
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        if self.escapes(key):
            raise ValueError(f"key {key!r} escapes the store root")
        return (self.root / key).resolve()

    def escapes(self, key: str) -> bool:
        return self.root not in (self.root / key).resolve().parents

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise KeyNotFound(f"{self.location(key)} does not exist") from exc
        except IsADirectoryError as exc:  # a folder is no key, as exists() and listing say
            raise KeyNotFound(f"{self.location(key)} is a folder, not a file") from exc
        except PermissionError as exc:
            raise PermanentStoreError(f"cannot read {self.location(key)}: permission denied") \
                from exc

    def read_bytes_with_etag(self, key: str) -> tuple[bytes, str]:
        """The ETag of a local file is the sha256 of its content."""
        data = self.read_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    @contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        """An exclusive lock file beside ``path`` (O_EXCL create), waited for briefly."""
        lock = path.with_name(f".{path.name}.lock")
        try:
            poll(lambda: os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
                 FileExistsError, LOCK_WAIT_SECONDS, LOCK_POLL_SECONDS)
        except FileExistsError:
            raise StoreError(
                f"{lock} is held by another writer for over {LOCK_WAIT_SECONDS:.0f} s; "
                "remove it if no writer is running"
            ) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def write_bytes(
        self, key: str, data: bytes, *, overwrite: bool = True, if_match: str | None = None
    ) -> None:
        _check_write_mode(overwrite, if_match)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # not mkstemp (always 0600): the umask decides who else may read the store
            tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}"))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            kind = PermanentStoreError if exc.errno in PERMANENT_ERRNOS else StoreError
            raise kind(f"cannot write {self.location(key)}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            if if_match is not None:
                with self._lock(path):
                    try:
                        current = self.read_bytes_with_etag(key)[1]
                    except KeyNotFound:
                        current = None
                    if current != if_match:
                        raise WriteConflict(f"{self.location(key)} changed since it was read")
                    os.replace(tmp, path)
            elif overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError as exc:
                    raise AlreadyExists(f"{self.location(key)} already exists") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in start.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and "/." not in f"/{k}")

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_stamps(self, prefix: str = "") -> dict[str, Stamp]:
        stamps = {key: self.stamp(key) for key in self.list_keys(prefix)}
        return {key: stamp for key, stamp in stamps.items() if stamp}  # deleted meanwhile

    def stamp(self, key: str) -> Stamp | None:
        try:  # not _path: a link out of the store is listed (and refused by its reader)
            stat = (self.root / key).stat()
        except FileNotFoundError:
            return None
        return Stamp(f"{stat.st_size}-{stat.st_mtime_ns}", stat.st_mtime)


class S3Store(Store):
    """A bucket prefix over boto3; the endpoint comes from ``AWS_ENDPOINT_URL`` (MinIO)."""

    def __init__(self, bucket: str, prefix: str = "", client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or make_s3_client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise KeyNotFound(f"{self.location(key)} does not exist") from exc
            if code in ("PreconditionFailed", "412"):
                raise AlreadyExists(f"{self.location(key)} already exists") from exc
            if code == "ConditionalRequestConflict":
                raise WriteConflict(f"{self.location(key)}: concurrent conditional write") from exc
            kind = PermanentStoreError if code in PERMANENT_S3_CODES else StoreError
            raise kind(f"S3 {what} {self.location(key)} failed: {exc}") from exc
        except NoCredentialsError as exc:
            raise PermanentStoreError(f"S3 {what} {self.location(key)}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 {what} {self.location(key)} failed: {exc}") from exc

    def read_bytes(self, key: str) -> bytes:
        response = self._call("get", key, self.client.get_object, Key=self._key(key))
        return response["Body"].read()

    def read_bytes_with_etag(self, key: str) -> tuple[bytes, str]:
        response = self._call("get", key, self.client.get_object, Key=self._key(key))
        return response["Body"].read(), response["ETag"]

    def write_bytes(
        self, key: str, data: bytes, *, overwrite: bool = True, if_match: str | None = None
    ) -> None:
        _check_write_mode(overwrite, if_match)
        if if_match is None:
            extra = {} if overwrite else {"IfNoneMatch": "*"}
            self._call("put", key, self.client.put_object, Key=self._key(key), Body=data, **extra)
            return
        try:
            self._call(
                "put", key, self.client.put_object, Key=self._key(key), Body=data, IfMatch=if_match
            )
        except (AlreadyExists, KeyNotFound) as exc:  # 412 / 404: it changed or went away
            raise WriteConflict(f"{self.location(key)} changed since it was read") from exc

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Key=self._key(key))
        except KeyNotFound:
            return False
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(self.list_stamps(prefix))

    def list_stamps(self, prefix: str = "") -> dict[str, Stamp]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0

        def every_stamp(**kwargs) -> dict[str, Stamp]:
            """Paginators raise lazily, while iterating: inside _call, so AccessDenied
            is as permanent here as for any other request."""
            return {obj["Key"][strip:]: _s3_stamp(obj["Size"], obj["ETag"], obj["LastModified"])
                    for page in paginator.paginate(**kwargs) for obj in page.get("Contents", [])
                    if not obj["Key"].endswith("/")}  # a console's folder marker

        return self._call("list", prefix, every_stamp, Prefix=self._key(prefix))

    def stamp(self, key: str) -> Stamp | None:
        try:
            head = self._call("head", key, self.client.head_object, Key=self._key(key))
        except KeyNotFound:
            return None
        return _s3_stamp(head["ContentLength"], head["ETag"], head["LastModified"])

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Key=self._key(key))


def _s3_stamp(size: int, etag: str, modified) -> Stamp:
    tag = etag.strip('"')
    return Stamp(f"{size}-{tag}", modified.timestamp())


def _check_write_mode(overwrite: bool, if_match: str | None) -> None:
    if if_match is not None and not overwrite:
        raise ValueError("if_match replaces an existing object; it cannot go with overwrite=False")


def make_s3_client():
    """A boto3 S3 client with bounded retries and timeouts; endpoint/credentials from env."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
    )
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    try:
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=config,
        )
    except ValueError as exc:  # botocore: "Invalid endpoint: minio:9000"
        raise BadStoreUri(f"AWS_ENDPOINT_URL={endpoint!r}: {exc} (give the scheme: "
                          "http://host:port or https://host)") from exc


def open_store(uri: str, *, must_exist: bool = False) -> Store:
    """``s3://bucket/prefix`` -> S3Store; a path or ``file://`` URI -> LocalStore.

    BadStoreUri (one clear line, never retried) for an empty URI, ``s3://`` without a
    bucket, another scheme, a file; with ``must_exist``, also for a missing folder (an
    inbox: an unset variable in a path must not read as an empty inbox).
    """
    parsed = urlparse(uri or "")
    if not (uri or "").strip():
        raise BadStoreUri("empty store URI: set the variable or param to a path or s3://")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BadStoreUri(f"{uri!r}: an S3 URI needs a bucket (s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme not in ("", "file"):
        raise BadStoreUri(f"unsupported store URI {uri!r}: use a path, file:// or s3://")
    store = LocalStore(parsed.path if parsed.scheme == "file" else uri)
    if must_exist and not store.root.is_dir():
        raise BadStoreUri(f"{store.root} does not exist (is a variable in the path unset?)")
    return store


def split_uri(uri: str) -> tuple[Store, str]:
    """A file URI -> (the store holding it, its key), for single files such as valid.csv."""
    parsed = urlparse(uri or "")
    if parsed.scheme == "s3":
        parent, _, key = parsed.path.lstrip("/").rpartition("/")
        if not parsed.netloc or not key:
            raise BadStoreUri(f"{uri!r}: an S3 file URI is s3://bucket/prefix/name")
        return S3Store(parsed.netloc, parent), key
    if not (uri or "").strip() or parsed.scheme not in ("", "file"):
        raise BadStoreUri(f"{uri!r} is not a file path, file:// or s3:// URI")
    path = Path(parsed.path if parsed.scheme == "file" else uri).resolve()
    return LocalStore(path.parent), path.name
