"""Model benchmark: out-of-domain and grouped-CV ablation on real clips; train-step cost.

    .venv/bin/python bench/bench_model.py --protocol cross     # both cross-source directions
    .venv/bin/python bench/bench_model.py --protocol cv-both --repeats 1 --configs "a,b"
    .venv/bin/python bench/bench_model.py --protocol cross --unit track  # song-mean rows
    .venv/bin/python bench/bench_model.py --protocol cv --audio DIR --imbalance 3
    .venv/bin/python bench/bench_model.py --protocol scaling --sizes 10000,100000
    .venv/bin/python bench/bench_model.py --protocol bound --shares 1,0.5,0.25 --seeds 4

Real sets: ../shared/data/gtzan-excerpts and ood-clips (8 shared genres). Rows are
genreflow.model's candidates and variants (one definition). Features are cached in
bench/out/ (gitignored), so reruns skip extraction. Standard errors: bootstrap over test
songs for cross-source rows (the same resamples for every row, so differences to the
first row are paired), fold spread for grouped CV (the same folds for every row).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from genreflow.evaluation import song_genres, song_probabilities, song_votes
from genreflow.features.names import FEATURE_NAMES
from genreflow.features.sets import SETS, columns, present_in, resolve
from genreflow.model import candidates, fit_model, input_frame, variants
from genreflow.selection import cv_splits, select, track_sample

OUT = Path(__file__).resolve().parent / "out"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ABLATION: dict[str, dict] = {**candidates(), **variants()}
OLD_DEFAULT = "old default: raw | generated + SMOTE + cluster | logreg C=0.03"
BOOTSTRAP = 200


def cached_features(audio: Path, workers: int, sets=SETS) -> pd.DataFrame:
    """Segment table of ``audio/<genre>/<file>`` with every feature set in ``sets``, each
    extracted once into bench/out/."""
    from genreflow.dataset import KEY_COLUMNS, build_table, labelled_audio

    table = None
    for feature_set in resolve(sets):
        cache = OUT / f"features-{audio.resolve().name}-{feature_set.id}.parquet"
        if not cache.exists():
            part, failures = build_table(labelled_audio(audio), workers, [feature_set.name])
            OUT.mkdir(parents=True, exist_ok=True)
            part.to_parquet(cache, index=False)
            logging.info("cached %s (%d failures)", cache, len(failures))
        part = pd.read_parquet(cache)
        table = part if table is None else table.merge(part, on=KEY_COLUMNS, validate="1:1")
    return table


def synthetic_audio(tracks_per_genre: int) -> Path:
    from genreflow.synth import STYLES, write_corpus

    folder = OUT / f"synth-{tracks_per_genre}"
    if not folder.exists():
        write_corpus(folder, list(STYLES), tracks_per_genre, seconds=18.5, seed=7)
    return folder


def track_means(table: pd.DataFrame) -> pd.DataFrame:
    """One row per track: the mean of its segments' features (track-level statistics)."""
    means = table.groupby("track_id")[FEATURE_NAMES].mean()
    genre = table.groupby("track_id")["genre"].first()
    return means.assign(genre=genre).reset_index()[["track_id", "genre", *FEATURE_NAMES]]


class Outcome:
    """Predictions of one fitted model on one test table, scorable on any resample of
    its songs: segment ROC-AUC ovo, song accuracy by soft vote and by majority vote, and
    song ROC-AUC ovo (on each song's mean segment probabilities)."""

    def __init__(self, model, test: pd.DataFrame):
        proba = model.predict_proba(input_frame(model, test))
        classes = [str(c) for c in model.classes_]
        self.songs = test["track_id"].to_numpy()
        self.y = test["genre"].astype(str).to_numpy()
        self.present = sorted(set(self.y))
        scores = proba[:, [classes.index(c) for c in self.present]]
        self.scores = scores / scores.sum(axis=1, keepdims=True)
        truth = test.groupby("track_id")["genre"].first().astype(str)
        soft = song_genres(song_probabilities(self.songs, proba, classes))
        votes = song_votes(self.songs, np.asarray(classes)[proba.argmax(axis=1)])
        self.song_ids = truth.index.to_numpy()
        codes = pd.Index(self.song_ids).get_indexer(self.songs)
        self.rows = [np.flatnonzero(codes == i) for i in range(len(self.song_ids))]
        self.soft = soft.loc[self.song_ids].to_numpy()
        self.soft_ok = self.soft == truth.to_numpy()
        self.song_y = truth.to_numpy()
        self.song_scores = np.array([self.scores[r].mean(axis=0) for r in self.rows])
        self.vote_ok = (votes.loc[self.song_ids] == truth).to_numpy()

    def metrics(self, songs: np.ndarray | None = None) -> np.ndarray:
        """(auc, soft, majority, song auc) on the songs at positions ``songs`` (default:
        all)."""
        from sklearn.metrics import roc_auc_score

        songs = np.arange(len(self.song_ids)) if songs is None else songs
        rows = np.concatenate([self.rows[i] for i in songs])
        y = self.y[rows]
        complete = len(set(y)) == len(self.present)
        auc = (roc_auc_score(y, self.scores[rows], multi_class="ovo", labels=self.present)
               if complete else np.nan)
        song_auc = (roc_auc_score(self.song_y[songs], self.song_scores[songs],
                                  multi_class="ovo", labels=self.present)
                    if complete else np.nan)
        return np.array([auc, self.soft_ok[songs].mean(), self.vote_ok[songs].mean(),
                         song_auc])

    def confusion(self) -> list[dict]:
        """Songs by true genre (rows) and soft-vote genre (columns): where the misses go."""
        table = pd.crosstab(pd.Series(self.song_y, name="true"), pd.Series(self.soft))
        table = table.reindex(index=self.present, columns=self.present, fill_value=0)
        return [{"true \\ predicted": genre, **counts.to_dict(),
                 "song accuracy": f"{counts[genre] / counts.sum():.2f}"}
                for genre, counts in table.iterrows()]


METRICS = ("roc_auc_ovo", "song_acc_soft", "song_acc_majority", "song_roc_auc_ovo")


def cross_domain(train: pd.DataFrame, test: pd.DataFrame, names: list[str]) -> list[dict]:
    """Fit on ``train``, score on ``test``; standard errors by bootstrap over test songs
    (the same resamples for every row, so differences to the first row are paired)."""
    n_songs = test["track_id"].nunique()
    draws = np.random.default_rng(0).integers(0, n_songs, size=(BOOTSTRAP, n_songs))
    rows, first = [], None
    for name in names:
        outcome = Outcome(fit_model(train, ABLATION[name]), test)
        point = outcome.metrics()
        boot = np.array([outcome.metrics(d) for d in draws])
        if first is None:
            first, confusion = boot, outcome.confusion()
        rows.append(row(name, point, np.nanstd(boot, axis=0), np.nanstd(boot - first, axis=0),
                        point - (rows[0]["_point"] if rows else point)))
        print(rows[-1]["config"], rows[-1]["roc_auc_ovo"], rows[-1]["song_acc_soft"], flush=True)
    rows[0]["_confusion"] = confusion
    return rows


def in_domain(table: pd.DataFrame, names: list[str], repeats: int) -> list[dict]:
    """Grouped CV, 5 folds (fewer if a genre has fewer tracks) x ``repeats`` shuffles,
    the same folds for every row; standard errors from the fold spread."""
    splits = cv_splits(table, 5, repeats)
    rows, first = [], None
    for name in names:
        folds = np.array([Outcome(fit_model(table.iloc[a], ABLATION[name]),
                                  table.iloc[b]).metrics() for a, b in splits])
        first = folds if first is None else first
        n = len(folds) ** 0.5
        rows.append(row(name, folds.mean(axis=0), folds.std(axis=0) / n,
                        (folds - first).std(axis=0) / n, (folds - first).mean(axis=0)))
        print(rows[-1]["config"], rows[-1]["roc_auc_ovo"], rows[-1]["song_acc_soft"], flush=True)
    return rows


def row(name: str, point, se, diff_se, diff) -> dict:
    cells = {m: f"{p:.3f} +- {s:.3f}" for m, p, s in zip(METRICS, point, se, strict=True)}
    return {"config": name, **cells,
            "d_auc_vs_row1": f"{diff[0]:+.3f} +- {diff_se[0]:.3f}",
            "d_song_soft_vs_row1": f"{diff[1]:+.3f} +- {diff_se[1]:.3f}", "_point": point}


def imbalanced(table: pd.DataFrame, keep: int) -> pd.DataFrame:
    """Every second genre (sorted) cut to its first ``keep`` tracks."""
    cut = sorted(table["genre"].unique())[::2]
    tracks = table.groupby("genre")["track_id"].unique()
    dropped = {t for g in cut for t in sorted(tracks[g])[keep:]}
    return table[~table["track_id"].isin(dropped)].reset_index(drop=True)


def synthetic_rows(table: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` feature rows drawn per genre from the real table's mean and std, 10 per track
    (power features stay positive: drawn in dB, as the model sees them)."""
    from genreflow.compression import POWER_FEATURES

    names = columns(present_in(table.columns))
    rng = np.random.default_rng(seed)
    real = table.copy()
    power = list(POWER_FEATURES)
    real[power] = np.log10(np.maximum(real[power].to_numpy(), 1e-10))
    stats = real.groupby("genre")[names].agg(["mean", "std"])
    genres = np.repeat(rng.choice(stats.index.to_numpy(), -(-n // 10)), 10)[:n]
    mean = stats.xs("mean", axis=1, level=1).loc[genres].to_numpy()
    std = stats.xs("std", axis=1, level=1).loc[genres].to_numpy()
    frame = pd.DataFrame(mean + std * rng.standard_normal(mean.shape), columns=names)
    frame[power] = 10.0 ** frame[power]
    ids = pd.DataFrame({"track_id": [f"t{i // 10}" for i in range(n)], "genre": genres})
    return pd.concat([ids, frame], axis=1)


def scaling(table: pd.DataFrame, sizes: list[int], workers: int) -> list[dict]:
    """Time of the train step (bounded selection + one fit on all rows) at ``sizes``."""
    rows = []
    for n in sizes:
        data = synthetic_rows(table, n)
        started = time.perf_counter()
        name, record = select(data, workers)
        selected = time.perf_counter() - started
        fit_model(data, ABLATION[name])
        total = time.perf_counter() - started
        rows.append({"segments": n, "searched_segments": record["n_segments"],
                     "folds": record["n_splits"], "select_s": round(selected),
                     "train_step_s": round(total), "chosen": name})
        print(rows[-1], flush=True)
    return rows


def bound_cost(train: pd.DataFrame, test: pd.DataFrame, shares: list[float], seeds: int,
               workers: int) -> list[dict]:
    """What selecting on a sample of tracks costs: the candidate chosen on a ``share`` of
    ``train``'s tracks (``seeds`` different samples), fitted on all of ``train``, scored on
    ``test`` from another source, against the choice made on every track."""
    scores: dict[str, float] = {}

    def auc(name: str) -> float:
        if name not in scores:
            scores[name] = Outcome(fit_model(train, ABLATION[name]), test).metrics()[0]
        return scores[name]

    full_name = select(train, workers)[0]
    full = auc(full_name)
    rows = []
    for share in shares:
        chosen = [full_name] if share >= 1 else [
            select(track_sample(train, int(share * len(train)), seed), workers)[0]
            for seed in range(seeds)]
        cost = np.array([auc(name) for name in chosen]) - full
        rows.append({
            "searched_share": f"{share:.0%}", "samples": len(chosen),
            "same_choice_as_all_tracks": f"{chosen.count(full_name)}/{len(chosen)}",
            "roc_auc_ovo_out_of_domain": f"{full + cost.mean():.3f}",
            "d_vs_all_tracks": f"{cost.mean():+.3f} (worst {cost.min():+.3f})",
            "choices": "; ".join(f"{chosen.count(n)}x {n}" for n in dict.fromkeys(chosen))})
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    head = [k for k in rows[0] if not k.startswith("_")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]).replace("|", "\\|") for k in head) + " |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="ood",
                        choices=("ood", "cross", "cv-both", "cv", "scaling", "bound"),
                        help="ood: cross + cv-both; cross: train on one real set, test on "
                             "the other, both directions; cv-both: grouped CV inside each; "
                             "cv: grouped CV on --audio only; scaling: train-step time; "
                             "bound: out-of-domain cost of selecting on a sample")
    parser.add_argument("--audio", type=Path, help="labelled clips <genre>/<file> (cv)")
    parser.add_argument("--configs", default=",".join([OLD_DEFAULT, *ABLATION.keys() - {
                        OLD_DEFAULT}]), help="comma-separated rows (default: the old default, "
                        "then every candidate and variant)")
    parser.add_argument("--unit", choices=("segment", "track"), default="segment",
                        help="track: one row per song, the mean of its segments")
    parser.add_argument("--sizes", default="10000,50000,100000", help="scaling: segments")
    parser.add_argument("--shares", default="1,0.5,0.25",
                        help="bound: shares of the training tracks the search sees")
    parser.add_argument("--seeds", type=int, default=4, help="bound: samples per share")
    parser.add_argument("--imbalance", type=int, default=0,
                        help="keep only this many tracks of every second genre")
    parser.add_argument("--repeats", type=int, default=2, help="shuffles of the CV folds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in args.configs.split(",") if n]
    unit = track_means if args.unit == "track" else (lambda t: t)
    if args.protocol == "cv":
        table = cached_features(args.audio or synthetic_audio(9), args.workers)
        table = unit(imbalanced(table, args.imbalance) if args.imbalance else table)
        print(markdown(in_domain(table, names, args.repeats)))
        return 0
    gtzan = cached_features(DATA / "gtzan-excerpts", args.workers)
    if args.protocol == "scaling":
        print(markdown(scaling(gtzan, [int(n) for n in args.sizes.split(",")], args.workers)))
        return 0
    ood = cached_features(DATA / "ood-clips", args.workers)
    shared = sorted(set(gtzan["genre"]) & set(ood["genre"]))
    gtzan, ood = (unit(t[t["genre"].isin(shared)].reset_index(drop=True)) for t in (gtzan, ood))
    shares = [float(x) for x in args.shares.split(",")]
    protocols = [
        ("bound", "selection on a sample of gtzan-excerpts' tracks -> test ood-clips",
         lambda: bound_cost(gtzan, ood, shares, args.seeds, args.workers)),
        ("bound", "selection on a sample of ood-clips' tracks -> test gtzan-excerpts",
         lambda: bound_cost(ood, gtzan, shares, args.seeds, args.workers)),
        ("cross", "train gtzan-excerpts -> test ood-clips",
         lambda: cross_domain(gtzan, ood, names)),
        ("cross", "train ood-clips -> test gtzan-excerpts",
         lambda: cross_domain(ood, gtzan, names)),
        ("cv-both", "grouped CV inside gtzan-excerpts",
         lambda: in_domain(gtzan, names, args.repeats)),
        ("cv-both", "grouped CV inside ood-clips", lambda: in_domain(ood, names, args.repeats)),
    ]
    for _, title, rows in (p for p in protocols if args.protocol in ("ood", p[0])):
        print(f"\n### {title} ({len(shared)} shared genres, unit: {args.unit})\n")
        table = rows()
        print(markdown(table), flush=True)
        if "_confusion" in table[0]:
            print(f"\nSongs of row 1 by true and predicted genre:\n\n"
                  f"{markdown(table[0]['_confusion'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
