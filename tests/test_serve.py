"""`genreflow serve` as a real process on loopback: it answers what `genreflow predict`
answers, follows latest through a publish and a rollback (local store and S3 on moto),
never serves a tampered version, refuses bad uploads with a 4xx and a reason while
serving on, and enforces its bearer token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, shared_data
from test_registry import TINY, publish_model

from genreflow import registry
from genreflow.cli import main
from genreflow.storage import open_store

STARTUP_SECONDS = 180


@pytest.fixture(scope="module")
def trained(demo_corpus):
    """A tiny model fitted on the synthetic demo inbox, and 9.2-s songs to classify."""
    from genreflow.dataset import build_table, labelled_audio
    from genreflow.model import fit_model

    table, failures = build_table(labelled_audio(demo_corpus["inbox"]), workers=1)
    assert not failures
    songs = sorted(demo_corpus["root"].joinpath("valid-audio").glob("*/*.wav"))
    return fit_model(table, TINY), songs


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    def post(self, data: bytes, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", content=data, timeout=60, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=60, **kwargs)


@pytest.fixture
def start_server(tmp_path):
    """Start `genreflow serve` on a free loopback port; waits until it answers /health."""
    started = []

    def start(store_uri: str, *args: str, env: dict | None = None) -> Server:
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        command = [sys.executable, "-m", "genreflow.cli", "serve", "--store", store_uri,
                   "--port", str(port), "--workers", "1", "--poll", "0", *args]
        full_env = {**os.environ, "GENREFLOW_CACHE": str(tmp_path / "serve-cache"),
                    **(env or {})}
        process = subprocess.Popen(command, env=full_env, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT)
        started.append(process)
        server = Server(process, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                server.get("/health")
                return server
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError(f"server did not start:\n{log.read_text()}")

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def cli_predict(capsys, store_uri: str, song: Path, cache: Path) -> dict:
    os.environ["GENREFLOW_CACHE"] = str(cache)
    try:
        assert main(["predict", str(song), "--store", store_uri, "--json"]) == 0
    finally:
        del os.environ["GENREFLOW_CACHE"]
    return json.loads(capsys.readouterr().out)[0]


def without_file(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "file"}


def test_server_answers_what_the_cli_answers(tmp_path, trained, start_server, capsys):
    model, songs = trained
    uri = str(tmp_path / "store")
    version = publish_model(open_store(uri), model)
    server = start_server(uri)
    for song in songs[:3]:
        want = cli_predict(capsys, uri, song, tmp_path / "cli-cache")
        raw = server.post(song.read_bytes(), params={"name": song.name})
        form = httpx.post(f"{server.url}/predict", files={"file": (song.name, song.read_bytes())},
                          timeout=60)
        assert raw.status_code == form.status_code == 200, raw.text + form.text
        assert raw.json()["file"] == form.json()["file"] == song.name
        assert without_file(raw.json()) == without_file(form.json()) == without_file(want)
        assert want["version"] == version and want["segments"] == 3
    health = server.get("/health").json()
    assert health["status"] == "ok" and health["version"] == version
    assert health["last_reload_error"] is None and health["serving_since"]
    assert server.get("/version").json()["genres"] == sorted(model.classes_)


@pytest.mark.real_audio
def test_a_real_clip_as_the_cli(tmp_path, trained, start_server, capsys):
    """A real 30-s Ogg Vorbis clip through both: the same numbers."""
    clips = sorted((shared_data() / "ood-clips").glob("*/*.ogg"))
    if not clips:
        pytest.skip("no real clips in ../shared/data/ood-clips")
    model, _ = trained
    uri = str(tmp_path / "store")
    publish_model(open_store(uri), model)
    server = start_server(uri)
    want = cli_predict(capsys, uri, clips[0], tmp_path / "cli-cache")
    got = server.post(clips[0].read_bytes())
    assert got.status_code == 200 and without_file(got.json()) == without_file(want)
    assert want["segments"] == 10


def test_latest_is_followed_through_publish_and_rollback(store_uri, trained, start_server,
                                                          s3_endpoint, tmp_path):
    model, songs = trained
    store = open_store(store_uri)
    first = publish_model(store, model)
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    server = start_server(store_uri, env=env)
    audio = songs[0].read_bytes()
    assert server.post(audio).json()["version"] == first

    second = publish_model(store, model)
    assert server.post(audio).json()["version"] == second  # the very next request
    assert server.get("/version").json()["version"] == second

    registry.rollback(store, first)
    assert server.post(audio).json()["version"] == first
    health = server.get("/health").json()
    assert health["version"] == first and health["last_reload_error"] is None
    assert "serving" in server.log.read_text()


def test_a_tampered_version_is_never_served(tmp_path, trained, start_server):
    """latest.json moved by hand to a version whose model file changed after publishing:
    the old version keeps answering and /health shows why; a good publish is taken."""
    model, songs = trained
    uri = str(tmp_path / "store")
    store = open_store(uri)
    good = publish_model(store, model)
    server = start_server(uri)
    audio = songs[0].read_bytes()
    assert server.post(audio).json()["version"] == good

    bad = publish_model(store, model, promote=False)
    key = registry.version_key(bad, registry.MODEL_FILE)
    store.write_bytes(key, store.read_bytes(key) + b"tampered")
    manifest = store.read_bytes(registry.version_key(bad, registry.MANIFEST_FILE))
    store.write_bytes(registry.LATEST_KEY, registry.json_bytes(
        {"version": bad, "manifest_sha256": registry.sha256_hex(manifest)}))

    for _ in range(3):
        answer = server.post(audio)
        assert answer.status_code == 200 and answer.json()["version"] == good
    health = server.get("/health").json()
    assert health["version"] == good and health["status"] == "ok"
    assert "TamperedFile" in health["last_reload_error"] and bad in health["last_reload_error"]
    assert "not serving " + bad in server.log.read_text()

    store.write_bytes(registry.LATEST_KEY, b"{not json")  # a broken pointer: still served
    assert server.post(audio).json()["version"] == good
    assert "BrokenPointer" in server.get("/health").json()["last_reload_error"]

    registry.rollback(store, good)  # repairs the pointer, to the version served: no error
    assert server.post(audio).json()["version"] == good
    assert server.get("/health").json()["last_reload_error"] is None
    fresh = publish_model(store, model)
    assert server.post(audio).json()["version"] == fresh
    assert server.get("/health").json()["last_reload_error"] is None


def raw_post(url: str, headers: str, chunks) -> bytes:
    """POST /predict over a bare socket: ``chunks`` are sent from a thread (until the
    server stops reading), and the answer is read until its JSON body ends."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())

        def send():
            try:
                for chunk in chunks:
                    sock.sendall(chunk)
            except OSError:
                pass  # the server answered and closed

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        reply = b""
        while not reply.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        return reply


def test_bad_uploads_get_a_4xx_with_a_reason(tmp_path, trained, start_server):
    model, songs = trained
    uri = str(tmp_path / "store")
    publish_model(open_store(uri), model)
    server = start_server(uri, "--max-upload-mb", "0.5", "--max-seconds", "8",
                          "--upload-timeout", "2")
    song = songs[0].read_bytes()  # 9.2 s of 22050 Hz 16-bit WAV: ~400 kB
    import soundfile as sf

    short = tmp_path / "five-seconds.wav"
    data, rate = sf.read(songs[0])
    sf.write(short, data[: 5 * rate], rate)
    ok = short.read_bytes()
    bad = {
        "oversize": (server.post(song + bytes(200_000)), 413, "larger than the 500000 bytes"),
        "oversize form": (httpx.post(f"{server.url}/predict", timeout=60,
                                     files={"file": ("x.wav", song + bytes(200_000))}),
                          413, "larger than"),
        "too long": (server.post(song), 413, "9.2 s is longer than the 8 s"),
        "empty": (server.post(b""), 400, "empty upload"),
        "empty form": (httpx.post(f"{server.url}/predict", timeout=60,
                                  files={"file": ("e.wav", b"")}), 400, "empty upload"),
        "not audio": (server.post(b"%PDF-1.4 " * 1000, params={"name": "a.pdf"}), 415,
                      "a.pdf: cannot decode audio"),
        "truncated file": (server.post(ok[:30_000]), 422, "shorter than one 3.00 s segment"),
        "no file in form": (server.post(
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
            headers={"Content-Type": "multipart/form-data; boundary=b"}), 400, "no file"),
    }
    for case, (answer, status, reason) in bad.items():
        assert answer.status_code == status, (case, answer.text)
        assert reason in answer.json()["detail"], (case, answer.text)
        good = server.post(ok)
        assert good.status_code == 200 and good.json()["segments"] == 1, (case, good.text)
    started = time.monotonic()  # a client that stops mid-upload holds its slot 2 s only
    reply = raw_post(server.url, f"Content-Length: {len(ok)}\r\n", [ok[:1000]])
    assert reply.startswith(b"HTTP/1.1 408") and b"not complete within 2 s" in reply, reply
    assert time.monotonic() - started < 15
    endless = (b"100000\r\n" + bytes(0x100000) + b"\r\n" for _ in range(40))  # 40 MB
    reply = raw_post(server.url, "Transfer-Encoding: chunked\r\n", endless)  # no length:
    assert reply.startswith(b"HTTP/1.1 413"), reply  # cut while it streams, not stored
    reply = raw_post(server.url, "Content-Length: 10000000000\r\n", [ok])
    assert reply.startswith(b"HTTP/1.1 413"), reply  # 10 GB announced: refused unread
    assert server.post(ok).status_code == 200
    assert server.process.poll() is None


def test_the_token_is_required_when_set(tmp_path, trained, start_server):
    model, songs = trained
    uri = str(tmp_path / "store")
    version = publish_model(open_store(uri), model)
    server = start_server(uri, env={"GENREFLOW_SERVE_TOKEN": "s3cret-token"})
    audio = songs[0].read_bytes()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        answer = server.post(audio, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert server.get("/version", headers=headers).status_code == 401
    right = {"Authorization": "Bearer s3cret-token"}
    assert server.post(audio, headers=right).json()["version"] == version
    assert server.get("/version", headers=right).json()["version"] == version
    assert server.get("/health").json()["version"] == version  # for liveness probes


def test_try_a_clip_on_the_registry_page_answers_as_the_cli(tmp_path, trained, capsys):
    """The page's form, with the older of two versions chosen: that version's numbers,
    the same as `genreflow predict --version`; a file that is not audio gets its 415."""
    import re

    from fastapi.testclient import TestClient

    from genreflow.registry_view import create_app

    model, songs = trained
    uri = str(tmp_path / "store")
    store = open_store(uri)
    older = publish_model(store, model)
    publish_model(store, model)
    client = TestClient(create_app(uri))
    form = client.get("/try", params={"version": older})
    assert form.status_code == 200 and f'value="{older}" selected' in form.text

    answer = client.post("/try", data={"version": older},
                         files={"file": (songs[0].name, songs[0].read_bytes(), "audio/wav")})
    assert answer.status_code == 200, answer.text
    os.environ["GENREFLOW_CACHE"] = str(tmp_path / "cli-cache")
    try:
        assert main(["predict", str(songs[0]), "--store", uri, "--version", older,
                     "--json"]) == 0
    finally:
        del os.environ["GENREFLOW_CACHE"]
    want = json.loads(capsys.readouterr().out)[0]
    shown = dict(re.findall(r"<tr(?: class=\"chosen\")?><td>(\w+)</td><td class=\"num\">"
                            r"([0-9.]+)</td>", answer.text))
    assert {g: float(p) for g, p in shown.items()} == want["probabilities"]
    assert f'<span class="genre">{want["genre"]}</span>' in answer.text
    assert f">{older}</a>\nfrom 3 segment(s)" in answer.text

    refused = client.post("/try", data={"version": older},
                          files={"file": ("notes.txt", b"not audio at all" * 100)})
    assert refused.status_code == 415 and "notes.txt: cannot decode audio" in refused.text


def test_predict_files_forked_or_not_gives_the_same(tmp_path, trained, monkeypatch):
    """`predict` featurises in a forked child (Linux) or, where fork is not safe, in this
    process after the model loads: the same answers either way, bad files included."""
    from genreflow import serving

    model, songs = trained
    store = open_store(str(tmp_path / "store"))
    version = publish_model(store, model)
    monkeypatch.setenv("GENREFLOW_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    paths = [songs[0], bad, tmp_path / "missing.wav", songs[1]]
    served, forked = serving.predict_files(store, None, paths)
    monkeypatch.setattr(serving, "_fork_pool", lambda: None)
    _, here = serving.predict_files(store, None, paths)
    assert served.version == version
    assert [type(r).__name__ if isinstance(r, Exception) else r for r in forked] == [
        type(r).__name__ if isinstance(r, Exception) else r for r in here] == [
        forked[0], "UndecodableAudio", "FileNotFoundError", forked[3]]
    assert forked[0] == serving.predict(served, songs[0], str(songs[0]))
