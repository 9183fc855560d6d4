"""The musicnn embedding: weights read from the installed wheel, the numpy forward pass
against an independent float64 implementation, and tags that make sense on real music."""

from __future__ import annotations

import numpy as np
import pytest
from musicnn_reference import forward as reference_forward

from genreflow.audio import SAMPLE_RATE, SEGMENT_SAMPLES, load_audio, split_segments
from genreflow.features import musicnn
from genreflow.features.checkpoint import CheckpointError, read_checkpoint
from genreflow.features.sets import SETS

MODEL = "MSD_musicnn"


def synthetic_segments(n: int = 2) -> np.ndarray:
    """Chords and a noisy beat: anything with energy across the mel bands."""
    t = np.arange(SEGMENT_SAMPLES) / SAMPLE_RATE
    rng = np.random.default_rng(3)
    out = []
    for k in range(n):
        tone = sum(np.sin(2 * np.pi * f * (1 + 0.1 * k) * t) for f in (110, 220, 330, 495))
        beat = (np.sin(2 * np.pi * 2 * t) > 0.9) * rng.standard_normal(t.size)
        out.append(0.1 * tone + 0.3 * beat)
    return np.asarray(out, dtype=np.float32)


def test_weights_come_from_the_installed_wheel():
    folder = musicnn.weights_dir(MODEL)
    assert folder.parent.name == "musicnn" and (folder / ".data-00000-of-00001").is_file()
    tensors = read_checkpoint(str(folder) + "/")
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)  # timbral 7 x 0.4*96
    assert tensors["dense_1/kernel"].shape == (200, len(musicnn.MSD_TAGS))
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in tensors.values())


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "x.index").write_bytes(b"\0" * 100)
    (tmp_path / "x.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a checkpoint index"):
        read_checkpoint(tmp_path / "x")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "missing")


def test_numpy_forward_matches_an_independent_float64_implementation():
    patches = musicnn.log_mel_patches(synthetic_segments(2), SAMPLE_RATE)
    assert patches.shape == (2, musicnn.PATCH_FRAMES, musicnn.N_MELS)
    weights = read_checkpoint(str(musicnn.weights_dir(MODEL)) + "/")
    logits, embedding = musicnn.forward(musicnn.load_tagger(MODEL), patches)
    for i, patch in enumerate(patches):
        ref_logits, ref_embedding = reference_forward(patch, weights)
        np.testing.assert_allclose(logits[i], ref_logits, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(embedding[i], ref_embedding, rtol=1e-4, atol=1e-4)
    assert np.ptp(embedding, axis=0).max() > 0.1  # the two segments differ


def test_log_mel_is_computed_in_float32_so_loud_bands_do_not_overflow():
    loud = synthetic_segments(1) * 30  # float16 would turn 10000 * S into inf
    patches = musicnn.log_mel_patches(loud, SAMPLE_RATE)
    assert patches.dtype == np.float32 and np.isfinite(patches).all()
    assert patches.max() > np.log10(np.finfo(np.float16).max)


def test_the_feature_set_has_one_row_per_segment_and_named_columns():
    segments = synthetic_segments(3)
    features = SETS["musicnn"].extract(segments, SAMPLE_RATE)
    columns = SETS["musicnn"].columns
    assert features.shape == (3, len(columns)) == (3, 250)
    assert columns[33] == "msd_logit_hip_hop" and columns[50] == "msd_emb0"
    np.testing.assert_allclose(features[1], SETS["musicnn"].extract(segments[1:2],
                                                                    SAMPLE_RATE)[0], atol=1e-5)


@pytest.mark.real_audio
def test_top_tags_on_real_clips_name_their_genre(real_clips):
    def mean_tags(genre: str) -> list[str]:
        probabilities = []
        for path in sorted((real_clips / genre).iterdir()):
            segments = split_segments(load_audio(path))
            logits = musicnn.tag_and_embed(musicnn.log_mel_patches(segments, SAMPLE_RATE),
                                           MODEL)[:, : len(musicnn.MSD_TAGS)]
            probabilities.append((1 / (1 + np.exp(-logits))).mean(axis=0))
        order = np.argsort(-np.mean(probabilities, axis=0))
        return [musicnn.MSD_TAGS[i] for i in order]

    assert mean_tags("hiphop")[0] == "Hip-Hop"
    assert "metal" in mean_tags("metal")[:2]
    assert mean_tags("jazz")[0] == "jazz"


@pytest.mark.real_audio
def test_a_model_on_the_embedding_gets_songs_of_another_source_right(real_clips):
    """Trained on GTZAN excerpts of three genres, asked about clips of other recordings."""
    from genreflow.dataset import build_table, labelled_audio
    from genreflow.model import DEFAULT, candidates, fit_model
    from genreflow.serving import Served, predict

    genres = ("classical", "hiphop", "metal")
    train = [item for item in labelled_audio(real_clips) if item[1] in genres]
    table, failures = build_table(train, 1, ["musicnn"])
    assert not failures
    model = fit_model(table, candidates()[DEFAULT])
    served = Served("trained-here", {"feature_sets": ["musicnn-v1"]}, model)
    other = real_clips.parent / "ood-clips"
    answers = [(genre, predict(served, clip, clip.name)["genre"])
               for genre in genres for clip in sorted((other / genre).iterdir())]
    accuracy = np.mean([truth == said for truth, said in answers])
    assert accuracy >= 0.6, answers  # chance is 1/3; songs never heard, from other sources
