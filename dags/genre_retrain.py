"""genre_retrain: the weekly retraining of the genre classifier (operator's guide: DOC_MD).

Wiring only: every task calls one function of genreflow.tasks (imported inside the
task, so parsing this file stays cheap), which calls the domain modules where the logic
lives and is tested without a scheduler. XCom carries store keys and counts, never data.
Bad data or configuration (genreflow.errors.PermanentError) fails a task at once;
anything else (S3 down, a network error) gets the task's retries. No start_date on
purpose: unpausing does not start a catch-up run for the last missed Monday.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
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
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout

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

log = logging.getLogger("genreflow.dag")

DOC_MD = """
### Retrain the genre classifier

Takes in new labelled tracks, retrains the model, scores it on a fixed validation table
(valid.csv) and publishes it to the model registry; the new model becomes **latest**
(what `genreflow pull`/`predict` use) only when it is not worse than the current one.

**When it runs**: weekly, Mondays 03:00 UTC (once the DAG is unpaused), when an event is
posted to the `genreflow_inbox` asset (new tracks dropped in the inbox), and on Trigger.
A run with nothing new stops at `has_new_data` and publishes nothing.

**Trigger form**: every field has a working default; leave the locations empty to use
the environment (`GENREFLOW_INBOX`, `GENREFLOW_VALID_CSV`, `GENREFLOW_STORE`).

**Where results go** (in the store): `models/<version>/` (model, manifest, metrics,
figures; see the Model registry page), `catalog/tracks.parquet` (every track seen, with
its status and, for failed ones, the reason), `runs/<run id>/` (check report, figures).

**When a task fails**, open its log: the last lines say why.
A red task with no retry (bad data, a missing valid.csv, an unknown source, refused
credentials) needs a person: fix what the message names and trigger again. A task that
retried and still failed met an outage (S3, Spotify): trigger again when it is back.
Tracks that cannot be read never fail the run: `extract` logs one line each and the
catalog keeps the reason. The figure task never fails the run.
"""

# Measured on the demo (80 tracks, 2 busy cores; docs/airflow.md "Task durations") and
# in bench/RESULTS.md (weekly run at 320 tracks, train at 10,000 segments), with room
# for a weekly run of up to 1,000 new tracks: a task past its limit is hung, not slow.
TIMEOUTS = {
    "discover": timedelta(minutes=10),  # 4-44 s
    "extract": timedelta(minutes=60),  # per batch: 20 s for 25 tracks, 145 s cold for 10
    "assemble": timedelta(minutes=30),  # 6-27 s, grows with the catalog's features files
    "has_new_data": timedelta(minutes=5),  # < 2 s
    "checks": timedelta(minutes=15),  # 1-8 s
    "train": timedelta(minutes=60),  # 10-75 s; 438 s at 10,000 segments under load
    "validate": timedelta(minutes=15),  # 1-5 s (24-110 s with the UMAP figure inside)
    "figure": timedelta(minutes=10),  # 2-11 s; 58 s once with an empty numba cache
    "gate": timedelta(minutes=15),  # < 1 s; re-scoring the champion is like validate
    "publish": timedelta(minutes=15),  # < 3 s
}


def fail_fast(fn):
    """Turn a PermanentError into AirflowFailException: retrying bad data wastes time.
    Also says in one line what goes to XCom (Airflow is told not to dump it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except PermanentError as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        log.info("to XCom: %s", xcom_summary(result))
        return result

    return wrapper


def xcom_summary(value) -> str:
    """What a task passes on, in a few words: its shape and JSON size, not its content."""
    size = len(json.dumps(value, default=str))
    if isinstance(value, dict):
        return f"{len(value)} fields ({size} bytes of JSON)"
    if isinstance(value, list):
        return f"a list of {len(value)} ({size} bytes of JSON)"
    return f"{value!r}"


def best_effort(fn):
    """A figure is not worth a failed or stuck run: an error, or running past the task's
    execution_timeout, is logged and the figure skipped ({})."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Exception, AirflowTaskTimeout) as exc:  # noqa: BLE001
            log.warning("UMAP figure skipped: %s: %s", type(exc).__name__, exc)
            return {}

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


def step(task_id: str, decorator=task, doc_md: str | None = None, **kwargs):
    """``@task`` with this DAG's conventions: a measured execution_timeout, Airflow's
    "Returned value was: ..." dump off (fail_fast logs a one-line summary instead), and
    the docstring (or ``doc_md``, which mapped tasks need) as the task's Markdown doc."""

    def decorate(fn):
        return decorator(task_id=task_id, execution_timeout=TIMEOUTS[task_id],
                         show_return_value_in_logs=False,
                         doc_md=inspect.cleandoc(doc_md or fn.__doc__), **kwargs)(fn)

    return decorate


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


def switch(title: str, section: str, description: str) -> Param:
    """An on/off param, off by default."""
    return Param(False, type="boolean", title=title, section=section, description=description)


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
            "<genre>/<file> audio in the inbox folder or prefix; jamendo: Creative Commons "
            "tracks by the genre tags in include/genreflow.toml (needs JAMENDO_CLIENT_ID); "
            "spotify: the playlists per genre there (needs credentials). Default: inbox.",
        ),
        "max_new_tracks": Param(
            500, type="integer", minimum=0, maximum=100_000, title="Max new tracks",
            section=INTAKE,
            description="At most this many new tracks are taken in by this run; the rest "
            "wait for the next run (the discover log says how many). 0 takes none and "
            "retrains on what the catalog has. Default 500.",
        ),
        "max_upgrade_tracks": Param(
            1000, type="integer", minimum=0, maximum=100_000, title="Max tracks to upgrade",
            section=INTAKE,
            description="Catalogued tracks that lack a feature set of include/genreflow.toml "
            "(a set just added, or a lost features file) get it from their kept raw audio, "
            "at most this many per run; the rest wait for the next runs (the discover log "
            "says how many are left). A track enters training once it has every set. "
            "Default 1000.",
        ),
        "batch_size": Param(
            25, type="integer", minimum=1, maximum=1_000, title="Tracks per extract task",
            section=INTAKE,
            description="New tracks are split into batches of this size, each extracted "
            "by its own mapped extract task, in parallel. Default 25.",
        ),
        "retry_failed": switch(
            "Retry failed tracks", INTAKE, "Offer tracks that failed in earlier runs "
            "(unreadable audio, a download error) again. Default off: a failed track is "
            "not retried."),
        "retrain_unchanged": switch(
            "Retrain without new data", MODEL, "Train, validate and gate even when the "
            "latest model was trained on exactly this data. Default off: such a run stops "
            "at has_new_data."),
        "force_publish": switch(
            "Promote regardless of the gate", MODEL, "Make the new model latest even if it "
            "scores worse than the current one on valid.csv. Default off: the gate decides."),
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
    doc_md=DOC_MD,
)
def genre_retrain():
    @step("discover")
    @fail_fast
    def discover() -> list[list[dict]]:
        """Lists the sources (param `sources`) and keeps the tracks the catalog has not
        seen, at most `max_new_tracks`, in batches of `batch_size` for `extract`.

        Log: candidates, already known, new, taken, rejected (one line per rejected item
        with its reason: unknown genre folder, unsupported file type, no preview).
        Fails at once when the inbox does not exist, a source is unknown or Spotify
        credentials are missing or refused: fix that and trigger again."""
        from genreflow.tasks import ingest

        settings, params, run_id = run_context()
        return ingest.discover(
            settings, list(params["sources"]), params["max_new_tracks"], params["batch_size"],
            params["retry_failed"], run_id, params["max_upgrade_tracks"],
        )

    @step("extract", doc_md="""Fetches each track of one batch, keeps its raw audio in
        `raw/` and its feature sets per 3-s segment in `features/` (one task per batch;
        the map index label says how many tracks).

        Log: a progress line every 10 tracks, one line per track that cannot be used
        (`failed <track>: <reason>`, e.g. cannot decode, too short, silent), and a summary.
        Such tracks are recorded in the catalog and never fail the run (param
        `retry_failed` offers them again). A failure of the task itself is an outage of
        the store or the source: it is retried once, then trigger again.""",
          map_index_template="{{ task.op_kwargs['batch'] | length }} tracks")
    @fail_fast
    def extract(batch: list[dict]) -> list[dict]:
        from genreflow.tasks import ingest

        settings, _, run_id = run_context()
        return ingest.extract_batch(settings, batch, run_id)

    @step("assemble", trigger_rule="none_failed")
    @fail_fast
    def assemble(batches: list[list[dict]]) -> dict:
        """Records this run's tracks in the catalog and writes the training snapshot of
        every usable track (`snapshots/<fingerprint>.parquet`).

        Log: label conflicts (same audio under two genres, left out until resolved) and
        the snapshot: tracks, segments, new tracks. Fails when no track at all is usable."""
        from genreflow.tasks import ingest

        settings, _, run_id = run_context()
        # one slice reads every batch's records in one request; iterating the lazy
        # sequence asks for one more offset than exists, which Airflow logs as an error
        return ingest.assemble(settings, batches[:], run_id)

    @step("has_new_data", decorator=task.short_circuit)
    def has_new_data(snapshot: dict) -> bool:
        """Stops the run here (the rest is skipped, nothing is published) when the latest
        model was trained on exactly this snapshot. Param `retrain_unchanged` forces
        training anyway."""
        from genreflow.tasks import training

        settings, params, _ = run_context()
        return training.needs_training(settings, snapshot, params["retrain_unchanged"])

    @step("checks")
    @fail_fast
    def checks(snapshot: dict) -> dict:
        """Checks the snapshot before training: schema, NaN/inf, tracks per genre,
        imbalance, Kruskal-Wallis, drift against the latest model's data; and that
        valid.csv is readable and its genres have training tracks.

        Log: warnings, and on failure which checks failed; the full report is
        `runs/<run id>/checks.json`. A failure means the data needs a person (more
        tracks of a genre, a fixed valid.csv), not a retry."""
        from genreflow.tasks import training

        settings, _, run_id = run_context()
        return training.check(settings, snapshot, run_id)

    @step("train")
    @fail_fast
    def train(snapshot: dict) -> dict:
        """Chooses the model configuration by grouped cross-validation on the training
        data (progress: one line per candidate) and fits it on the whole snapshot.

        Log: each candidate's CV ROC-AUC, the chosen one, the training time and where the
        fitted model is (`runs/<run id>/model.skops`)."""
        from genreflow.tasks import training

        settings, _, run_id = run_context()
        return training.train(settings, snapshot, run_id)

    @step("validate")
    @fail_fast
    def validate(trained: dict) -> dict:
        """Scores the new model on valid.csv (never used for training): ROC-AUC
        one-vs-one, song accuracy and macro-F1 (a song's genre is the vote of its
        segments), the weakest genre, and the confusion-matrix figure.

        Fails when valid.csv is missing or does not match this code's features."""
        from genreflow.tasks import training

        settings, _, _ = run_context()
        return training.validate(settings, trained)

    @step("figure", retries=0)
    @best_effort
    def figure(trained: dict) -> dict:
        """Draws the UMAP figure of the training segments (`umap.png`, published with
        the version). Never fails the run: an error, or taking longer than its 10-minute
        limit, is logged as "UMAP figure skipped" and the version is published without
        the figure."""
        from genreflow.tasks import training

        settings, _, _ = run_context()
        return training.figure(settings, trained)

    @step("gate")
    @fail_fast
    def gate(metrics: dict) -> dict:
        """Compares the new model with the current latest one on the same valid.csv:
        PROMOTE unless the current one's ROC-AUC is higher by more than `gate_margin`
        (or `force_publish` is on). Log: the decision and the two scores."""
        from genreflow.tasks import release

        settings, params, _ = run_context()
        return release.gate(settings, metrics, params["gate_margin"], params["force_publish"])

    @step("publish", outlets=[LATEST_MODEL])
    @fail_fast
    def publish(snapshot: dict, trained: dict, metrics: dict, decision: dict,
                figures: dict) -> dict:
        """Writes `models/<version>/` (model, manifest, metrics, figures), checks every
        file's sha256, then moves **latest** to it if the gate said PROMOTE. A refused
        version stays in the registry (Model registry page) and can be rolled back to.

        Log: the version, where it is, whether it became latest, its scores."""
        from genreflow.tasks import release

        settings, _, run_id = run_context()
        result = release.publish(settings, snapshot, trained, metrics, decision, run_id,
                                 figures)
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
    figures = figure(trained)
    metrics >> figures  # after validate: the figure never holds up the scores
    publish(snapshot, trained, metrics, gate(metrics), figures)


genre_retrain()
