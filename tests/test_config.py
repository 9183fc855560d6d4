"""Settings resolution as task processes see it: executor check, relative paths, hostname."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genreflow.config import (
    SharedStorageRequired,
    airflow_executors,
    load_settings,
    retry_delay_seconds,
    worker_hostname,
)


@pytest.fixture
def env(monkeypatch, genres_config):
    monkeypatch.setenv("GENREFLOW_CONFIG", str(genres_config))
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    for name in ("GENREFLOW_STORE", "GENREFLOW_INBOX", "GENREFLOW_VALID_CSV"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("value, names", [
    ("CeleryExecutor", ["CeleryExecutor"]),
    ("LocalExecutor,CeleryExecutor", ["LocalExecutor", "CeleryExecutor"]),
    ("fast:LocalExecutor,airflow.providers.celery.executors.celery_executor.CeleryExecutor",
     ["LocalExecutor", "CeleryExecutor"]),
    ("LocalExecutor;team_a=KubernetesExecutor", ["LocalExecutor", "KubernetesExecutor"]),
])
def test_executor_names_from_env(env, value, names):
    env.setenv("AIRFLOW__CORE__EXECUTOR", value)
    assert airflow_executors() == names


def test_local_store_refused_under_celery(env, tmp_path):
    env.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    env.setenv("GENREFLOW_STORE", str(tmp_path / "store"))
    env.setenv("GENREFLOW_INBOX", "s3://bucket/inbox")
    env.setenv("GENREFLOW_VALID_CSV", "s3://bucket/valid.csv")
    with pytest.raises(SharedStorageRequired) as error:
        load_settings()
    message = str(error.value)
    assert f"store={tmp_path / 'store'}" in message and "CeleryExecutor" in message
    assert "inbox=" not in message  # only the offending locations are named


def test_local_locations_fine_under_local_executor(env, tmp_path):
    env.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    env.setenv("GENREFLOW_STORE", str(tmp_path / "store"))
    assert load_settings().store == str(tmp_path / "store")


def test_s3_everywhere_passes_under_celery_and_a_param_can_fix_the_store(env, tmp_path):
    env.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    env.setenv("GENREFLOW_STORE", str(tmp_path / "store"))
    env.setenv("GENREFLOW_INBOX", "s3://bucket/inbox")
    env.setenv("GENREFLOW_VALID_CSV", "s3://bucket/valid/valid.csv")
    settings = load_settings(store="s3://bucket/store")  # the DAG param wins over env
    assert (settings.store, settings.inbox) == ("s3://bucket/store", "s3://bucket/inbox")


def test_executor_read_from_airflow_config_in_a_task_process(genres_config, tmp_path):
    """Task processes have Airflow imported and may get the executor from airflow.cfg."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    (home / "airflow.cfg").write_text("[core]\nexecutor = CeleryExecutor\n")
    code = ("import airflow.configuration\n"
            "from genreflow.config import load_settings\n"
            "load_settings()\n")
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(home),
           "GENREFLOW_CONFIG": str(genres_config), "GENREFLOW_STORE": str(tmp_path / "s")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "SharedStorageRequired" in done.stderr and "CeleryExecutor" in done.stderr


def test_relative_locations_resolve_against_the_project_home(env, tmp_path):
    env.setenv("GENREFLOW_HOME", str(tmp_path))
    env.setenv("GENREFLOW_STORE", "var/store")
    env.setenv("GENREFLOW_INBOX", "s3://bucket/inbox")
    env.chdir("/")  # Airflow starts tasks in a working directory of its own
    settings = load_settings(valid_csv="data/valid.csv")
    assert settings.store == str(tmp_path / "var" / "store")
    assert settings.valid_csv == str(tmp_path / "data" / "valid.csv")
    assert settings.inbox == "s3://bucket/inbox"


def test_retry_delay_and_worker_hostname_from_env(monkeypatch):
    monkeypatch.delenv("GENREFLOW_RETRY_DELAY_SECONDS", raising=False)
    monkeypatch.delenv("GENREFLOW_WORKER_HOSTNAME", raising=False)
    assert retry_delay_seconds() == 120.0
    assert worker_hostname()  # the machine's name
    monkeypatch.setenv("GENREFLOW_RETRY_DELAY_SECONDS", "2.5")
    monkeypatch.setenv("GENREFLOW_WORKER_HOSTNAME", "worker-b")
    assert (retry_delay_seconds(), worker_hostname()) == (2.5, "worker-b")
