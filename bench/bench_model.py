"""Model benchmark: ablation by grouped CV (by track) and fit cost at 10k-100k segments.

    .venv/bin/python bench/bench_model.py                      # synthetic corpus
    .venv/bin/python bench/bench_model.py --audio ../shared/data/gtzan-excerpts/
    .venv/bin/python bench/bench_model.py --audio DIR --imbalance 3 --configs "a,b"
    .venv/bin/python bench/bench_model.py --audio DIR --configs "" --scaling 10000,50000,100000

Features of the audio are cached in bench/out/ (gitignored), so reruns skip extraction.
Fit time is the mean over CV folds; peak memory is tracemalloc's peak of one fit on the
whole table (numpy and Python allocations; C-level buffers inside tree builders are
not counted).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.features.names import FEATURE_NAMES
from genreflow.model import ModelConfig, fit_model
from genreflow.selection import cv_splits, grouped_cv

OUT = Path(__file__).resolve().parent / "out"
PLAIN = ModelConfig(classifier="logreg", C=0.1, generate=False, smote=False, cluster=False)
FULL = replace(PLAIN, generate=True, smote=True, cluster=True)

ABLATION: dict[str, ModelConfig] = {
    "plain logreg C=0.1": PLAIN,
    "+ SMOTE": replace(PLAIN, smote=True),
    "+ cluster one-hot": replace(PLAIN, cluster=True),
    "+ generated": replace(PLAIN, generate=True),
    "+ generated C=0.03": replace(PLAIN, generate=True, C=0.03),
    "+ generated C=0.3": replace(PLAIN, generate=True, C=0.3),
    "full (gen+SMOTE+cluster one-hot)": FULL,
    "full C=0.03": replace(FULL, C=0.03),
    "full cluster ordinal": replace(FULL, cluster_encoding="ordinal"),
    "full gen_keep=1000": replace(FULL, gen_keep=1000),
    "full gen_keep=1000 k=30": replace(FULL, gen_keep=1000, gen_k=30),
    "full all candidates (exp kept)": replace(FULL, gen_rank_distinct=False),
    "gen_keep=1000 no SMOTE/cluster": replace(PLAIN, generate=True, gen_keep=1000),
    "full logreg C=1": replace(FULL, C=1.0),
    "plain logreg C=1": replace(PLAIN, C=1.0),
    "plain extra_trees": replace(PLAIN, classifier="extra_trees"),
    "full extra_trees": replace(FULL, classifier="extra_trees"),
    "plain random_forest": replace(PLAIN, classifier="random_forest"),
    "plain hist_gb (100 it)": replace(PLAIN, classifier="hist_gb", n_estimators=100),
    "default ModelConfig()": ModelConfig(),
}


def cached_features(audio: Path, workers: int) -> pd.DataFrame:
    """Segment table of ``audio/<genre>/<file>``, extracted once into bench/out/."""
    from genreflow.dataset import build_table, labelled_audio

    cache = OUT / f"features-{audio.resolve().name}.parquet"
    if not cache.exists():
        table, failures = build_table(labelled_audio(audio), workers)
        OUT.mkdir(parents=True, exist_ok=True)
        table.to_parquet(cache, index=False)
        logging.info("cached %s (%d failures)", cache, len(failures))
    return pd.read_parquet(cache)


def synthetic_audio(tracks_per_genre: int) -> Path:
    from genreflow.synth import STYLES, write_corpus

    folder = OUT / f"synth-{tracks_per_genre}"
    if not folder.exists():
        write_corpus(folder, list(STYLES), tracks_per_genre, seconds=18.5, seed=7)
    return folder


def peak_fit(table: pd.DataFrame, config: ModelConfig, workers: int) -> tuple[float, float]:
    """(seconds, peak MiB) of one fit on ``table``."""
    tracemalloc.start()
    started = time.perf_counter()
    fit_model(table, config, workers)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def ablation(table: pd.DataFrame, names: list[str], workers: int, repeats: int) -> list[dict]:
    """Each row scored on the same ``repeats`` x 5 grouped folds (different shuffles);
    the difference to the first row is paired by fold (mean +- standard error)."""
    splits = [s for seed in range(repeats) for s in cv_splits(table, 5, seed)]
    rows, first = [], None
    for name in names:
        scores = grouped_cv(table, ABLATION[name], workers, splits)
        _, peak = peak_fit(table, ABLATION[name], workers)
        aucs = np.array([f["roc_auc_ovo"] for f in scores["folds"]])
        first = aucs if first is None else first
        diff = aucs - first  # paired: same folds, so fold-to-fold noise cancels
        rows.append({"config": name, "roc_auc_ovo": scores["roc_auc_ovo"],
                     "d_auc_vs_row1": f"{diff.mean():+.4f} +- {diff.std() / len(diff) ** 0.5:.4f}",
                     "song_accuracy": scores["song_accuracy"],
                     "fit_s": round(scores["fit_seconds"], 2), "peak_MiB": round(peak)})
        print(rows[-1], flush=True)
    return rows


def imbalanced(table: pd.DataFrame, keep: int) -> pd.DataFrame:
    """Every second genre (sorted) cut to its first ``keep`` tracks."""
    cut = sorted(table["genre"].unique())[::2]
    tracks = table.groupby("genre")["track_id"].unique()
    dropped = {t for g in cut for t in sorted(tracks[g])[keep:]}
    return table[~table["track_id"].isin(dropped)].reset_index(drop=True)


def synthetic_rows(table: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` feature rows drawn per genre from the real table's mean and std, 6 per track."""
    rng = np.random.default_rng(seed)
    stats = table.groupby("genre")[FEATURE_NAMES].agg(["mean", "std"])
    genres = rng.choice(stats.index.to_numpy(), n)
    mean = stats.xs("mean", axis=1, level=1).loc[genres].to_numpy()
    std = stats.xs("std", axis=1, level=1).loc[genres].to_numpy()
    frame = pd.DataFrame(mean + std * rng.standard_normal(mean.shape), columns=FEATURE_NAMES)
    frame.insert(0, "genre", genres)
    frame.insert(0, "track_id", [f"t{i // 6}" for i in range(n)])
    return frame


def scaling(table: pd.DataFrame, sizes: list[int], workers: int) -> list[dict]:
    """Fit cost of the default pipeline and of the study's full one."""
    rows = []
    for n in sizes:
        data = synthetic_rows(table, n)
        for name, config in (("default", ModelConfig()), ("full", FULL)):
            seconds, peak = peak_fit(data, config, workers)
            rows.append({"segments": n, "config": name, "fit_s": round(seconds, 1),
                         "peak_MiB": round(peak)})
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, help="labelled clips <genre>/<file>")
    parser.add_argument("--synth-tracks", type=int, default=9, help="synthetic tracks a genre")
    parser.add_argument("--configs", default=",".join(ABLATION),
                        help="comma-separated ablation rows (default: all)")
    parser.add_argument("--scaling", default="", help="e.g. 10000,50000,100000")
    parser.add_argument("--imbalance", type=int, default=0,
                        help="keep only this many tracks of every second genre")
    parser.add_argument("--repeats", type=int, default=3, help="shuffles of the 5 folds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    audio = args.audio or synthetic_audio(args.synth_tracks)
    table = cached_features(audio, args.workers)
    if args.imbalance:
        table = imbalanced(table, args.imbalance)
    print(f"{audio}: {table['track_id'].nunique()} tracks, {len(table)} segments, "
          f"{table['genre'].nunique()} genres", flush=True)
    names = [n for n in args.configs.split(",") if n]
    if names:
        print(markdown(ablation(table, names, args.workers, args.repeats)))
    if args.scaling:
        print(markdown(scaling(table, [int(n) for n in args.scaling.split(",")], args.workers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
