"""The ``genreflow`` command: demo data, validation tables, and the model registry."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from genreflow.config import load_settings

log = logging.getLogger("genreflow.cli")

DEMO_TRACKS_PER_GENRE = 8
DEMO_VALID_TRACKS_PER_GENRE = 3
DEMO_TRAIN_SEED, DEMO_VALID_SEED = 1, 2


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthesise the demo inbox and valid.csv (skipped when they already exist)."""
    from genreflow.synth import write_corpus

    settings = load_settings()
    demo = Path(args.dest) if args.dest else settings.demo_dir
    inbox, valid_audio, valid_csv = demo / "inbox", demo / "valid-audio", demo / "valid.csv"
    if not inbox.is_dir():
        write_corpus(inbox, settings.genres, args.tracks, seed=DEMO_TRAIN_SEED)
    if not valid_csv.is_file():
        write_corpus(valid_audio, settings.genres, args.valid_tracks, seed=DEMO_VALID_SEED,
                     prefix="valid_")
        build_valid_csv(valid_audio, valid_csv, settings.genres, settings.workers)
    print(f"demo inbox: {inbox}\ndemo valid.csv: {valid_csv}")
    return 0


def build_valid_csv(folder: Path, dest: Path, genres, workers: int) -> None:
    from genreflow.dataset import build_table, check_table, labelled_audio

    items = labelled_audio(folder)
    unknown = sorted({genre for _, genre, _ in items} - set(genres))
    if unknown:
        raise SystemExit(f"{folder}: unknown genre folder(s) {unknown}; configured: {genres}")
    table, failures = build_table(items, workers)
    check_table(table, genres, str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(dest, index=False)
    print(f"wrote {dest}: {table['track_id'].nunique()} tracks, {len(table)} segments, "
          f"{len(failures)} failed")
    for failure in failures:
        print(f"  failed {failure['track_id']}: {failure['reason']}")


def cmd_valid_table(args: argparse.Namespace) -> int:
    settings = load_settings()
    build_valid_csv(Path(args.folder), Path(args.output), settings.genres, args.workers
                    or settings.workers)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from genreflow.registry import MODELS_PREFIX, read_latest, read_manifest
    from genreflow.storage import open_store

    store = open_store(args.store or load_settings().store)
    latest = (read_latest(store) or {}).get("version")
    versions = sorted({k.split("/")[1] for k in store.list_keys(f"{MODELS_PREFIX}/")
                       if k.endswith("/manifest.json")})
    rows = []
    for version in versions:
        manifest = read_manifest(store, version)
        rows.append({
            "version": version, "latest": version == latest, "promoted": manifest["promoted"],
            "roc_auc_ovo": manifest["metrics"]["roc_auc_ovo"],
            "song_accuracy": manifest["metrics"]["song_accuracy"],
            "location": store.location(f"{MODELS_PREFIX}/{version}/"),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no models in {store.uri}")
    for row in rows if not args.json else []:
        mark = "*" if row["latest"] else " "
        print(f"{mark} {row['version']}  ROC-AUC {row['roc_auc_ovo']:.4f}  song accuracy "
              f"{row['song_accuracy']:.4f}  {'promoted' if row['promoted'] else 'not promoted'}"
              f"  {row['location']}")
    return 0


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

    models = sub.add_parser("models", help="list published model versions")
    models.add_argument("--store", help="store URI (default: GENREFLOW_STORE)")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
