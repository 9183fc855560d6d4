"""The "Model registry" page: every published version with its metrics, gate and plots.

A plain FastAPI app over a Store, with no Airflow import, so it is tested with a test
client; plugins/genreflow_registry.py mounts it in Airflow's API server behind Airflow's
login. It only reads: versions come from ``models/<version>/manifest.json`` and the
``latest.json`` pointer, plots are the PNG files a manifest lists (checksum verified).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from genreflow import registry
from genreflow.config import load_settings
from genreflow.storage import KeyNotFound, Store, StoreError, open_store

log = logging.getLogger(__name__)

def version_rows(store: Store) -> list[dict]:
    """Every published version, newest first (versions sort by their UTC timestamp)."""
    rows = registry.version_summaries(store)[::-1]
    latest = next((row["version"] for row in rows if row["latest"]), None)
    log.info("registry view: %d versions in %s, latest %s", len(rows), store.uri, latest)
    return rows


def read_plot(store: Store, version: str, name: str) -> bytes:
    """A PNG listed in the version's manifest, checked against its sha256.

    registry.TamperedFile if the file changed; another RegistryError if it is not there.
    """
    if not registry.check_name(name, "file").endswith(registry.PLOT_SUFFIX):
        raise registry.IncompleteVersion(f"{name!r} is not a plot")
    manifest = registry.read_manifest(store, version)
    return registry.verify_files(store, version, manifest, [name])[name]


def _number(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_page(store_uri: str, rows: list[dict], plot_url) -> str:
    """The HTML page; ``plot_url(version, name)`` gives each plot's link."""
    body = []
    for row in rows:
        version = html.escape(row["version"])
        mark = ' <span class="latest">latest</span>' if row["latest"] else ""
        if "error" in row:
            body.append(
                f'<tr class="broken"><td>{version}{mark}</td>'
                f'<td colspan="6">incomplete: {html.escape(row["error"])}</td></tr>'
            )
            continue
        verdict = {True: "promote", False: "refuse", None: "–"}[row["gate_promote"]]
        plots = " ".join(
            f'<a href="{html.escape(plot_url(row["version"], name))}">{html.escape(name)}</a>'
            for name in row["plots"]
        ) or "–"
        body.append(
            f'<tr{" class=current" if row["latest"] else ""}>'
            f"<td>{version}{mark}<div class=sub>{html.escape(str(row['created_at']))}</div></td>"
            f"<td class=num>{_number(row['roc_auc_ovo'])}</td>"
            f"<td class=num>{_number(row['song_accuracy'])}</td>"
            f"<td class=num>{_number(row['n_training_tracks'], 0)}</td>"
            f"<td><b>{verdict}</b><div class=sub>{html.escape(row['gate_reason'])}</div></td>"
            f"<td>{plots}</td>"
            f"<td class=sub>{html.escape(str(row['run_id']))}</td></tr>"
        )
    table = "\n".join(body) or '<tr><td colspan="7">no model published yet</td></tr>'
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Model registry - genreflow</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a202c; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #e2e8f0; padding: .5rem .6rem; text-align: left;
  vertical-align: top; }}
th {{ background: #f7fafc; font-weight: 600; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.sub {{ color: #718096; font-size: .85em; }}
.latest {{ background: #2f855a; color: #fff; border-radius: 4px; padding: 0 .4em;
  font-size: .8em; }}
tr.current {{ background: #f0fff4; }}
tr.broken {{ color: #c53030; }}
</style></head>
<body><h1>Model registry</h1>
<p class="sub">Store: {html.escape(store_uri)} &middot; {len(rows)} version(s), newest first</p>
<table><thead><tr><th>Version</th><th class=num>ROC-AUC ovo</th>
<th class=num>Song accuracy</th><th class=num>Training tracks</th><th>Gate</th>
<th>Plots</th><th>Run</th></tr></thead>
<tbody>
{table}
</tbody></table></body></html>
"""


def create_app(store_uri: str | None = None, dependencies: Sequence = ()) -> FastAPI:
    """The registry app; ``store_uri`` None reads GENREFLOW_STORE on every request.

    ``dependencies`` guard every route (the Airflow plugin passes Airflow's login check).
    """
    app = FastAPI(title="genreflow model registry", dependencies=list(dependencies))

    def open_registry() -> Store:
        uri = store_uri or load_settings().store
        try:
            return open_store(uri)
        except (StoreError, ValueError) as exc:
            raise HTTPException(503, f"cannot open the store {uri}: {exc}") from exc

    def versions(store: Store) -> list[dict]:
        try:
            return version_rows(store)
        except StoreError as exc:
            raise HTTPException(503, f"cannot read {store.uri}: {exc}") from exc

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> str:
        store = open_registry()

        def plot_url(version: str, name: str) -> str:
            return request.url_for("plot", version=version, name=name).path

        return render_page(store.uri, versions(store), plot_url)

    @app.get("/api/versions")
    def versions_json() -> list[dict]:
        return versions(open_registry())

    @app.get("/versions/{version}/files/{name}", name="plot")
    def plot(version: str, name: str) -> Response:
        try:
            data = read_plot(open_registry(), version, name)
        except registry.TamperedFile as exc:
            raise HTTPException(409, str(exc)) from exc
        except (registry.RegistryError, KeyNotFound) as exc:
            raise HTTPException(404, str(exc)) from exc
        except StoreError as exc:
            raise HTTPException(503, str(exc)) from exc
        return Response(data, media_type="image/png")

    return app
