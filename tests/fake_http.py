"""A scriptable local HTTP server for the fakes of remote APIs (Spotify, Jamendo).

Each fake subclasses :class:`FakeHTTPServer` and answers in :meth:`FakeHTTPServer.route`;
faults are scripted per path (or path?query as sent) as a queue of :class:`Reply`, served
before the normal response, and every request is recorded for tests to assert on.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    """A scripted response; a body of None for an error status gets the fake's error shape."""

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


class FakeHTTPServer:
    def __init__(self):
        self.requests: list[Request] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._always: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self):
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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, target: str, *replies: Reply) -> None:
        """Serve ``replies`` in order for ``target`` (a path, or path?query as sent)."""
        with self._lock:
            self._scripts.setdefault(target, deque()).extend(replies)

    def always(self, target: str, reply: Reply) -> None:
        """Serve ``reply`` for ``target`` on every request (a permanent fault)."""
        with self._lock:
            self._always[target] = reply

    def requests_to(self, path: str, method: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests
                if r.path == path and (method is None or r.method == method)
            ]

    def respond(self, request: Request, target: str) -> tuple[Reply, float]:
        """The reply for one request (scripted first) and how long to stall before it."""
        with self._lock:
            self.requests.append(request)
            scripted = self._next_scripted(target, request.path)
            if scripted is not None:
                self.scripted(scripted)
                return self.with_error_body(scripted), scripted.delay
            return self.route(request), 0.0

    def route(self, request: Request) -> Reply:
        """The normal answer to ``request`` (called with the lock held)."""
        raise NotImplementedError

    def scripted(self, reply: Reply) -> None:
        """Side effects of serving a scripted reply (called with the lock held)."""

    def with_error_body(self, reply: Reply) -> Reply:
        return reply

    def _next_scripted(self, target: str, path: str) -> Reply | None:
        for key in (target, path):
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
            if key in self._always:
                return self._always[key]
        return None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHTTPServer
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
        """Quiet: tests assert on ``FakeHTTPServer.requests`` instead."""
