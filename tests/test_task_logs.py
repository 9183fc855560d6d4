"""Task logs a person can read: a full run through Airflow, its log counted per task.

Issue 11: train and validate logs held ~1,160 DeprecatedImportWarning lines each,
discover and extract dumped every track dict, failed tracks were logged twice with
object reprs, and the scheduler logged "XCom not found" on every run.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter

import pytest
from conftest import TEST_GENRES, write_bad_tracks

from genreflow import registry
from genreflow.storage import LocalStore

# Lines (genreflow's and Airflow's INFO, as `airflow dags test` prints them) one task of
# a ~20-track run may write: the longest, train, writes ~20.
LINE_BUDGET = 60


@pytest.fixture(scope="module")
def logged_run(run_dag, demo_corpus, tmp_path_factory):
    """18 good tracks (6 per genre) and 3 unusable ones, in batches of 8."""
    from genreflow.synth import write_corpus

    root = tmp_path_factory.mktemp("logged-run")
    inbox = root / "inbox"
    write_corpus(inbox, TEST_GENRES, 6, seed=1)
    bad = write_bad_tracks(inbox, "metal")
    shutil.copy(demo_corpus["valid_csv"], root / "valid.csv")
    env = {"GENREFLOW_STORE": str(root / "store"), "GENREFLOW_INBOX": str(inbox),
           "GENREFLOW_VALID_CSV": str(root / "valid.csv")}
    run = run_dag(env, conf={"batch_size": 8})
    assert run.returncode == 0, run.log[-3000:]
    return run, bad, LocalStore(root / "store")


def test_every_task_log_is_short_and_has_no_repeated_line(logged_run):
    run, _, _ = logged_run
    logs = run.task_logs()
    assert {"discover", "extract[0]", "extract[2]", "assemble", "train", "validate", "figure",
            "publish"} <= set(logs)
    sizes = {task: len(lines) for task, lines in logs.items()}
    assert max(sizes.values()) <= LINE_BUDGET, sizes
    for task, lines in logs.items():
        repeated = [line for line, n in Counter(lines).items() if n > 1]
        assert not repeated, (task, repeated)


def test_no_warning_floods_dumps_or_xcom_errors(logged_run):
    run, _, _ = logged_run
    for noise in ("DeprecationWarning", "DeprecatedImportWarning", "Returned value was",
                  "XCom not found", "UMAP figure skipped"):
        assert noise not in run.log, noise
    for task, lines in run.task_logs().items():
        if task not in ("has_new_data", "figure"):
            assert sum("to XCom: " in line for line in lines) == 1, task


def test_one_plain_line_per_failed_track(logged_run):
    run, bad, _ = logged_run
    for key, reason in bad.items():
        lines = [line for line in run.log.splitlines() if key in line]
        assert len(lines) == 1, lines
        assert f"failed {key}: " in lines[0] and reason in lines[0]
        assert "0x" not in lines[0] and "BytesIO" not in lines[0]


def test_metrics_are_a_short_block_and_the_figure_is_published(logged_run):
    run, _, store = logged_run
    validate = run.task_logs()["validate"]
    block = [line for line in validate if re.match(r"\s+(ROC-AUC ovo|song accuracy|song "
                                                   r"macro-F1)\s+\d\.\d{4}$", line)]
    assert len(block) == 3, validate
    manifest = registry.read_manifest(store, registry.read_latest(store)["version"])
    assert {"umap.png", "confusion_matrix.png"} <= set(manifest["files"])
