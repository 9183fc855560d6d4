"""A local stand-in for Spotify's Web API, accounts service and preview CDN, over real HTTP.

spotipy is pointed at it (``api_prefix``/``token_url``) rather than patched, so its URL
building, token handling and error mapping are what the tests exercise. Responses come from
recorded-shape JSON in ``fixtures/spotify``; absolute Spotify URLs in them (``next`` links,
preview URLs) are rewritten to this server. Faults are scripted as in tests/fake_http.py.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

from fake_http import FakeHTTPServer, Reply, Request

FIXTURES = Path(__file__).parent / "fixtures" / "spotify"
CLIENT_ID = "genreflow-test-client"
CLIENT_SECRET = "genreflow-test-secret"
REAL_ORIGINS = ("https://api.spotify.com", "https://p.scdn.co")
ITEMS_PATH = re.compile(r"^/v1/playlists/(?P<pid>[^/]+)/items$")
PAGE_FILE = re.compile(r"^playlist_(?P<pid>.+)_items_(?P<offset>\d+)\.json$")
ERROR_MESSAGES = {
    401: "The access token expired",
    403: "Forbidden",
    404: "Resource not found",
    429: "API rate limit exceeded",
    500: "Server error.",
    502: "Bad gateway.",
    503: "Service unavailable",
}

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "FakeSpotify", "Reply"]


class FakeSpotify(FakeHTTPServer):
    def __init__(
        self,
        fixtures: Path = FIXTURES,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
    ):
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.pages: dict[tuple[str, int], dict] = {}
        for path in fixtures.glob("playlist_*_items_*.json"):
            match = PAGE_FILE.match(path.name)
            self.pages[(match["pid"], int(match["offset"]))] = json.loads(path.read_text())
        self.token_shape = json.loads((fixtures / "token.json").read_text())
        self.previews: dict[str, bytes] = {}
        self.tokens_issued: list[str] = []
        self._valid_tokens: set[str] = set()

    @property
    def api_prefix(self) -> str:
        return f"{self.base_url}/v1/"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/api/token"

    def revoke_tokens(self) -> None:
        with self._lock:
            self._valid_tokens.clear()

    @property
    def api_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/")]

    def scripted(self, reply: Reply) -> None:
        if reply.revoke_tokens:
            self._valid_tokens.clear()

    def with_error_body(self, reply: Reply) -> Reply:
        if reply.body is None and reply.status >= 400:
            return Reply(reply.status, _error(reply.status), reply.headers, reply.delay)
        return reply

    def route(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/api/token":
            return self._token(request)
        if request.path.startswith("/mp3-preview/"):
            data = self.previews.get(request.path.removeprefix("/mp3-preview/"))
            if data is None:
                return self.with_error_body(Reply(404))
            return Reply(body=data, headers={"Content-Type": "audio/mpeg"})
        if request.bearer not in self._valid_tokens:
            message = "Invalid access token" if request.bearer is None else None
            return Reply(401, _error(401, message))
        match = ITEMS_PATH.match(request.path)
        page = match and self.pages.get((match["pid"], int(request.query.get("offset", "0"))))
        if not page:
            return self.with_error_body(Reply(404))
        return Reply(body=self._local(page))

    def _token(self, request: Request) -> Reply:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = dict(parse_qsl(request.body))
        if request.headers.get("Authorization") != f"Basic {expected}":
            return Reply(400, {"error": "invalid_client", "error_description": "Invalid client"})
        if form.get("grant_type") != "client_credentials":
            return Reply(
                400,
                {"error": "unsupported_grant_type",
                 "error_description": "grant_type parameter is missing"},
            )
        token = f"test-token-{len(self.tokens_issued) + 1}"
        self.tokens_issued.append(token)
        self._valid_tokens.add(token)
        return Reply(body={**self.token_shape, "access_token": token})

    def _local(self, page: dict) -> dict:
        text = json.dumps(page)
        for origin in REAL_ORIGINS:
            text = text.replace(origin, self.base_url)
        return json.loads(text)


def _error(status: int, message: str | None = None) -> dict:
    return {"error": {"status": status, "message": message or ERROR_MESSAGES.get(status, "")}}
