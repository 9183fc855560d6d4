"""`genreflow serve`: classify uploaded audio over HTTP with the model ``latest`` names.

One long-lived process pays for the heavy imports and the model load once, then answers
``POST /predict`` through serving (the same decision and numbers as `genreflow predict`);
``GET /health`` and ``GET /version`` say which version answers. serving.Follower keeps
following ``latest.json`` and swaps a newly published or rolled-back version in whole;
one that fails verification is never served.

Decoding and featurising (GIL-bound numpy/numba work) run in a bounded pool of worker
processes, so the event loop stays free and one long file does not stall the rest;
uploads are read in chunks, capped in bytes and time, and at most ``pending`` of them are
held at once, so slow or huge uploads cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing import get_context

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from genreflow import serving
from genreflow.audio import SilentAudio, TooShortAudio, UndecodableAudio

log = logging.getLogger(__name__)

ENV_TOKEN = "GENREFLOW_SERVE_TOKEN"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file in a form
DRAIN_LIMIT = 16 * 1024 * 1024  # an oversize body is read and dropped up to this, then cut
# The answer to each refusal of the audio (any other AudioError: 422).
STATUS = {serving.TooLongAudio: 413, UndecodableAudio: 415, TooShortAudio: 422,
          SilentAudio: 422}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20_000_000
    max_seconds: float = 600.0
    upload_timeout: float = 30.0  # seconds for a whole upload to arrive
    pending: int = 8  # uploads held in memory (read or featurised) at once
    workers: int = 2  # feature processes


def audio_status(exc: Exception) -> int:
    return next((status for kind, status in STATUS.items() if isinstance(exc, kind)), 422)


class UploadRefused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _init_worker(manifest: dict) -> None:
    """One thread per worker (the pool is the parallelism) and the extractor loaded for
    the model served at start."""
    from genreflow.extraction import single_threaded

    single_threaded()
    try:  # imports and numba's kernels once, not in the first requests
        serving.features(_warm_clip(), "warm-up", manifest)
    except Exception:
        log.exception("feature worker %d: warm-up failed; requests will tell", os.getpid())


def _warm_clip() -> bytes:
    """3.5 s of a 44.1 kHz tone as WAV bytes: decoding it resamples, like most uploads."""
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(int(3.5 * 44100)) / 44100
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100,
             format="WAV")
    return buffer.getvalue()


def _warm() -> int:
    """A no-op job: returns once a worker has started (and warmed up)."""
    return os.getpid()


def new_pool(workers: int, manifest: dict) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(manifest,))


async def read_upload(request: Request, limits: Limits) -> tuple[bytes, str, dict]:
    """The audio file's bytes and name (and a form's other fields), from a raw body or a
    multipart form's file; UploadRefused for an oversize (413), empty (400) or malformed
    (400) upload."""
    cap = limits.max_bytes
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    allowed = cap + (MULTIPART_SLACK if multipart else 0)
    too_large = UploadRefused(413, f"upload larger than the {cap} bytes this server accepts")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > allowed + DRAIN_LIMIT:
        raise too_large  # not read at all; the connection is closed after the answer

    async def capped():
        total, stream = 0, request.stream()
        async for chunk in stream:
            total += len(chunk)
            if total > allowed:
                async for rest in stream:  # dropped, so that the client reads the 413
                    total += len(rest)
                    if total > allowed + DRAIN_LIMIT:
                        break
                raise too_large
            yield chunk

    name, fields = request.query_params.get("name") or "upload", {}
    if multipart:
        parser = MultiPartParser(request.headers, capped(), max_files=1, max_fields=10,
                                 max_part_size=64 * 1024)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise UploadRefused(400, f"malformed multipart form: {exc.message}") from exc
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise UploadRefused(400, "the form has no file: send it as the field 'file'")
        data, name = await files[0].read(), files[0].filename or name
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        await form.close()
    else:
        data = b"".join([chunk async for chunk in capped()])
    if not data:
        raise UploadRefused(400, "empty upload: send the audio file as the request body "
                                 "or as the form field 'file'")
    if len(data) > cap:
        raise too_large
    return data, name, fields


def create_app(follower: serving.Follower, limits: Limits = Limits(),
               token: str | None = None, pool_factory=new_pool) -> FastAPI:
    """The app; ``token`` (when set) is required as ``Authorization: Bearer`` on every
    route but /health."""
    state: dict = {}
    slots = asyncio.Semaphore(limits.pending)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["pool"] = pool_factory(limits.workers, manifest())
        loop = asyncio.get_running_loop()
        pids = await asyncio.gather(*[loop.run_in_executor(state["pool"], _warm)
                                      for _ in range(limits.workers)])
        log.info("feature pool ready: %d worker process(es) (first answers from pids %s)",
                 limits.workers, sorted(set(pids)))
        poller = asyncio.create_task(poll())
        try:
            yield
        finally:
            poller.cancel()
            state["pool"].shutdown(cancel_futures=True)

    def manifest() -> dict:
        return follower.served.manifest if follower.served else {}

    async def poll():
        """Follows latest between requests too, so /health is current on an idle server."""
        while True:
            await asyncio.sleep(max(follower.poll, 0.5))
            await run_in_threadpool(follower.refresh)

    def authorised(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 token.encode()):
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="genreflow serve", lifespan=lifespan)
    guarded = [Depends(authorised)]

    def refused(status: int, reason: str, kind: str) -> JSONResponse:
        log.info("refused an upload (%d %s): %s", status, kind, reason)
        return JSONResponse({"detail": reason, "error": kind}, status_code=status)

    async def featurise(data: bytes, name: str, manifest: dict):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(state["pool"], serving.features, data, name,
                                              manifest, limits.max_seconds)
        except BrokenProcessPool:
            log.error("a feature worker died (on %s); starting a new pool", name)
            state["pool"] = pool_factory(limits.workers, manifest())
            raise

    @app.post("/predict", dependencies=guarded)
    async def predict(request: Request):
        """Every class's probability, the genre, the version and the segment count."""
        served = await run_in_threadpool(follower.current)
        if served is None:
            raise HTTPException(503, f"no model to serve yet: {follower.error}")
        async with slots:
            try:
                async with asyncio.timeout(limits.upload_timeout):
                    data, name, _ = await read_upload(request, limits)
            except UploadRefused as exc:
                return refused(exc.status, exc.reason, type(exc).__name__)
            except TimeoutError:
                return refused(408, f"upload not complete within {limits.upload_timeout:g} s",
                               "UploadTimeout")
            try:
                rows = await featurise(data, name, served.manifest)
            except serving.AudioError as exc:
                return refused(audio_status(exc), str(exc), type(exc).__name__)
            del data
            return await run_in_threadpool(serving.classify, served, rows, name)

    @app.get("/health")
    async def health():
        """200 while a model is served (503 before any), with the last reload error."""
        served = await run_in_threadpool(follower.current)
        body = {
            "status": "ok" if served else "no model",
            "version": served.version if served else None,
            "serving_since": served.loaded_at if served else None,
            "last_reload_error": follower.error or None,
            "last_reload_error_at": follower.error_at,
            "store": follower.store.uri,
        }
        return JSONResponse(body, status_code=200 if served else 503)

    @app.get("/version", dependencies=guarded)
    async def version():
        served = await run_in_threadpool(follower.current)
        if served is None:
            raise HTTPException(503, f"no model to serve yet: {follower.error}")
        return {"version": served.version, "manifest_sha256": served.manifest_sha256,
                "serving_since": served.loaded_at, "synthetic_demo": served.synthetic_demo,
                "genres": [str(c) for c in served.model.classes_]}

    return app


def serve(store, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          poll: float = 2.0, token: str | None = None) -> None:
    """Load latest, then serve until interrupted."""
    import uvicorn

    if not is_loopback(host) and not token:
        log.warning("serving on %s without a token: anyone who reaches this port can use "
                    "it (set %s)", host, ENV_TOKEN)
    follower = serving.Follower(store, poll=poll)
    follower.refresh()
    if follower.served is None:
        log.error("no model yet (%s); answering 503 until latest names a loadable one",
                  follower.error)
    app = create_app(follower, limits, token)
    config = uvicorn.Config(app, host=host, port=port, log_config=None,
                            limit_concurrency=4 * limits.pending + 16, timeout_keep_alive=5)
    log.info("serving %s on http://%s:%d (%d feature workers, uploads up to %d bytes and "
             "%g s of audio)", follower.store.uri, host, port, limits.workers,
             limits.max_bytes, limits.max_seconds)
    uvicorn.Server(config).run()
