"""A local stand-in for Spotify's Web API, accounts service and preview CDN, over real HTTP.

spotipy is pointed at it (``api_prefix``/``token_url``) rather than patched, so its URL
building, token handling and error mapping are what the tests exercise. Responses come from
recorded-shape JSON in ``fixtures/spotify``; absolute Spotify URLs in them (``next`` links,
preview URLs) are rewritten to this server. Faults are scripted per path as a queue of
:class:`Reply`, served before the normal response; every request is recorded.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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


@dataclass
class Reply:
    """A scripted response; a body of None for an error status gets Spotify's error shape."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    revoke_tokens: bool = False


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None


class FakeSpotify:
    def __init__(
        self,
        fixtures: Path = FIXTURES,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
    ):
        self.client_id = client_id
        self.client_secret = client_secret
        self.pages: dict[tuple[str, int], dict] = {}
        for path in fixtures.glob("playlist_*_items_*.json"):
            match = PAGE_FILE.match(path.name)
            self.pages[(match["pid"], int(match["offset"]))] = json.loads(path.read_text())
        self.token_shape = json.loads((fixtures / "token.json").read_text())
        self.previews: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.tokens_issued: list[str] = []
        self._valid_tokens: set[str] = set()
        self._scripts: dict[str, deque[Reply]] = {}
        self._always: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeSpotify:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeSpotify:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_prefix(self) -> str:
        return f"{self.base_url}/v1/"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/api/token"

    def script(self, target: str, *replies: Reply) -> None:
        """Serve ``replies`` in order for ``target`` (a path, or path?query as sent)."""
        with self._lock:
            self._scripts.setdefault(target, deque()).extend(replies)

    def always(self, target: str, reply: Reply) -> None:
        """Serve ``reply`` for ``target`` on every request (a permanent fault)."""
        with self._lock:
            self._always[target] = reply

    def revoke_tokens(self) -> None:
        with self._lock:
            self._valid_tokens.clear()

    def requests_to(self, path: str, method: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests
                if r.path == path and (method is None or r.method == method)
            ]

    @property
    def api_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/")]

    def respond(self, request: Request, target: str) -> tuple[Reply, float]:
        """The reply for one request (scripted first) and how long to stall before it."""
        with self._lock:
            self.requests.append(request)
            scripted = self._next_scripted(target, request.path)
            if scripted is not None:
                if scripted.revoke_tokens:
                    self._valid_tokens.clear()
                return _with_error_body(scripted), scripted.delay
            if request.method == "POST" and request.path == "/api/token":
                return self._token(request), 0.0
            if request.path.startswith("/mp3-preview/"):
                data = self.previews.get(request.path.removeprefix("/mp3-preview/"))
                if data is None:
                    return _with_error_body(Reply(404)), 0.0
                return Reply(body=data, headers={"Content-Type": "audio/mpeg"}), 0.0
            if request.bearer not in self._valid_tokens:
                message = "Invalid access token" if request.bearer is None else None
                return _with_error_body(Reply(401, _error(401, message))), 0.0
            match = ITEMS_PATH.match(request.path)
            page = match and self.pages.get(
                (match["pid"], int(request.query.get("offset", "0")))
            )
            if not page:
                return _with_error_body(Reply(404)), 0.0
            return Reply(body=self._local(page)), 0.0

    def _next_scripted(self, target: str, path: str) -> Reply | None:
        for key in (target, path):
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
            if key in self._always:
                return self._always[key]
        return None

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


def _with_error_body(reply: Reply) -> Reply:
    if reply.body is None and reply.status >= 400:
        return Reply(reply.status, _error(reply.status), reply.headers, reply.delay)
    return reply


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSpotify
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        url = urlsplit(self.path)
        request = Request(method, url.path, dict(parse_qsl(url.query)), dict(self.headers), body)
        reply, delay = self.fake.respond(request, self.path)
        if delay:
            time.sleep(delay)
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", **reply.headers}
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on ``FakeSpotify.requests`` instead."""
