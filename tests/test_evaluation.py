"""Validation report: metrics by hand, figures, and the check/train/validate steps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from genreflow import registry
from genreflow.checks import CheckFailed
from genreflow.compression import POWER_FEATURES
from genreflow.config import load_settings
from genreflow.dataset import TableError, write_valid_table
from genreflow.evaluation import (
    evaluate,
    metrics_block,
    song_genres,
    song_probabilities,
    song_votes,
)
from genreflow.model import candidates, usable
from genreflow.storage import KeyNotFound, LocalStore
from genreflow.tasks import training

GENRES = ("classical", "metal", "electronic")
SHIFT = {c: 4.0 for c in range(0, 60, 3)}
PNG = b"\x89PNG\r\n\x1a\n"


def test_song_votes_by_hand():
    votes = song_votes(np.array(["s1", "s1", "s1", "s2", "s2"]),
                       np.array(["jazz", "rock", "rock", "pop", "blues"]))
    assert votes.to_dict() == {"s1": "rock", "s2": "blues"}  # a tie goes to the first name
    assert votes.index.tolist() == ["s1", "s2"]


def test_soft_vote_by_hand():
    """The song decision of validation and of `genreflow predict`: mean probabilities."""
    proba = np.array([[0.6, 0.4], [0.0, 1.0], [0.6, 0.4],  # s1: 2 of 3 votes for jazz ...
                      [0.5, 0.5], [0.5, 0.5]])              # s2: a tie
    songs = song_probabilities(["s1", "s1", "s1", "s2", "s2"], proba, ["jazz", "rock"])
    np.testing.assert_allclose(songs.loc["s1"], [0.4, 0.6])
    assert song_genres(songs).to_dict() == {"s1": "rock", "s2": "jazz"}  # ... rock by mean


class Fixed:
    """A model whose segment probabilities are columns of the table (blues, jazz, pop,
    rock), so every metric can be worked out by hand."""

    classes_ = np.array(["blues", "jazz", "pop", "rock"])
    named_steps = {"select": "every column"}  # input_frame hands it the whole table

    def predict_proba(self, table):
        return table[[f"p_{c}" for c in self.classes_]].to_numpy()


def fixed_table():
    """4 songs of 2 segments; pop is no validation genre. Segment votes: s1 blues, jazz;
    s2 jazz, rock; s3 blues, rock; s4 blues, blues (a tie goes to the first class). Song
    means: s1 blues, s2 jazz, s3 rock, s4 blues (wrong)."""
    import pandas as pd

    rows = [("s1", "blues", [0.7, 0.2, 0.0, 0.1]), ("s1", "blues", [0.2, 0.5, 0.0, 0.3]),
            ("s2", "jazz", [0.1, 0.8, 0.0, 0.1]), ("s2", "jazz", [0.2, 0.2, 0.2, 0.4]),
            ("s3", "rock", [0.6, 0.1, 0.0, 0.3]), ("s3", "rock", [0.1, 0.2, 0.0, 0.7]),
            ("s4", "rock", [0.5, 0.4, 0.0, 0.1]), ("s4", "rock", [0.4, 0.4, 0.0, 0.2])]
    return pd.DataFrame([{"track_id": t, "genre": g, "segment": i % 2,
                          **{f"p_{c}": p for c, p in zip(Fixed.classes_, ps, strict=True)}}
                         for i, (t, g, ps) in enumerate(rows)])


def pair_auc(positive, negative) -> float:
    """The chance a positive scores above a negative, ties counting half."""
    wins = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    return sum(wins) / len(wins)


def test_evaluate_by_hand():
    table = fixed_table()
    metrics = evaluate(Fixed(), table)
    present = ["blues", "jazz", "rock"]
    scores = table[[f"p_{c}" for c in present]].to_numpy()
    scores = scores / scores.sum(axis=1, keepdims=True)  # over the genres validated
    genre = table["genre"].to_numpy()
    pairs = [(a, b) for a in range(3) for b in range(a + 1, 3)]
    ovo = np.mean([(pair_auc(scores[genre == present[a], a], scores[genre == present[b], a])
                    + pair_auc(scores[genre == present[b], b], scores[genre == present[a], b]))
                   / 2 for a, b in pairs])
    assert metrics["roc_auc_ovo"] == round(ovo, 6)
    assert (metrics["segment_accuracy"], metrics["song_accuracy"]) == (0.375, 0.75)
    assert metrics["song_macro_f1"] == round((2 / 3 + 1 + 2 / 3) / 3, 6)  # blues jazz rock
    assert (metrics["n_segments"], metrics["n_songs"]) == (8, 4)
    assert metrics["confusion_matrix"] == {
        "labels": ["blues", "jazz", "pop", "rock"],
        "songs": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]],
        "segments": [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [3, 0, 0, 1]]}
    per_genre = metrics["per_genre"]
    assert (per_genre["blues"]["precision"], per_genre["rock"]["recall"]) == (0.5, 0.5)
    assert (per_genre["pop"]["support"], per_genre["pop"]["f1-score"]) == (0, 0.0)


def test_two_genres_are_scored_by_the_second_ones_share_of_the_pair():
    """s1 blues, s2 jazz: jazz / (blues + jazz) is 0.22, 0.71 on blues, 0.89, 0.5 on jazz
    segments: 3 of 4 pairs ordered right."""
    table = fixed_table().iloc[:4]
    assert evaluate(Fixed(), table)["roc_auc_ovo"] == 0.75


def test_metrics_are_rounded_to_six_decimals():
    """s2 jazz, s3 and s4 rock: 2 of 3 songs and 2 of 6 segments right; F1 0 (blues,
    predicted once, never true), 1 (jazz), 2/3 (rock)."""
    metrics = evaluate(Fixed(), fixed_table().iloc[2:])
    assert (metrics["song_accuracy"], metrics["segment_accuracy"], metrics["song_macro_f1"]) \
        == (0.666667, 0.333333, 0.555556)


def test_evaluate_refuses_what_it_cannot_score():
    table = fixed_table().iloc[:4]
    with pytest.raises(TableError) as refused:
        evaluate(Fixed(), table.iloc[:2])
    assert str(refused.value) == "validation songs of 1 genre ['blues']: ROC-AUC needs 2"
    with pytest.raises(TableError) as refused:
        evaluate(Fixed(), table.assign(genre=["jazz", "soul", "soul", "folk"]))
    assert str(refused.value) == "validation genres ['folk', 'soul'] were never seen in training"


@pytest.fixture(scope="module")
def steps_run(tmp_path_factory, genres_config):
    """check -> train -> validate on a local store, with a champion to drift against."""
    from conftest import segment_table as normal_table

    def segment_table(*args, **kwargs):
        """Power features (mel, RMS) are positive in real tables: log-normal here."""
        table = normal_table(*args, **kwargs)
        table[list(POWER_FEATURES)] = np.exp(table[list(POWER_FEATURES)])
        return table.copy()  # one block again after the column update

    root = tmp_path_factory.mktemp("steps")
    store = LocalStore(root / "store")
    old = segment_table(GENRES, tracks=3, seed=5, shift=SHIFT, prefix="old")
    store.write_frame("snapshots/old.parquet", old)
    registry.publish(store, "v0", {"model.skops": b"x"},
                     {"snapshot_key": "snapshots/old.parquet"}, promote=True)
    table = segment_table(GENRES, tracks=3, shift=SHIFT)
    store.write_frame("snapshots/new.parquet", table)
    write_valid_table(segment_table(GENRES, tracks=2, seed=7, shift=SHIFT, prefix="v"),
                      root / "valid.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENREFLOW_CONFIG", str(genres_config))
        patch.setenv("GENREFLOW_WORKERS", "1")
        settings = load_settings(store=str(root / "store"), valid_csv=str(root / "valid.csv"),
                                 inbox=str(root / "inbox"))
    snapshot = {"snapshot_key": "snapshots/new.parquet", "fingerprint": "f", "n_tracks": 9}
    checked = training.check(settings, snapshot, "manual__1")
    trained = training.train(settings, snapshot, "manual__1")
    metrics = training.validate(settings, trained)
    return {"store": store, "settings": settings, "checked": checked, "trained": trained,
            "metrics": metrics, "table": table}


def test_check_step_stores_the_report_with_drift_against_the_champion(steps_run):
    report = steps_run["store"].read_json(steps_run["checked"]["report_key"])
    assert report["previous_snapshot_key"] == "snapshots/old.parquet"
    assert report["drift"]["compared"] == "new tracks"
    assert report["kruskal"]["significant_share"] == pytest.approx(len(SHIFT) / 311, abs=0.02)


def test_check_step_fails_on_too_few_tracks(steps_run):
    store, settings = steps_run["store"], steps_run["settings"]
    table = steps_run["table"]
    store.write_frame("snapshots/thin.parquet", table[table["track_id"].str.endswith("0")])
    with pytest.raises(CheckFailed, match="fewer than 2"):
        training.check(settings, {"snapshot_key": "snapshots/thin.parquet"}, "manual__2")
    assert store.exists("runs/manual__2/checks.json")  # the report is kept for the person


def test_train_step_records_the_cv_selection(steps_run):
    trained = steps_run["trained"]
    selection = trained["config"]["selection"]
    assert selection["n_splits"] == 3 * 2  # 3 grouped folds x 2 shuffles
    assert [c["name"] for c in selection["candidates"]] == usable(list(candidates()),
                                                                   {"librosa"})
    chosen = selection["candidates"][selection["chosen"]]
    assert trained["model_name"] == chosen["name"]
    assert trained["cv_roc_auc_ovo"] == chosen["roc_auc_ovo"]
    assert trained["cv_roc_auc_ovo_std"] == chosen["roc_auc_ovo_std"]
    assert trained["n_training_segments"] == len(steps_run["table"]) == 45
    assert list(trained["config"]["steps"]) == ["select", "compress", "generate", "scale", "smote",
                                                "cluster", "classifier"]
    assert trained["synthetic_demo"] is False  # its inbox is not var/demo/inbox


def test_the_demo_inbox_is_recognised(steps_run):
    settings = steps_run["settings"]
    demo = replace(settings, inbox=f"file://{settings.demo_dir}/inbox")
    assert demo.is_demo_inbox and not settings.is_demo_inbox
    assert not replace(settings, inbox="s3://bucket/inbox").is_demo_inbox


def test_validate_step_metrics_and_report_files(steps_run):
    metrics, store = steps_run["metrics"], steps_run["store"]
    assert metrics["roc_auc_ovo"] > 0.9  # 20 of 311 columns separate the genres
    matrix = metrics["confusion_matrix"]
    songs = np.array(matrix["songs"])
    assert songs.sum() == metrics["n_songs"] == 6
    assert metrics["song_accuracy"] == pytest.approx(np.trace(songs) / 6)
    assert np.array(matrix["segments"]).sum() == metrics["n_segments"] == 30
    metal = matrix["labels"].index("metal")
    assert metrics["per_genre"]["metal"]["recall"] == songs[metal, metal] / songs[metal].sum()
    assert metrics["report_files"] == {
        "checks.json": "runs/manual__1/checks.json",
        "confusion_matrix.png": "runs/manual__1/confusion_matrix.png",
    }
    assert store.read_bytes("runs/manual__1/confusion_matrix.png").startswith(PNG)


def test_figure_step_draws_umap_or_fails_with_the_reason(steps_run):
    """The DAG's best_effort turns the failure into a skipped figure (test_dag)."""
    settings, trained, store = steps_run["settings"], steps_run["trained"], steps_run["store"]
    assert training.figure(settings, trained) == {"umap.png": "runs/manual__1/umap.png"}
    assert store.read_bytes("runs/manual__1/umap.png").startswith(PNG)

    broken = {**trained, "run_dir": "runs/broken", "model_key": "runs/nowhere/model.skops"}
    with pytest.raises(KeyNotFound, match="runs/nowhere/model.skops"):
        training.figure(settings, broken)
    assert not store.exists("runs/broken/umap.png")


def test_metrics_block_is_short_lines(steps_run):
    block = metrics_block(steps_run["metrics"], "valid.csv").splitlines()
    assert block[0] == "validation on valid.csv: 6 songs, 30 segments"
    assert [line.split()[0] for line in block[1:]] == ["ROC-AUC", "song", "song", "weakest"]
    assert max(map(len, block)) <= 80


def test_unseen_genre_is_refused(steps_run):
    model = registry.load_model_bytes(steps_run["store"].read_bytes(
        steps_run["trained"]["model_key"]))
    table = steps_run["table"].assign(genre="jazz")
    with pytest.raises(ValueError, match="never seen"):
        evaluate(model, table)
