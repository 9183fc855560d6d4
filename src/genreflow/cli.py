"""The ``genreflow`` command: demo data, validation tables, the model registry, predict,
the licences of what a model was trained on."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from genreflow import registry
from genreflow.config import load_settings
from genreflow.errors import PermanentError

log = logging.getLogger("genreflow.cli")

DEMO_TRACKS_PER_GENRE = 8
DEMO_VALID_TRACKS_PER_GENRE = 3
DEMO_TRAIN_SEED, DEMO_VALID_SEED = 1, 2


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthesise the demo inbox and valid.csv (skipped when they already exist)."""
    from genreflow.dataset import is_current_valid_table
    from genreflow.synth import write_corpus

    settings = load_settings()
    demo = Path(args.dest) if args.dest else settings.demo_dir
    inbox, valid_audio, valid_csv = demo / "inbox", demo / "valid-audio", demo / "valid.csv"
    if not inbox.is_dir():
        write_corpus(inbox, settings.genres, args.tracks, seed=DEMO_TRAIN_SEED)
    if not valid_csv.is_file() or not is_current_valid_table(valid_csv, settings.feature_sets):
        write_corpus(valid_audio, settings.genres, args.valid_tracks, seed=DEMO_VALID_SEED,
                     prefix="valid_")
        build_valid_csv(valid_audio, valid_csv, settings.genres, settings.workers,
                        settings.feature_sets)
    print(f"demo inbox: {inbox}\ndemo valid.csv: {valid_csv}")
    return 0


class BadArgument(PermanentError, ValueError):
    """A path given to a command cannot be used; checked before any slow work."""


def check_output_file(dest: Path) -> None:
    """A file can be written at ``dest``: not a folder, nor under a file."""
    if dest.is_dir():
        raise BadArgument(f"{dest} is a folder; give the path of a file to write")
    parent = next((p for p in dest.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise BadArgument(f"{dest}: {parent} is a file, not a folder")


def build_valid_csv(folder: Path, dest: Path, genres, workers: int,
                    sets=("librosa",)) -> None:
    """valid.csv of labelled audio with every feature set the pipeline computes."""
    from genreflow.dataset import (
        build_table,
        check_table,
        labelled_audio,
        with_audio_hashes,
        write_valid_table,
    )

    check_output_file(dest)
    if not folder.is_dir():
        raise BadArgument(f"{folder} does not exist or is not a folder of <genre>/<file> audio")
    items = labelled_audio(folder)
    unknown = sorted({genre for _, genre, _ in items} - set(genres))
    if unknown:
        raise BadArgument(f"{folder}: unknown genre folder(s) {unknown}; configured: {genres}")
    table, failures = build_table(items, workers, sets)
    table = with_audio_hashes(table, items)
    check_table(table, genres, str(dest), sets)
    write_valid_table(table, dest, sets)
    print(f"wrote {dest}: {table['track_id'].nunique()} tracks, {len(table)} segments, "
          f"{len(failures)} failed")
    for failure in failures:
        print(f"  failed {failure['track_id']}: {failure['reason']}")


def cmd_valid_table(args: argparse.Namespace) -> int:
    settings = load_settings()
    build_valid_csv(Path(args.folder), Path(args.output), settings.genres, args.workers
                    or settings.workers, settings.feature_sets)
    return 0


def _store(args: argparse.Namespace):
    from genreflow.storage import open_store

    return open_store(args.store or load_settings().store)


PROMOTED = {True: "promoted", False: "not promoted", None: "promotion unknown"}


def cmd_models(args: argparse.Namespace) -> int:
    """Every version, newest first as on the registry page (the same rows), broken ones
    with their problem; a broken latest.json is listed too, then reported as the error
    (exit 1) so scripts notice it."""
    store = _store(args)
    rows = registry.version_summaries(store)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no models in {store.uri}")
    for row in [] if args.json else rows:
        mark = "*" if row["latest"] else " "
        if "error" in row:
            print(f"{mark} {row['version']}  BROKEN: {row['error']}")
            continue
        cv = (f"CV {_number(row['cv_roc_auc_ovo'])} +- {_number(row['cv_roc_auc_ovo_std'])}"
              if row.get("cv_roc_auc_ovo") is not None else "CV n/a")
        gate = {True: "promote", False: "refuse", None: "n/a"}[row["gate_promote"]]
        print(f"{mark} {row['version']}  ROC-AUC {_number(row['roc_auc_ovo'])}  song accuracy "
              f"{_number(row['song_accuracy'])}  macro-F1 {_number(row['song_macro_f1'])}  "
              f"{PROMOTED[row['promoted']]}  {row['location']}\n"
              f"    {row.get('model_name') or 'model n/a'}; features "
              f"{' + '.join(row['feature_sets'])}; {cv}; "
              f"{row.get('n_training_segments') or 'n/a'} training segments"
              f"{'; SYNTHETIC demo corpus' if row.get('synthetic_demo') else ''}\n"
              f"    gate: {gate}: {row['gate_reason'] or 'no reason recorded'}; "
              f"run {row['run_id'] or 'n/a'}")
    registry.read_latest(store)  # a broken pointer: rows listed above, then the one-line error
    return 0


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def check_pull_dest(dest: Path, replace: bool) -> None:
    """A folder ``pull --dest`` may write into: absent, empty, or (``replace``) one whose
    files of the same names the user agreed to lose; never a file or under one."""
    check_output_file(dest / registry.MODEL_FILE)
    if dest.is_dir() and any(dest.iterdir()) and not replace:
        raise BadArgument(f"{dest} is not empty; give an empty or new folder, or --replace "
                          "to overwrite the files of the pulled version there")


def cmd_pull(args: argparse.Namespace) -> int:
    from genreflow import serving

    store = _store(args)
    if args.dest:
        check_pull_dest(Path(args.dest), args.replace)
    version, manifest = registry.resolve(store, args.version)
    dest = Path(args.dest) if args.dest else serving.cache_dir(store, version)
    contents = serving.download(store, version, manifest, dest)
    print(f"pulled {version}: {len(contents)} files, sha256 and model types verified "
          f"-> {dest}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Every file through serving's features and classify, as `genreflow serve` answers."""
    from genreflow import serving

    served, outcomes = serving.predict_files(_store(args), args.version,
                                             [Path(name) for name in args.files])
    if served.synthetic_demo:
        log.warning("model %s was trained on the synthetic demo corpus (`genreflow demo`): "
                    "its genres say nothing about real music; train on real audio first",
                    served.version)
    results, failed = [], 0
    for name, outcome in zip(args.files, outcomes, strict=True):
        if isinstance(outcome, Exception):
            failed += 1
            print(f"genreflow: error: {outcome}", file=sys.stderr)  # names the file
            outcome = {"file": name, "error": f"{type(outcome).__name__}: {outcome}",
                       "version": served.version, "synthetic_demo": served.synthetic_demo}
        results.append(outcome)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for row in (r for r in results if "error" not in r):
            top = ", ".join(f"{g} {p:.3f}" for g, p in list(row["probabilities"].items())[:3])
            print(f"{row['file']}: {row['genre']} ({row['segments']} segments)  top-3: {top}")
    log.info("predicted %d file(s) with model %s, %d failed", len(results) - failed,
             served.version, failed)
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """An HTTP server following latest (genreflow.server); the token only from the
    environment, so it never shows in a process list."""
    from genreflow.server import ENV_TOKEN, Limits, serve

    if min(args.workers, args.pending) < 1 or min(args.max_upload_mb, args.max_seconds,
                                                   args.upload_timeout) <= 0:
        print("genreflow: error: --workers and --pending need at least 1, the limits a "
              "positive number", file=sys.stderr)
        return 2
    limits = Limits(max_bytes=int(args.max_upload_mb * 1_000_000), max_seconds=args.max_seconds,
                    upload_timeout=args.upload_timeout, pending=args.pending,
                    workers=args.workers)
    serve(_store(args), args.host, args.port, limits, poll=args.poll,
          token=os.environ.get(ENV_TOKEN) or None)
    return 0


def cmd_warm_cache(args: argparse.Namespace) -> int:
    import time

    from genreflow.extraction import warm_numba_cache

    started = time.perf_counter()
    warm_numba_cache()
    print(f"numba cache warm ({os.environ.get('NUMBA_CACHE_DIR') or 'beside the sources'}) "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    store = _store(args)
    done = registry.rollback(store, args.version)
    gate = done["manifest"].get("gate") or {}
    if gate.get("promote") is False:
        log.warning("%s was refused by its gate: %s", args.version,
                    gate.get("reason", "no reason recorded"))
    if done["repaired"]:
        log.warning("replaced a broken pointer: %s", done["repaired"])
    print(f"latest: {done['previous'] or ('broken' if done['repaired'] else None)} -> "
          f"{args.version}")
    return 0


def cmd_licences(args: argparse.Namespace) -> int:
    """Every training track of a version with its licence, for attribution."""
    from genreflow.attribution import licence_counts, trained_on

    version, rows = trained_on(_store(args), args.version)
    if args.json:
        print(json.dumps({"version": version, "tracks": rows}, indent=2))
        return 0
    print(f"model {version}: trained on {len(rows)} tracks")
    for licence, count in licence_counts(rows).items():
        print(f"  {count:5d}  {licence}")
    for row in rows:
        credit = " - ".join(v for v in (row["artist"], row["title"]) if v) or row["key"]
        print(f"{row['track_id']}  {row['genre']:<12} {credit}\n"
              f"    licence: {row['licence_url'] or 'none recorded'}"
              f"{'  source: ' + row['source_url'] if row['source_url'] else ''}"
              f"  key: {row['key']}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from genreflow.reproduce import reproduce
    from genreflow.storage import split_uri

    settings = load_settings()
    valid_store, valid_name = split_uri(args.valid_csv or settings.valid_csv)
    result = reproduce(_store(args), args.version, valid_store.read_bytes(valid_name),
                       settings.genres)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.reproduced:
        print(f"{args.version}: reproduced: the same metrics "
              + ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
              + f" and the same probabilities (largest difference "
              f"{result.max_probability_difference:.1e})")
    else:
        print(f"{args.version}: NOT reproduced:")
        for difference in result.differences:
            print(f"  {difference}")
    return 0 if result.reproduced else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genreflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthesise the demo inbox and valid.csv")
    demo.add_argument("--dest", help="folder (default: var/demo in the project)")
    demo.add_argument("--tracks", type=int, default=DEMO_TRACKS_PER_GENRE)
    demo.add_argument("--valid-tracks", type=int, default=DEMO_VALID_TRACKS_PER_GENRE)
    demo.set_defaults(func=cmd_demo)

    valid = sub.add_parser("valid-table", help="build valid.csv from <genre>/<file> audio")
    valid.add_argument("folder")
    valid.add_argument("-o", "--output", default="valid.csv")
    valid.add_argument("--workers", type=int)
    valid.set_defaults(func=cmd_valid_table)

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", help="store URI (default: GENREFLOW_STORE)")

    models = sub.add_parser("models", parents=[store], help="list published model versions")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    pull = sub.add_parser("pull", parents=[store], help="download a model, sha256 verified")
    pull.add_argument("--version", help="version (default: latest)")
    pull.add_argument("--dest", help="folder (default: the cache, $GENREFLOW_CACHE); "
                      "refused when not empty, unless --replace")
    pull.add_argument("--replace", action="store_true",
                      help="in a non-empty --dest, overwrite the version's files (only those)")
    pull.set_defaults(func=cmd_pull)

    predict = sub.add_parser("predict", parents=[store], help="genre of audio files")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--version", help="version (default: latest)")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(func=cmd_predict)

    serve = sub.add_parser("serve", parents=[store], help="an HTTP server classifying uploads "
                           "with the latest model, following latest as it moves")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: loopback only); elsewhere, set "
                       "GENREFLOW_SERVE_TOKEN to require a bearer token")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=2, help="feature worker processes")
    serve.add_argument("--max-upload-mb", type=float, default=20.0)
    serve.add_argument("--max-seconds", type=float, default=600.0,
                       help="longest audio accepted, read from the file's header")
    serve.add_argument("--upload-timeout", type=float, default=30.0,
                       help="seconds an upload may take to arrive")
    serve.add_argument("--pending", type=int, default=8,
                       help="uploads held in memory at once (more wait, unread)")
    serve.add_argument("--poll", type=float, default=2.0,
                       help="seconds between reads of latest.json (0: every request)")
    serve.set_defaults(func=cmd_serve)

    licences = sub.add_parser("licences", parents=[store],
                              help="the tracks a model was trained on, with their licences")
    licences.add_argument("--version", help="version (default: latest)")
    licences.add_argument("--json", action="store_true")
    licences.set_defaults(func=cmd_licences)

    warm = sub.add_parser("warm-cache", help="compile the feature extractor's numba kernels "
                          "once (before parallel extraction; run by make install)")
    warm.set_defaults(func=cmd_warm_cache)

    again = sub.add_parser("reproduce", parents=[store], help="retrain a published version "
                           "from its record and say whether its numbers come out the same")
    again.add_argument("version")
    again.add_argument("--valid-csv", help="valid.csv to score on (default: the configured)")
    again.add_argument("--json", action="store_true")
    again.set_defaults(func=cmd_reproduce)

    rollback = sub.add_parser("rollback", parents=[store],
                              help="point latest at another complete, untampered version")
    rollback.add_argument("version")
    rollback.set_defaults(func=cmd_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; configuration, registry, storage and data errors print one line and
    exit 1. A reader that stops reading (``| head``) ends the command quietly."""
    from genreflow.storage import StoreError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except (PermanentError, StoreError) as exc:
        print(f"genreflow: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 128 + 13  # as a command killed by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
