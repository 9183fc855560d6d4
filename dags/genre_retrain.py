"""genre_retrain: weekly (or on Trigger) retraining of the genre classifier.

Wiring only: every task calls one function of genreflow.tasks, where the logic lives
and is tested without a scheduler. XCom carries store keys and counts, never data.
Bad data or configuration (genreflow.errors.PermanentError) fails a task at once;
anything else (S3 down, a network error) gets the task's retries.

Runs every Monday 03:00 UTC, on Trigger, and whenever an event is posted to the inbox
asset (new tracks were dropped in). No start_date on purpose: unpausing does not start a
catch-up run for the last missed Monday, the first scheduled run is the next one.
Each successful publish emits an event on the latest-model asset, with ``promoted`` and
the version in its extra, for downstream DAGs.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

from genreflow.config import (
    ENV_INBOX,
    ENV_STORE,
    ENV_VALID_CSV,
    Settings,
    load_settings,
    retry_delay_seconds,
)
from genreflow.errors import PermanentError
from genreflow.sources import KNOWN_SOURCES
from genreflow.tasks import ingest, release, training


def fail_fast(fn):
    """Turn a PermanentError into AirflowFailException: retrying bad data wastes time."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PermanentError as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


# Stable identities, not store paths: the same DAG serves any GENREFLOW_STORE/INBOX, and
# an asset's URI must not change with the environment that parsed the file. Where the
# model went is in each event's extra.
INBOX = Asset(name="genreflow_inbox", uri="genreflow://inbox", group="genreflow")
LATEST_MODEL = Asset(
    name="genreflow_latest_model", uri="genreflow://models/latest", group="genreflow"
)


def run_context() -> tuple[Settings, dict, str]:
    """Settings (env, overridden by non-empty params), the params, and the run id."""
    context = get_current_context()
    params = context["params"]
    settings = load_settings(
        store=params.get("store"), inbox=params.get("inbox"), valid_csv=params.get("valid_csv")
    )
    return settings, params, context["run_id"]


SCHEDULE_TEXT = "weekly, Mondays 03:00 UTC, and when new inbox tracks are announced"
LOCATIONS = "Locations (empty: use the environment)"
INTAKE = "New tracks"
MODEL = "Training and release"


def location(env: str, what: str, default: str) -> Param:
    """A nullable location param: empty means the environment's value for this run."""
    return Param(
        None, type=["null", "string"], title=what, section=LOCATIONS,
        description=f"{what} for this run only: a path, file://... or s3://bucket/prefix. "
        f"Empty: {env} from the environment (default {default}). A relative path is "
        "relative to the project folder, like the environment's.",
    )


@dag(
    dag_id="genre_retrain",
    description=f"Retrain the genre classifier: {SCHEDULE_TEXT}.",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=INBOX
    ),
    catchup=False,
    max_active_runs=1,
    # Airflow 3.3's DAG list shows an asset-or-time schedule as its asset only: the tag
    # puts the weekly run in the list (docs/airflow.md, "Schedule").
    tags=["genreflow", "ml", "weekly Mon 03:00 UTC"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=retry_delay_seconds())},
    params={
        "sources": Param(
            ["inbox"], type="array", title="Sources", section=INTAKE, minItems=1,
            uniqueItems=True, examples=list(KNOWN_SOURCES),
            items={"type": "string", "enum": list(KNOWN_SOURCES)},
            description="Where to look for new labelled tracks (one or more). inbox: "
            "<genre>/<file> audio in the inbox folder or prefix; spotify: the playlists "
            "per genre in include/genreflow.toml (needs credentials). Default: inbox.",
        ),
        "max_new_tracks": Param(
            500, type="integer", minimum=0, maximum=100_000, title="Max new tracks",
            section=INTAKE,
            description="At most this many new tracks are taken in by this run; the rest "
            "wait for the next run (the discover log says how many). 0 takes none and "
            "retrains on what the catalog has. Default 500.",
        ),
        "batch_size": Param(
            25, type="integer", minimum=1, maximum=1_000, title="Tracks per extract task",
            section=INTAKE,
            description="New tracks are split into batches of this size, each extracted "
            "by its own mapped extract task, in parallel. Default 25.",
        ),
        "retry_failed": Param(
            False, type="boolean", title="Retry failed tracks", section=INTAKE,
            description="Offer tracks that failed in earlier runs (unreadable audio, a "
            "download error) again. Default off: a failed track is not retried.",
        ),
        "retrain_unchanged": Param(
            False, type="boolean", title="Retrain without new data", section=MODEL,
            description="Train, validate and gate even when the latest model was trained "
            "on exactly this data. Default off: such a run stops at has_new_data.",
        ),
        "force_publish": Param(
            False, type="boolean", title="Promote regardless of the gate", section=MODEL,
            description="Make the new model latest even if it scores worse than the "
            "current one on valid.csv. Default off: the gate decides.",
        ),
        "gate_margin": Param(
            0.005, type="number", minimum=0, maximum=1, title="Gate margin (ROC-AUC)",
            section=MODEL,
            description="The new model is promoted unless the current one beats it by more "
            "than this ROC-AUC on valid.csv (0 to 1). Default 0.005.",
        ),
        "inbox": location(ENV_INBOX, "Inbox", "var/demo/inbox"),
        "valid_csv": location(ENV_VALID_CSV, "Validation table (valid.csv)",
                              "var/demo/valid.csv"),
        "store": location(ENV_STORE, "Store (models, catalog, features)", "var/store"),
    },
    doc_md=__doc__,
)
def genre_retrain():
    @task
    @fail_fast
    def discover() -> list[list[dict]]:
        """New tracks from the configured sources, in batches for the mapped extract."""
        settings, params, run_id = run_context()
        return ingest.discover(
            settings, list(params["sources"]), params["max_new_tracks"], params["batch_size"],
            params["retry_failed"], run_id,
        )

    @task(map_index_template="{{ task.op_kwargs['batch'] | length }} tracks")
    @fail_fast
    def extract(batch: list[dict]) -> list[dict]:
        """Fetch, store raw audio, extract the 311 features per segment."""
        settings, _, run_id = run_context()
        return ingest.extract_batch(settings, batch, run_id)

    @task(trigger_rule="none_failed")
    @fail_fast
    def assemble(batches: list[list[dict]]) -> dict:
        """Update the catalog and write the training snapshot."""
        settings, _, run_id = run_context()
        return ingest.assemble(settings, list(batches), run_id)

    @task.short_circuit
    def has_new_data(snapshot: dict) -> bool:
        """Stop here when the champion was already trained on this snapshot."""
        settings, params, _ = run_context()
        return training.needs_training(settings, snapshot, params["retrain_unchanged"])

    @task
    @fail_fast
    def checks(snapshot: dict) -> dict:
        """Schema, NaN/inf, per-genre counts, Kruskal-Wallis: hard failures stop here."""
        settings, _, run_id = run_context()
        return training.check(settings, snapshot, run_id)

    @task
    @fail_fast
    def train(snapshot: dict) -> dict:
        """Fit the one pipeline object on the snapshot."""
        settings, _, run_id = run_context()
        return training.train(settings, snapshot, run_id)

    @task
    @fail_fast
    def validate(trained: dict) -> dict:
        """Score on valid.csv: ROC-AUC ovo, song-level majority vote."""
        settings, _, _ = run_context()
        return training.validate(settings, trained)

    @task
    @fail_fast
    def gate(metrics: dict) -> dict:
        """Challenger vs champion on the same valid.csv."""
        settings, params, _ = run_context()
        return release.gate(settings, metrics, params["gate_margin"], params["force_publish"])

    @task(outlets=[LATEST_MODEL])
    @fail_fast
    def publish(snapshot: dict, trained: dict, metrics: dict, decision: dict) -> dict:
        """Write models/<version>/, verify it, then move latest if promoted."""
        settings, _, run_id = run_context()
        result = release.publish(settings, snapshot, trained, metrics, decision, run_id)
        get_current_context()["outlet_events"][LATEST_MODEL].extra = {
            "version": result["version"], "promoted": result["promoted"], "store": settings.store,
        }
        return result

    snapshot = assemble(extract.expand(batch=discover()))
    checked = checks(snapshot)
    has_new_data(snapshot) >> checked
    trained = train(snapshot)
    checked >> trained
    metrics = validate(trained)
    publish(snapshot, trained, metrics, gate(metrics))


genre_retrain()
