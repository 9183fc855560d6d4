"""The distributed deployment for real: scripts/airflow-cluster.sh (`make cluster`).

CeleryExecutor with Postgres and Redis from the Debian packages, moto as S3, and two
Celery workers with their own hostnames, all configured from deploy/airflow.env, the
file docker-compose.yaml's services use. The tests drive it through the REST API like
a user: a run whose mapped extraction spreads over both workers; a run during which one
worker dies (all its processes SIGKILLed, as when a host goes down) and its task is
retried on the other; then the script stops everything it started.

The retry delay and Airflow's heartbeat timeout are shortened through the environment
(GENREFLOW_RETRY_DELAY_SECONDS, [scheduler] task_instance_heartbeat_timeout), so the
lost task is noticed in seconds instead of minutes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from conftest import BIN, PROJECT, TEST_GENRES
from test_e2e_api import Server, stop_group

from genreflow import catalog, registry
from genreflow.storage import S3Store

pytestmark = pytest.mark.cluster

DAG_ID = "genre_retrain"
WORKERS = ("genreflow-worker-1", "genreflow-worker-2")
STARTUP_TIMEOUT = 420  # the 2 cores are shared: a cold start under load is slow
RUN_TIMEOUT = 600
HEARTBEAT_TIMEOUT = 20


class Cluster(Server):
    """The cluster script's deployment: the API, its S3 bucket, its process ids."""

    def __init__(self, directory: Path, process: subprocess.Popen, output: Path):
        self.directory, self.process = directory, process
        values = dict(re.findall(r'^(?:declare -x )?(\w+)="?([^"\n]*)"?$',
                                 (directory / "cluster.env").read_text(), re.MULTILINE))
        super().__init__(values["GENREFLOW_CLUSTER_URL"], directory, output)
        self.values = values
        # Every process the script started runs in a session of its own; a task process
        # leaves its worker's process group but never its session.
        self.sessions = {p.stem: int(p.read_text()) for p in (directory / "pids").glob("*.pid")
                         if p.stem != "cluster"}
        token = self.api("POST", "/auth/token", expect=201, json={
            "username": "admin", "password": values["GENREFLOW_CLUSTER_PASSWORD"]}).json()
        self.session.headers["Authorization"] = f"Bearer {token['access_token']}"

    def s3(self, prefix: str) -> S3Store:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=self.values["AWS_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id=self.values["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.values["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )
        return S3Store("genreflow", prefix, client=client)

    def trigger(self, conf: dict) -> str:
        run = self.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                       json={"logical_date": None, "conf": conf}).json()
        return run["dag_run_id"]

    def run_path(self, run_id: str) -> str:
        return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"

    def finished(self, run_id: str) -> dict:
        def ended():
            run = self.api("GET", self.run_path(run_id)).json()
            return run if run["state"] in ("success", "failed") else None

        return self.wait_for(f"run {run_id} to end", ended, RUN_TIMEOUT, every=2)

    def task_instances(self, run_id: str, task_id: str) -> list[dict]:
        found = self.api("GET", f"{self.run_path(run_id)}/taskInstances",
                         params={"task_id_pattern": task_id, "limit": 100}).json()
        return [ti for ti in found["task_instances"] if ti["task_id"] == task_id]

    def tries(self, run_id: str, task_id: str, map_index: int) -> list[dict]:
        path = f"{self.run_path(run_id)}/taskInstances/{task_id}/{map_index}/tries"
        return self.api("GET", path).json()["task_instances"]

    def processes(self, *names: str) -> list[int]:
        """Live pids in the sessions of the named components (default: all of them)."""
        sessions = {self.sessions[name] for name in names or self.sessions}
        return [pid for pid, session in live_sessions().items() if session in sessions]


def live_sessions() -> dict[int, int]:
    """{pid: session id} of every live (not zombie) process."""
    sessions = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":  # state, ppid, pgrp, session, ...
                    sessions[int(entry.name)] = int(fields[3])
    return sessions


@pytest.fixture(scope="module")
def cluster(genres_config, demo_corpus):
    """The script's deployment in a fresh folder; stopped (if a test has not) at the end."""
    # Postgres runs as user postgres, which must reach its data folder: pytest's tmp
    # folders are private to root, so the cluster gets a folder of its own.
    directory = Path(tempfile.mkdtemp(prefix="genreflow-cluster-"))
    directory.chmod(0o755)
    output = directory / "script.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GENREFLOW"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GENREFLOW_CLUSTER_DIR": str(directory),
        "GENREFLOW_CLUSTER_DEMO": "0",
        "GENREFLOW_CONFIG": str(genres_config),
        "GENREFLOW_RETRY_DELAY_SECONDS": "2",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    }
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", str(PROJECT / "scripts" / "airflow-cluster.sh")], env=env, cwd=PROJECT,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "cluster is up" not in output.read_text(errors="replace"):
            assert process.poll() is None, f"the cluster script exited:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"no cluster after {STARTUP_TIMEOUT} s"
            time.sleep(2)
        deployment = Cluster(directory, process, output)
        deployment.wait_for(f"{DAG_ID} to be parsed", lambda: deployment.session.get(
            f"{deployment.url}/api/v2/dags/{DAG_ID}", timeout=30).ok, STARTUP_TIMEOUT)
        deployment.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        deployment.s3("valid").write_bytes("valid.csv", demo_corpus["valid_csv"].read_bytes())
        yield deployment
    except BaseException:
        print(f"---- {output} ----\n{output.read_text(errors='replace')[-5000:]}")
        for log in sorted((directory / "logs").glob("*.log")):
            print(f"---- last lines of {log} ----")
            print("\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        raise
    finally:
        sessions = {int(p.read_text()) for p in (directory / "pids").glob("*.pid")}
        if process.poll() is None:
            stop_group(process, timeout=90)
        # Should the script have failed to stop something, the test still leaves nothing.
        signal_all([pid for pid, sid in live_sessions().items() if sid in sessions],
                   signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


def upload_tracks(cluster: Cluster, tmp_path: Path, per_genre: int, seconds: float,
                  seed: int, prefix: str) -> set[str]:
    """Synthesised wavs into the bucket's inbox; their catalog keys."""
    from genreflow.synth import write_corpus

    inbox = cluster.s3("inbox")
    keys = set()
    for path in write_corpus(tmp_path, TEST_GENRES, per_genre, seconds=seconds, seed=seed,
                             prefix=prefix):
        key = path.relative_to(tmp_path).as_posix()
        inbox.write_bytes(key, path.read_bytes())
        keys.add(f"inbox:{key}")
    return keys


def inbox_keys(cluster: Cluster) -> set[str]:
    return {f"inbox:{key}" for key in cluster.s3("inbox").list_keys()}


def assert_catalog_lists_each_track_once(cluster: Cluster) -> None:
    table = catalog.read_catalog(cluster.s3("store"))
    assert table["key"].is_unique, table[table["key"].duplicated()]
    assert set(table["key"]) == inbox_keys(cluster)
    assert set(table["status"]) == {catalog.OK}, table[table["status"] != catalog.OK]
    assert table["sha256"].is_unique


def assert_latest_is_complete(cluster: Cluster, run_id: str) -> str:
    """latest.json names this run's version, whose every file matches its manifest."""
    store = cluster.s3("store")
    version, manifest = registry.resolve(store)
    assert manifest["run_id"] == run_id
    assert registry.verify_files(store, version, manifest)  # sha256 of every listed file
    model, _ = registry.load_model(store)
    assert hasattr(model, "predict")
    return version


def kill_worker_running_extract(cluster: Cluster, run_id: str) -> dict:
    """SIGKILL every process of a worker while one of its extract tasks runs; that task.

    The worker is frozen (SIGSTOP) first, so whether its task is still running can be
    checked with nothing moving on that host; if it just finished, the worker is
    resumed and the next running one is taken."""
    def extract_running_on_a_worker():
        for ti in cluster.task_instances(run_id, "extract"):
            if ti["state"] == "running" and ti["hostname"] in WORKERS:
                return ti
        return None

    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        victim = cluster.wait_for("an extract task running", extract_running_on_a_worker,
                                  RUN_TIMEOUT, every=0.3)
        processes = cluster.processes(worker_name(victim["hostname"]))
        assert processes, f"no process of {victim['hostname']} found"
        signal_all(processes, signal.SIGSTOP)
        now = cluster.api("GET", f"{cluster.run_path(run_id)}/taskInstances/extract/"
                                 f"{victim['map_index']}").json()
        if (now["state"], now["try_number"]) == ("running", victim["try_number"]):
            signal_all(processes, signal.SIGKILL)  # worker, pool, supervisor, task
            return victim
        signal_all(processes, signal.SIGCONT)
    pytest.fail("no extract task could be caught running")


def worker_name(hostname: str) -> str:
    """The script's name for the worker that records ``hostname`` (its pid file, log)."""
    return f"worker-{WORKERS.index(hostname) + 1}"


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def test_run_spreads_extraction_over_both_workers(cluster, tmp_path):
    keys = upload_tracks(cluster, tmp_path, per_genre=14, seconds=6.4, seed=11, prefix="a_")
    assert len(keys) == 42
    run_id = cluster.trigger({"batch_size": 10, "max_new_tracks": 500})
    run = cluster.finished(run_id)
    extracts = cluster.task_instances(run_id, "extract")
    assert run["state"] == "success", [(t["task_id"], t["state"]) for t in extracts]
    assert sorted(t["map_index"] for t in extracts) == [0, 1, 2, 3, 4]  # 42 tracks / 10
    assert {t["state"] for t in extracts} == {"success"}
    assert {t["hostname"] for t in extracts} == set(WORKERS)

    log = cluster.task_log(run_id, "validate")
    assert "ROC-AUC ovo" in log
    # a Celery worker's task may start processes: model selection gets its two jobs
    train = cluster.task_log(run_id, "train")
    assert "model selection: " in train and " grouped folds on " in train
    assert "allowing it worker processes of its own" in train
    assert "setting n_jobs=1" not in train
    assert_catalog_lists_each_track_once(cluster)
    assert_latest_is_complete(cluster, run_id)
    store_keys = cluster.s3("store").list_keys()
    assert "latest.json" in store_keys
    assert any(k.startswith("models/") and k.endswith("/model.skops") for k in store_keys)


def test_worker_killed_during_extract_is_retried_on_the_other(cluster, tmp_path):
    keys = upload_tracks(cluster, tmp_path, per_genre=4, seconds=30.0, seed=12, prefix="b_")
    run_id = cluster.trigger({"batch_size": 3, "max_new_tracks": 500, "force_publish": True})

    victim = kill_worker_running_extract(cluster, run_id)
    survivor = next(w for w in WORKERS if w != victim["hostname"])

    run = cluster.finished(run_id)
    assert run["state"] == "success"
    tries = cluster.tries(run_id, "extract", victim["map_index"])
    assert [(t["try_number"], t["hostname"], t["state"]) for t in tries] == [
        (1, victim["hostname"], "failed"), (2, survivor, "success")]
    assert not cluster.processes(worker_name(victim["hostname"]))

    assert keys <= inbox_keys(cluster)
    assert_catalog_lists_each_track_once(cluster)  # nothing lost, nothing twice
    version = assert_latest_is_complete(cluster, run_id)
    assert registry.list_versions(cluster.s3("store"))[-1] == version
    assert f"{worker_name(victim['hostname'])} exited" in cluster.output.read_text()


def test_stop_leaves_no_process_running(cluster):
    assert cluster.processes("postgres", "redis", "s3", "api-server", "scheduler", "serve"), \
        "the deployment is not running"
    health = requests.get(f"{cluster.values['GENREFLOW_CLUSTER_SERVE_URL']}/health", timeout=30)
    assert health.json()["store"] == cluster.values["GENREFLOW_STORE"], health.text
    cluster.process.send_signal(signal.SIGTERM)  # what Ctrl-C in the script's shell does
    assert cluster.process.wait(timeout=180) == 0
    assert not cluster.processes()
    assert cluster.process.pid not in live_sessions().values()  # nor the script's own
    with pytest.raises(requests.ConnectionError):
        requests.get(cluster.url, timeout=5)
    assert "stopped" in cluster.output.read_text()
