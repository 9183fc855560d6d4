"""Airflow plugin: the "Model registry" page (Browse menu) of genreflow's published models.

The page is genreflow.registry_view's FastAPI app, mounted in the API server at
/genreflow/registry/ and embedded in the UI by an external view. Airflow does not guard
plugin apps itself, so every route requires an Airflow login (the UI's session cookie
or an API bearer token), checked by Airflow's own ``get_user``; a rollback also needs
permission to edit the genre_retrain DAG, asked of Airflow's auth manager.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from genreflow.registry_view import create_app

URL_PREFIX = "/genreflow/registry"
DAG_ID = "genre_retrain"
BEARER = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def airflow_user(request: Request, credentials: Credentials):
    """401/403 unless the request carries a valid Airflow token (header or UI cookie)."""
    # Imported here: the security module pulls in the ORM, and plugins load in every
    # Airflow process, while only the API server ever serves this route.
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, _oauth_token=None, bearer_credentials=credentials)


async def dag_editor(request: Request, credentials: Credentials) -> str:
    """The user's name if they may edit the DAG whose models these are; 403 otherwise."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    user = await airflow_user(request, credentials)
    if not get_auth_manager().is_authorized_dag(method="PUT", user=user,
                                                details=DagDetails(id=DAG_ID)):
        raise HTTPException(403, f"rolling back needs edit permission on the {DAG_ID} DAG")
    return user.get_name()


def run_url(run_id: str) -> str:
    """The run's page in the Airflow UI (under the API server's base URL path, if any)."""
    base = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"


class GenreflowRegistryPlugin(AirflowPlugin):
    name = "genreflow_registry"
    fastapi_apps = [
        {
            "name": "genreflow model registry",
            "app": create_app(dependencies=[Depends(airflow_user)], rollback_guard=dag_editor,
                              run_url=run_url),
            "url_prefix": URL_PREFIX,
        }
    ]
    external_views = [
        {
            "name": "Model registry",
            "href": f"{URL_PREFIX}/",
            "url_route": "model-registry",
            "destination": "nav",
            "category": "browse",
        }
    ]
