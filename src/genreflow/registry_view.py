"""The "Model registry" page: published versions, one page per version, and rollback.

A plain FastAPI app over a Store, with no Airflow import, so it is tested with a test
client; plugins/genreflow_registry.py mounts it in Airflow's API server behind Airflow's
login and supplies the links to DAG runs. It lists what ``registry.version_summaries``
lists, in its order (the same rows as `genreflow models`); plots are the PNG files a
manifest lists (checksum verified). The one write, rollback, is ``registry.rollback``
(what `genreflow rollback` calls), behind its own guard and a typed confirmation.
"Try a clip" classifies one uploaded file with a chosen version through serving.predict
(what `genreflow predict` and `genreflow serve` answer with); the file is not kept.
HTML comes from Jinja2 templates in genreflow/templates/registry with autoescaping.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from genreflow import registry, serving
from genreflow.config import load_settings
from genreflow.server import Limits, UploadRefused, audio_status, read_upload
from genreflow.storage import KeyNotFound, Store, StoreError, open_store

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates" / "registry"
PROMOTED = {True: "held latest at some point", False: "never held latest",
            None: "promotion unknown (latest.json is broken)"}
SUMMARY_ROWS = ("macro avg", "weighted avg")
TRY_LIMITS = Limits(max_bytes=20_000_000, max_seconds=600.0, upload_timeout=60.0)
TRY_AT_ONCE = 2  # clips classified at once in the API server (others wait)


def _number(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _verdict(row: dict) -> str:
    return {True: "promote", False: "refuse", None: "–"}[row.get("gate_promote")]


TEMPLATE_ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                           undefined=StrictUndefined, keep_trailing_newline=True)
TEMPLATE_ENV.filters["number"] = _number
TEMPLATE_ENV.globals["verdict"] = _verdict


def render(template: str, **context) -> str:
    return TEMPLATE_ENV.get_template(template).render(**context)


def read_plot(store: Store, version: str, name: str) -> bytes:
    """A PNG listed in the version's manifest, checked against its sha256.

    registry.TamperedFile if the file changed; another RegistryError if it is not there.
    """
    manifest = _check_plot(store, version, name)
    return registry.verify_files(store, version, manifest, [name])[name]


def _check_plot(store: Store, version: str, name: str) -> dict:
    """The version's manifest, once ``name`` is known to be a plot it lists."""
    if not registry.check_name(name, "file").endswith(registry.PLOT_SUFFIX):
        raise registry.IncompleteVersion(f"{name!r} is not a plot")
    manifest = registry.read_manifest(store, version)
    if name not in manifest["files"]:
        raise registry.IncompleteVersion(f"manifest of {version} lists no {name}")
    return manifest


def version_row(store: Store, version: str) -> dict:
    """The version's row of ``registry.version_summaries``; UnknownVersion if none."""
    rows = registry.version_summaries(store, only=registry.check_name(version))
    if rows:
        return rows[0]
    raise registry.UnknownVersion(f"unknown version {version} in {store.uri}")


def version_details(store: Store, version: str) -> dict:
    """What the version page shows beyond its row: per-genre song results (metrics.json,
    sha256 verified), the song confusion matrix, the classifier's settings."""
    row = version_row(store, version)
    details = {"row": row, "metrics": {}, "steps": {}, "candidates": [], "rule": "",
               "per_genre": [],
               "per_genre_problem": "", "confusion": None,
               "promoted_text": PROMOTED[row.get("promoted")]}
    if "error" in row:
        return details
    manifest = registry.read_manifest(store, version)
    metrics = manifest.get("metrics") or {}
    matrix = metrics.get("confusion_matrix") or {}
    labels, songs = matrix.get("labels") or [], matrix.get("songs") or []
    if labels and len(labels) == len(songs):
        details["confusion"] = {"labels": labels, "rows": list(zip(labels, songs, strict=True))}
    details.update(metrics=metrics, **_model_choice(manifest.get("model_config")))
    try:
        data = registry.verify_files(store, version, manifest, [registry.METRICS_FILE])
        per_genre = json.loads(data[registry.METRICS_FILE]).get("per_genre") or {}
    except (registry.RegistryError, ValueError) as exc:
        details["per_genre_problem"] = f"no per-genre results: {exc}"
        return details
    genres = [g for g in per_genre if isinstance(per_genre[g], dict) and g not in SUMMARY_ROWS]
    details["per_genre"] = [(g, per_genre[g]) for g in [*genres, "macro avg"] if g in per_genre]
    if not details["per_genre"]:
        details["per_genre_problem"] = "no per-genre results recorded for this version"
    return details


def _model_choice(config) -> dict:
    """The fitted pipeline's steps and the candidates model selection compared (CV
    ROC-AUC of each, the chosen one marked), from the manifest's ``model_config``."""
    config = config if isinstance(config, dict) else {}
    steps, selection = config.get("steps"), config.get("selection")
    selection = selection if isinstance(selection, dict) else {}
    candidates = [c for c in selection.get("candidates") or [] if isinstance(c, dict)]
    chosen = selection.get("chosen")
    return {
        "steps": steps if isinstance(steps, dict) else {},
        "candidates": [{**c, "chosen": i == chosen} for i, c in enumerate(candidates)],
        "rule": str(selection.get("rule") or ""),
    }


@lru_cache(maxsize=2)
def served_version(store_uri: str, version: str) -> serving.Served:
    """A version loaded once (versions are immutable; verified when loaded)."""
    return serving.load(open_store(store_uri), version)


def no_rollback() -> str:
    """The default rollback guard: refuse, since nobody logged in can be named."""
    raise HTTPException(403, "rollback needs a login: open the page through Airflow")


def create_app(
    store_uri: str | None = None, dependencies: Sequence = (),
    rollback_guard: Callable = no_rollback, run_url: Callable[[str], str | None] | None = None,
) -> FastAPI:
    """The registry app; ``store_uri`` None reads GENREFLOW_STORE on every request.

    ``dependencies`` guard every route (the Airflow plugin passes Airflow's login check);
    ``rollback_guard`` is a dependency that returns who rolls back, or raises 401/403;
    ``run_url(run_id)`` links a version to its DAG run (None: no link).
    """
    app = FastAPI(title="genreflow model registry", dependencies=list(dependencies))

    def open_registry() -> Store:
        uri = store_uri or load_settings().store
        try:
            return open_store(uri)
        except (StoreError, ValueError) as exc:
            raise HTTPException(503, f"cannot open the store {uri}: {exc}") from exc

    def links(request: Request) -> dict:
        def path(route: str, /, **params) -> str:
            return request.url_for(route, **params).path

        return {
            "index_url": path("page"),
            "version_url": lambda version: path("version_page", version=version),
            "plot_page_url": lambda version, name: path("plot_page", version=version,
                                                        name=name),
            "file_url": lambda version, name: path("plot", version=version, name=name),
            "run_url": run_url or (lambda run_id: None),
            "try_url": lambda version="": path("try_page") + (
                f"?version={version}" if version else ""),
        }

    def read(action: Callable):
        """Run a store read; registry and store errors become HTTP errors."""
        try:
            return action()
        except registry.TamperedFile as exc:
            raise HTTPException(409, str(exc)) from exc
        except (registry.RegistryError, KeyNotFound) as exc:
            raise HTTPException(404, str(exc)) from exc
        except StoreError as exc:
            raise HTTPException(503, f"cannot read the store: {exc}") from exc

    def version_page_html(request: Request, store: Store, version: str, **extra) -> str:
        details = read(lambda: version_details(store, version))
        return render("version.html", **links(request), **details,
                      rollback_url=request.url_for("rollback", version=version).path,
                      **{"rolled_back": False, "error": "", **extra})

    @app.get("/", response_class=HTMLResponse, name="page")
    def page(request: Request) -> str:
        store = open_registry()
        rows = read(lambda: registry.version_summaries(store))
        log.info("registry page: %d versions in %s", len(rows), store.uri)
        return render("index.html", **links(request), store_uri=store.uri, rows=rows)

    @app.get("/api/versions")
    def versions_json() -> list[dict]:
        store = open_registry()
        return read(lambda: registry.version_summaries(store))

    @app.get("/versions/{version}", response_class=HTMLResponse, name="version_page")
    def version_page(request: Request, version: str, done: str = "") -> str:
        return version_page_html(request, open_registry(), version,
                                 rolled_back=done == "rollback")

    @app.get("/versions/{version}/plots/{name}", response_class=HTMLResponse,
             name="plot_page")
    def plot_page(request: Request, version: str, name: str) -> str:
        read(lambda: _check_plot(open_registry(), version, name))
        return render("plot.html", **links(request), version=version, name=name)

    @app.get("/versions/{version}/files/{name}", name="plot")
    def plot(version: str, name: str) -> Response:
        data = read(lambda: read_plot(open_registry(), version, name))
        return Response(data, media_type="image/png")

    @app.post("/versions/{version}/rollback", name="rollback")
    def rollback(
        request: Request, version: str, confirm: Annotated[str, Form()] = "",
        actor: str = Depends(rollback_guard),  # a local: Annotated would not resolve it
    ) -> Response:
        """``registry.rollback`` once the version is typed; a browser's cross-site post
        is refused (the session cookie is SameSite=Lax too)."""
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise HTTPException(403, "cross-site rollback refused")
        store = open_registry()
        if confirm.strip() != version:
            return HTMLResponse(version_page_html(
                request, store, version,
                error=f"Not rolled back: type {version} exactly to confirm."), 400)
        try:
            done = registry.rollback(store, version)
        except (registry.RegistryError, StoreError) as exc:
            log.warning("rollback to %s by %s refused: %s", version, actor, exc)
            return HTMLResponse(version_page_html(
                request, store, version, error=f"Not rolled back: {type(exc).__name__}: {exc}"),
                409)
        log.warning("rollback by %s: latest %s -> %s%s", actor, done["previous"], version,
                    f" (replaced a broken pointer: {done['repaired']})" if done["repaired"]
                    else "")
        target = request.url_for("version_page", version=version).path
        return RedirectResponse(f"{target}?done=rollback", status_code=303)

    trying = asyncio.Semaphore(TRY_AT_ONCE)

    def try_page_html(request: Request, store: Store, version: str = "", **extra) -> str:
        rows = read(lambda: registry.version_summaries(store))
        versions = [row for row in rows if "error" not in row]
        latest = next((row["version"] for row in versions if row["latest"]), "")
        return render("try.html", **links(request), versions=versions,
                      chosen=version or latest, **{"result": None, "error": "", **extra})

    @app.get("/try", response_class=HTMLResponse, name="try_page")
    async def try_page(request: Request, version: str = "") -> str:
        return await run_in_threadpool(try_page_html, request, open_registry(), version)

    @app.post("/try", response_class=HTMLResponse, name="try_clip")
    async def try_clip(request: Request) -> HTMLResponse:
        """One uploaded file through serving.predict with the chosen version; refusals
        (upload, audio, a version that fails verification) show on the page with a 4xx."""
        store = open_registry()
        version, status, extra = request.query_params.get("version", ""), 200, {}
        async with trying:
            try:
                async with asyncio.timeout(TRY_LIMITS.upload_timeout):
                    data, name, fields = await read_upload(request, TRY_LIMITS)
                version = fields.get("version") or version
                if not version:
                    raise registry.NoModel("choose a version")
                served = await run_in_threadpool(served_version, store.uri, version)
                extra["result"] = await run_in_threadpool(
                    serving.predict, served, data, name, TRY_LIMITS.max_seconds)
                log.info("try a clip: %s -> %s by %s (%d segments)", name,
                         extra["result"]["genre"], version, extra["result"]["segments"])
            except UploadRefused as exc:
                status, extra["error"] = exc.status, f"Not classified: {exc.reason}"
            except TimeoutError:
                status, extra["error"] = 408, "Not classified: the upload took too long"
            except serving.AudioError as exc:
                status, extra["error"] = audio_status(exc), f"Not classified: {exc}"
            except registry.RegistryError as exc:
                status = 409 if isinstance(exc, registry.TamperedFile) else 404
                extra["error"] = f"Not classified: {type(exc).__name__}: {exc}"
        html = await run_in_threadpool(try_page_html, request, store, version, **extra)
        return HTMLResponse(html, status)

    return app
