"""Airflow plugin: the "Model registry" page (Browse menu) of genreflow's published models.

The page is genreflow.registry_view's FastAPI app, mounted in the API server at
/genreflow/registry/ and embedded in the UI by an external view. Airflow does not guard
plugin apps itself, so every route requires an Airflow login (the UI's session cookie
or an API bearer token), checked by Airflow's own ``get_user``.
"""

from __future__ import annotations

from typing import Annotated

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from genreflow.registry_view import create_app

URL_PREFIX = "/genreflow/registry"
BEARER = HTTPBearer(auto_error=False)


async def airflow_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
):
    """401/403 unless the request carries a valid Airflow token (header or UI cookie)."""
    # Imported here: the security module pulls in the ORM, and plugins load in every
    # Airflow process, while only the API server ever serves this route.
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, _oauth_token=None, bearer_credentials=credentials)


class GenreflowRegistryPlugin(AirflowPlugin):
    name = "genreflow_registry"
    fastapi_apps = [
        {
            "name": "genreflow model registry",
            "app": create_app(dependencies=[Depends(airflow_user)]),
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
