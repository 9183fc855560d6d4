"""A local stand-in for Jamendo's API v3.0 ``/tracks`` and its audio storage, over real HTTP.

Tracks come from recorded-shape JSON (``fixtures/jamendo/tracks.json``, the fields of
``GET /v3.0/tracks?include=musicinfo``); the fake filters them by ``tags`` (all given) or
``fuzzytags`` (any given) against their musicinfo tags, sorts by ``order`` and pages by
``offset``/``limit`` as the API does, and answers a wrong ``client_id`` with Jamendo's
failed-document shape (code 5). Download URLs point at this server (``audiodlformat``
fills their format); audio is served from :attr:`FakeJamendo.audio` by track id, 404
otherwise. Faults are scripted as in tests/fake_http.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from fake_http import FakeHTTPServer, Reply, Request

FIXTURES = Path(__file__).parent / "fixtures" / "jamendo"
CLIENT_ID = "gf0test1"
STORAGE_ORIGIN = "https://prod-1.storage.jamendo.com"
TRACKS_PATH = "/v3.0/tracks/"
DOWNLOAD_PATH = re.compile(r"^/download/track/(?P<id>\d+)/(?P<format>\w+)/$")
MAX_LIMIT = 200
ERROR_TYPES = {5: "Invalid Client Id", 6: "Rate Limit Exceeded"}

__all__ = ["CLIENT_ID", "FakeJamendo", "Reply", "failed_document"]


def failed_document(code: int, message: str) -> dict:
    """Jamendo's document for a failed call: the error is in ``headers``."""
    return {"headers": {"status": "failed", "code": code,
                        "error_message": f"{ERROR_TYPES.get(code, 'Exception')}: {message}",
                        "warnings": "", "results_count": 0}, "results": []}


class FakeJamendo(FakeHTTPServer):
    def __init__(self, fixtures: Path = FIXTURES, client_id: str = CLIENT_ID,
                 invalid_client_status: int = 200):
        super().__init__()
        self.client_id = client_id
        self.invalid_client_status = invalid_client_status
        self.tracks: list[dict] = json.loads((fixtures / "tracks.json").read_text())
        self.audio: dict[str, bytes] = {}

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v3.0/"

    def api_requests(self) -> list[Request]:
        return self.requests_to(TRACKS_PATH)

    def downloads(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if DOWNLOAD_PATH.match(r.path)]

    def route(self, request: Request) -> Reply:
        if request.path == TRACKS_PATH:
            return self._tracks(request.query)
        match = DOWNLOAD_PATH.match(request.path)
        data = match and self.audio.get(match["id"])
        if not data:
            return Reply(404, b"Not Found", {"Content-Type": "text/plain"})
        return Reply(body=data, headers={"Content-Type": "audio/mpeg"})

    def _tracks(self, query: dict[str, str]) -> Reply:
        if query.get("client_id") != self.client_id:
            return Reply(self.invalid_client_status,
                         failed_document(5, "Your credential is not authorized."))
        selected = [t for t in self.tracks if _matches(t, query)]
        field, _, direction = query.get("order", "id").partition("_")
        selected.sort(key=lambda t: (t.get(field, ""), t["id"]), reverse=direction == "desc")
        offset = int(query.get("offset", 0))
        limit = min(int(query.get("limit", 10)), MAX_LIMIT)
        fmt = query.get("audiodlformat", "mp32")
        include = query.get("include", "").split()
        results = [self._shaped(t, fmt, include) for t in selected[offset:offset + limit]]
        return Reply(body={"headers": {"status": "success", "code": 0, "error_message": "",
                                       "warnings": "", "results_count": len(results)},
                           "results": results})

    def _shaped(self, track: dict, fmt: str, include: list[str]) -> dict:
        shaped = copy.deepcopy(track)
        if "musicinfo" not in include:
            shaped.pop("musicinfo", None)
        if shaped["audiodownload"]:
            shaped["audiodownload"] = (shaped["audiodownload"].replace("/mp32/", f"/{fmt}/")
                                       .replace(STORAGE_ORIGIN, self.base_url))
        return shaped


def _matches(track: dict, query: dict[str, str]) -> bool:
    tags = {t for values in track["musicinfo"]["tags"].values() for t in values}
    if "tags" in query:
        return set(query["tags"].split()) <= tags
    if "fuzzytags" in query:
        return bool(set(query["fuzzytags"].split()) & tags)
    return True
