"""Metrics on a validation table: segment ROC-AUC (one-vs-one) and song-level decisions.

A song's genre is the soft vote ``song_genres(song_probabilities(...))``: the genre of
largest mean segment probability. ``genreflow predict`` calls the same two functions,
so what is validated is what is served. It uses the probabilities ROC-AUC measures and
has no ties; against the majority vote it is within a song or two on real clips
(bench/RESULTS.md), where ``song_votes`` is the comparison.
"""

from __future__ import annotations

import numpy as np

from genreflow.dataset import TableError
from genreflow.model import input_frame


def song_probabilities(track_ids, proba: np.ndarray, classes):
    """Mean segment probability of every class, one row per song (sorted track ids)."""
    import pandas as pd

    frame = pd.DataFrame(np.asarray(proba, dtype=np.float64),
                         columns=[str(c) for c in classes])
    return frame.groupby(np.asarray(track_ids)).mean()


def song_genres(song_proba):
    """The genre of largest mean probability (ties: the first column; a fitted model's
    classes are sorted)."""
    return song_proba.idxmax(axis=1)


def song_votes(track_ids: np.ndarray, predicted: np.ndarray):
    """Majority vote: a song's most frequent segment prediction (ties: first in sort order)."""
    import pandas as pd

    votes = pd.DataFrame({"track_id": track_ids, "predicted": predicted})
    counts = votes.groupby(["track_id", "predicted"]).size().rename("n").reset_index()
    counts = counts.sort_values(["track_id", "n", "predicted"], ascending=[True, False, True])
    return counts.drop_duplicates("track_id").set_index("track_id")["predicted"]


def evaluate(model, table) -> dict:
    """Metrics JSON of ``model`` on ``table`` (never used for fitting or tuning).

    Per-genre precision/recall and the confusion matrix are song-level (soft vote),
    the unit a user sees; the segment-level confusion matrix is kept beside it. With 2
    genres in the table, one-vs-one ROC-AUC is the binary ROC-AUC of the second genre's
    probability renormalised over the two; with fewer there is nothing to compare
    (TableError, as for genres the model never saw).
    """
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        roc_auc_score,
    )

    classes = list(model.classes_)
    missing = sorted(set(table["genre"]) - set(classes))
    if missing:
        raise TableError(f"validation genres {missing} were never seen in training")
    y_true = table["genre"].astype(str).to_numpy()
    proba = model.predict_proba(input_frame(model, table))
    predicted = np.asarray(classes)[proba.argmax(axis=1)]
    present = sorted(set(y_true))
    if len(present) < 2:
        raise TableError(f"validation songs of {len(present)} genre {present}: ROC-AUC needs 2")
    columns = [classes.index(c) for c in present]
    scores = proba[:, columns]
    scores = scores / scores.sum(axis=1, keepdims=True)
    roc_auc = (roc_auc_score(y_true == present[1], scores[:, 1]) if len(present) == 2
               else roc_auc_score(y_true, scores, multi_class="ovo", labels=present))

    song_pred = song_genres(song_probabilities(table["track_id"].to_numpy(), proba, classes))
    song_true = table.groupby("track_id")["genre"].first().loc[song_pred.index].astype(str)
    return {
        "roc_auc_ovo": round(float(roc_auc), 6),
        "segment_accuracy": round(float(accuracy_score(y_true, predicted)), 6),
        "song_accuracy": round(float(accuracy_score(song_true, song_pred)), 6),
        "song_macro_f1": round(float(f1_score(song_true, song_pred, average="macro")), 6),
        "n_segments": int(len(table)),
        "n_songs": int(len(song_pred)),
        "per_genre": classification_report(
            song_true, song_pred, labels=classes, output_dict=True, zero_division=0
        ),
        "confusion_matrix": {
            "labels": classes,
            "songs": confusion_matrix(song_true, song_pred, labels=classes).tolist(),
            "segments": confusion_matrix(y_true, predicted, labels=classes).tolist(),
        },
    }


def metrics_block(metrics: dict, valid_csv: str) -> str:
    """The validation result as a few short lines, one per measure, for the task log."""
    per_genre = metrics["per_genre"]  # sklearn's report: genres, then averages
    worst = min(((g, per_genre[g]) for g in metrics["confusion_matrix"]["labels"]
                 if g in per_genre), key=lambda item: item[1]["f1-score"], default=None)
    lines = [
        f"validation on {valid_csv}: {metrics['n_songs']} songs, "
        f"{metrics['n_segments']} segments",
        f"  ROC-AUC ovo      {metrics['roc_auc_ovo']:.4f}",
        f"  song accuracy    {metrics['song_accuracy']:.4f}",
        f"  song macro-F1    {metrics['song_macro_f1']:.4f}",
    ]
    if worst:
        lines.append(f"  weakest genre    {worst[0]} (F1 {worst[1]['f1-score']:.2f})")
    return "\n".join(lines)
