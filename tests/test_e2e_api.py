"""End to end through Airflow's REST API: `make airflow`'s script, a triggered run, logs, plugin.

Starts scripts/airflow-standalone.sh (Airflow standalone: api-server, scheduler,
dag-processor, triggerer) in a temporary AIRFLOW_HOME on a free port, then drives it the
way a user or another system would: token, unpause, trigger with conf, poll, read a task
log, look at the store, open the Model registry page, and post an inbox asset event.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from conftest import PROJECT

from genreflow import registry
from genreflow.storage import LocalStore

pytestmark = pytest.mark.airflow

DAG_ID = "genre_retrain"
STARTUP_TIMEOUT = 180
RUN_TIMEOUT = 240


class Server:
    """A running standalone Airflow: its base URL, a logged-in session, its output file."""

    def __init__(self, url: str, home: Path, output: Path):
        self.url, self.home, self.output = url, home, output
        self.session = requests.Session()

    def api(self, method: str, path: str, expect: int = 200, **kwargs):
        response = self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} " \
            f"{response.text[:1000]}"
        return response

    def wait_for(self, what: str, check, timeout: float, every: float = 1.0):
        """Poll ``check()`` until it returns something truthy; fail with ``what`` after timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if result := check():
                    return result
            time.sleep(every)
        pytest.fail(f"timed out after {timeout} s waiting for {what}")

    def healthy(self) -> bool:
        response = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        return response.ok and response.json()["metadatabase"]["status"] == "healthy"

    def login(self) -> str:
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())["admin"]
        token = self.api("POST", "/auth/token", expect=201,
                         json={"username": "admin", "password": password}).json()
        self.session.headers["Authorization"] = f"Bearer {token['access_token']}"
        return password

    def wait_run(self, run_id: str) -> dict:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"

        def ended():
            run = self.api("GET", path).json()
            return run if run["state"] in ("success", "failed") else None

        return self.wait_for(f"run {run_id} to end", ended, RUN_TIMEOUT, every=2)

    def task_log(self, run_id: str, task_id: str) -> str:
        path = (f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
                f"{task_id}/logs/1")
        content = self.api("GET", path, params={"full_content": "true"},
                           headers={"Accept": "application/json"}).json()["content"]
        return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the whole process group, SIGKILL whatever is left after ``timeout``.

    The scheduler may ignore SIGTERM while idle, so the deadline is not optional.
    """
    group = process.pid  # start_new_session: the script's pid is its group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def standalone(env: dict[str, str], home: Path, port: int):
    """Run the `make airflow` script; print the tail of its output if anything fails."""
    output = home / "standalone.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", str(PROJECT / "scripts" / "airflow-standalone.sh")], env=env, cwd=PROJECT,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", home, output)
    try:
        yield server
    except BaseException:
        lines = [line for line in output.read_text(errors="replace").splitlines()
                 if "[py.warnings]" not in line]  # libraries' deprecation noise
        print(f"---- last 80 of {len(lines)} lines (warnings left out) of {output} ----")
        print("\n".join(lines[-80:]))
        raise
    finally:
        stop_group(process)


def test_standalone_trigger_logs_store_registry_and_inbox_asset(standalone_env, tmp_path):
    env, home, port = standalone_env
    with standalone(env, home, port) as server:
        server.wait_for("the API server to be healthy", server.healthy, STARTUP_TIMEOUT)
        password = server.login()
        server.wait_for(f"{DAG_ID} to be parsed",
                        lambda: server.session.get(f"{server.url}/api/v2/dags/{DAG_ID}").ok,
                        STARTUP_TIMEOUT)
        assert server.api("GET", "/api/v2/importErrors").json()["total_entries"] == 0
        server.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

        conf = {"batch_size": 4, "max_new_tracks": 100}
        run = server.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                         json={"logical_date": None, "conf": conf}).json()
        assert run["conf"] == conf
        run = server.wait_run(run["dag_run_id"])
        run_id = run["dag_run_id"]
        tasks = server.api(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        ).json()["task_instances"]
        states = {(t["task_id"], t["map_index"]): t["state"] for t in tasks}
        assert run["state"] == "success", states
        assert [i for (task, i) in states if task == "extract"] == [0, 1, 2]  # 9 tracks / 4

        assert "ROC-AUC ovo" in server.task_log(run_id, "validate")
        publish_log = server.task_log(run_id, "publish")
        assert "promoted to latest" in publish_log

        store = LocalStore(tmp_path / "store")
        version = registry.read_latest(store)["version"]
        manifest = registry.read_manifest(store, version)
        assert manifest["run_id"] == run_id
        assert manifest["gate"]["promote"] is True
        assert 0.0 <= manifest["metrics"]["roc_auc_ovo"] <= 1.0
        assert version in publish_log

        # The plugin: listed by the API, its page behind Airflow's login.
        plugins = {p["name"]: p for p in server.api("GET", "/api/v2/plugins").json()["plugins"]}
        view = plugins["genreflow_registry"]["external_views"][0]
        assert (view["name"], view["href"]) == ("Model registry", "/genreflow/registry/")
        page = server.api("GET", "/genreflow/registry/").text
        assert version in page and 'class="latest"' in page
        assert requests.get(f"{server.url}/genreflow/registry/", timeout=30).status_code == 401

        # Assets: publish emitted an event on the latest-model asset; an event posted to
        # the inbox asset starts a run on its own (which finds no new tracks).
        assets = {a["name"]: a for a in server.api(
            "GET", "/api/v2/assets", params={"name_pattern": "genreflow"}).json()["assets"]}
        assert assets["genreflow_latest_model"]["uri"] == "genreflow://models/latest"
        events = server.api("GET", "/api/v2/assets/events", params={
            "asset_id": assets["genreflow_latest_model"]["id"]}).json()["asset_events"]
        assert [(e["extra"]["version"], e["extra"]["promoted"], e["extra"]["store"])
                for e in events] == [(version, True, str(tmp_path / "store"))]
        server.api("POST", "/api/v2/assets/events", expect=200, json={
            "asset_id": assets["genreflow_inbox"]["id"], "extra": {"why": "e2e test"}})

        def asset_run():
            runs = server.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns",
                              params={"run_type": "asset_triggered"}).json()["dag_runs"]
            return runs[0] if runs else None

        triggered = server.wait_for("an asset-triggered run", asset_run, RUN_TIMEOUT, every=2)
        assert server.wait_run(triggered["dag_run_id"])["state"] == "success"
        assert registry.read_latest(store)["version"] == version  # no new data: no new model

        assert f"user admin, password {password}" in server.output.read_text()
