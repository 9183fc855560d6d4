"""genre_retrain through Airflow itself: DagBag integrity and full runs (local and S3)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_bad_tracks

from genreflow import catalog, registry
from genreflow.sources import KNOWN_SOURCES
from genreflow.storage import LocalStore, S3Store

PROJECT = Path(__file__).resolve().parents[1]

# Loaded in a subprocess with the session's Airflow env: Airflow fixes its home and
# database at first import, which another test of this process may have done already.
DAG_FACTS = """
import io
import json
import logging
import sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
dag = bag.get_dag("genre_retrain")
dag_module = next(m for m in list(sys.modules.values())
                  if getattr(m, "DOC_MD", None) and hasattr(m, "best_effort"))
def broken_figure():
    raise KeyError("runs/nowhere/model.skops")
skip_log = io.StringIO()
logging.getLogger("genreflow.dag").addHandler(logging.StreamHandler(skip_log))
skipped = dag_module.best_effort(broken_figure)()
print(json.dumps({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "tags": sorted(dag.tags),
    "params": {k: dag.params[k] for k in dag.params},
    "schemas": {k: dag.params.get_param(k).schema for k in dag.params},
    "param_docs": {k: dag.params.get_param(k).description for k in dag.params},
    "description": dag.description,
    "first_task": [t.task_id for t in dag.topological_sort()][0],
    "extract_mapped": dag.get_task("extract").is_mapped,
    "cron": dag.timetable.timetable.expression,
    "trigger_asset": dag.timetable.asset_condition.name,
    "retries": {t.task_id: t.retries for t in dag.tasks},
    "timeouts": {t.task_id: t.execution_timeout.total_seconds() for t in dag.tasks},
    "docs": {t.task_id: (t.doc_md or "").startswith(("Lists", "Fetches", "Records", "Stops",
             "Checks", "Chooses", "Scores", "Draws", "Compares", "Writes")) for t in dag.tasks},
    "publish_upstream": sorted(dag.get_task("publish").upstream_task_ids),
    "figure_skipped": [skipped, skip_log.getvalue().strip()],
}))
"""


@pytest.fixture(scope="module")
def dag_facts(airflow_env) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", DAG_FACTS % str(PROJECT / "dags")], env=airflow_env,
        capture_output=True, text=True, timeout=300, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_dag_shape(dag_facts):
    assert dag_facts["import_errors"] == {}
    assert dag_facts["catchup"] is False
    assert dag_facts["max_active_runs"] == 1
    assert "genreflow" in dag_facts["tags"]
    params = dag_facts["params"]
    assert {"inbox", "valid_csv", "store", "max_new_tracks", "force_publish"} <= set(params)
    assert params["max_new_tracks"] == 500
    assert dag_facts["first_task"] == "discover"
    assert dag_facts["extract_mapped"] is True
    assert dag_facts["cron"] == "0 3 * * 1"  # weekly, Monday 03:00 UTC
    assert dag_facts["trigger_asset"] == "genreflow_inbox"
    retries = dag_facts["retries"]
    assert retries.pop("figure") == 0  # best effort: skipped, never retried
    assert dag_facts["figure_skipped"] == [
        {}, "UMAP figure skipped: KeyError: 'runs/nowhere/model.skops'"]
    assert all(n >= 1 for n in retries.values())
    assert all(dag_facts["timeouts"].values()), dag_facts["timeouts"]
    assert all(dag_facts["docs"].values()), dag_facts["docs"]
    assert {"gate", "validate", "train", "assemble", "figure"} <= set(
        dag_facts["publish_upstream"])
    assert "weekly, Mondays 03:00 UTC, and when new inbox tracks are announced" in dag_facts[
        "description"]


def test_trigger_form_schemas_leave_locations_optional_and_describe_every_param(dag_facts):
    """The param schemas the trigger form is built from, read, not submitted (the form is
    submitted with its defaults in tests/test_browser.py; Airflow refuses to parse a
    scheduled DAG whose defaults fail their schemas, which test_dag_shape's import_errors
    catches). Issue 11: the UI marks a typed param without "null" required, so locations
    allow it and default to None (= the environment); every param is titled, sectioned
    and says its default; sources offer exactly KNOWN_SOURCES; the numbers are bounded."""
    params, schemas = dag_facts["params"], dag_facts["schemas"]
    for name in ("inbox", "valid_csv", "store"):
        assert params[name] is None and "null" in schemas[name]["type"]
    for name, schema in schemas.items():
        assert schema.get("title") and schema.get("section"), name
        assert "default" in dag_facts["param_docs"][name].lower(), name
    sources = schemas["sources"]
    assert sources["type"] == "array" and sources["examples"] == list(KNOWN_SOURCES)
    assert sources["items"]["enum"] == list(KNOWN_SOURCES)
    for name in ("max_new_tracks", "batch_size", "gate_margin"):
        assert {"minimum", "maximum"} <= set(schemas[name]), name


def test_local_run_publishes_records_bad_tracks_and_second_run_skips(
    run_dag, demo_corpus, tmp_path
):
    inbox = tmp_path / "inbox"
    shutil.copytree(demo_corpus["inbox"], inbox)
    bad = write_bad_tracks(inbox, "metal")
    env = {
        "GENREFLOW_STORE": str(tmp_path / "store"),
        "GENREFLOW_INBOX": str(inbox),
        "GENREFLOW_VALID_CSV": str(demo_corpus["valid_csv"]),
    }
    first = run_dag(env)
    assert first.returncode == 0, first.log[-3000:]
    assert first.state == "success"
    assert "ROC-AUC ovo" in first.log

    store = LocalStore(tmp_path / "store")
    latest = registry.read_latest(store)
    manifest = registry.read_manifest(store, latest["version"])
    assert manifest["promoted"] is True
    assert set(manifest["genres"]) == {"classical", "metal", "electronic"}
    assert manifest["n_training_tracks"] == 9
    assert manifest["metrics"]["roc_auc_ovo"] >= 0.9
    registry.verify_files(store, latest["version"], manifest)
    model, _ = registry.load_model(store)
    assert list(model.classes_) == sorted(manifest["genres"])

    tracks = catalog.read_catalog(store).set_index("key")
    assert (tracks["status"] == catalog.OK).sum() == 9
    for key, reason in bad.items():
        assert tracks.loc[key, "status"] == catalog.FAILED
        assert reason in tracks.loc[key, "reason"]
    assert len(store.list_keys("raw/")) == 9  # raw audio of every usable track
    assert len(store.list_keys("features/")) == 9

    second = run_dag(env)
    assert second.returncode == 0, second.log[-3000:]
    assert "0 new" in second.log and "no new data" in second.log
    states = second.task_states()
    assert states.get("train") in (None, "skipped")
    assert "published" not in second.log
    assert registry.read_latest(store)["version"] == latest["version"]
    assert len(store.list_keys("features/")) == 9


def test_s3_run_publishes_to_bucket(run_dag, demo_corpus, s3_bucket):
    bucket, s3_env = s3_bucket
    inbox = S3Store(bucket, "inbox")
    for path in sorted(demo_corpus["inbox"].glob("*/*.wav")):
        inbox.write_bytes(path.relative_to(demo_corpus["inbox"]).as_posix(), path.read_bytes())
    S3Store(bucket, "valid").write_bytes("valid.csv", demo_corpus["valid_csv"].read_bytes())
    env = {
        **s3_env,
        "GENREFLOW_STORE": f"s3://{bucket}/store",
        "GENREFLOW_INBOX": f"s3://{bucket}/inbox",
        "GENREFLOW_VALID_CSV": f"s3://{bucket}/valid/valid.csv",
    }
    run = run_dag(env)
    assert run.returncode == 0, run.log[-3000:]
    store = S3Store(bucket, "store")
    latest = registry.read_latest(store)
    manifest = registry.read_manifest(store, latest["version"])
    assert manifest["valid_csv"] == f"s3://{bucket}/valid/valid.csv"
    assert set(manifest["files"]) >= {"model.skops", "metrics.json"}
    registry.verify_files(store, latest["version"], manifest)
    assert len(store.list_keys("raw/")) == 9
    assert json.loads(store.read_bytes(f"models/{latest['version']}/metrics.json"))[
        "n_songs"
    ] == 6


def test_broken_valid_csv_fails_fast_with_the_reason(run_dag, demo_corpus, tmp_path):
    lines = demo_corpus["valid_csv"].read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("mfcc3_mean")
    broken = tmp_path / "broken.csv"
    broken.write_text(
        "\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in lines)
    )
    env = {
        "GENREFLOW_STORE": str(tmp_path / "store"),
        "GENREFLOW_INBOX": str(demo_corpus["inbox"]),
        "GENREFLOW_VALID_CSV": str(broken),
    }
    run = run_dag(env)
    assert run.returncode != 0
    assert "missing 1 required column(s): mfcc3_mean" in run.log
    states = run.task_states()
    assert states.get("checks") == "failed"  # before training, not after it
    assert states.get("train") in (None, "upstream_failed")
    assert "up_for_retry" not in states.values()
    assert registry.read_latest(LocalStore(tmp_path / "store")) is None


def test_broken_champion_does_not_block_training(run_dag, demo_corpus, tmp_path):
    """The champion's manifest is deleted: the run says so, trains, and publishes a
    usable champion in its place (issue 10: every run used to fail at has_new_data)."""
    store = LocalStore(tmp_path / "store")
    broken = "20260101T000000Z-bad000"
    registry.publish(store, broken, {registry.MODEL_FILE: b"never loaded"}, {}, promote=True)
    store.delete(registry.version_key(broken, registry.MANIFEST_FILE))
    env = {
        "GENREFLOW_STORE": str(tmp_path / "store"),
        "GENREFLOW_INBOX": str(demo_corpus["inbox"]),
        "GENREFLOW_VALID_CSV": str(demo_corpus["valid_csv"]),
    }
    run = run_dag(env)
    assert run.returncode == 0, run.log[-3000:]
    assert f"no usable champion (IncompleteVersion: version {broken} has no manifest" in run.log
    latest = registry.read_latest(store)
    assert latest["version"] != broken and latest["previous"] == broken
    manifest = registry.read_manifest(store, latest["version"], latest["manifest_sha256"])
    assert manifest["gate"]["promote"] and "no usable champion" in manifest["gate"]["reason"]
    rows = {row["version"]: row for row in registry.version_summaries(store)}
    assert "no manifest" in rows[broken]["error"] and rows[latest["version"]]["promoted"]


def test_missing_inbox_fails_at_once_and_creates_nothing(run_dag, demo_corpus, tmp_path):
    """An unset variable in the inbox path: a clear failure, not "0 candidates"."""
    inbox = tmp_path / "unset" / "inbox"
    env = {
        "GENREFLOW_STORE": str(tmp_path / "store"),
        "GENREFLOW_INBOX": str(inbox),
        "GENREFLOW_VALID_CSV": str(demo_corpus["valid_csv"]),
    }
    run = run_dag(env)
    assert run.returncode != 0
    assert f"BadStoreUri: {inbox} does not exist" in run.log
    states = run.task_states()
    assert states.get("discover") == "failed" and "up_for_retry" not in states.values()
    assert not inbox.parent.exists()
