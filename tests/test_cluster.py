"""ClusterFeature: nearest centre, one-hot or ordinal, same columns as at fit."""

from __future__ import annotations

import numpy as np
import pytest

from genreflow.cluster import ClusterFeature


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    return np.vstack([c + 0.5 * rng.standard_normal((30, 2)) for c in centres])


def test_new_rows_get_the_nearest_centre(blobs):
    cluster = ClusterFeature(n_clusters=3, n_init=5).fit(blobs)
    centres = cluster.kmeans_.cluster_centers_
    new = np.random.default_rng(1).uniform(-5, 15, size=(200, 2))
    distances = ((new[:, None, :] - centres[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(cluster.assign(new), distances.argmin(axis=1))
    # three points sitting at the true centres go to three different clusters
    assert len(set(cluster.assign(np.array([[0, 0], [10, 0], [0, 10.0]])))) == 3


def test_one_hot_and_ordinal_columns(blobs):
    onehot = ClusterFeature(n_clusters=3, n_init=5).fit(blobs)
    out = onehot.transform(blobs)
    labels = onehot.assign(blobs)
    assert out.shape == (len(blobs), 5)
    np.testing.assert_array_equal(out[:, :2], blobs)
    np.testing.assert_array_equal(out[:, 2:].argmax(axis=1), labels)
    assert (out[:, 2:].sum(axis=1) == 1).all()
    assert list(onehot.get_feature_names_out(["x", "y"])) == [
        "x", "y", "cluster_0", "cluster_1", "cluster_2"]
    ordinal = ClusterFeature(n_clusters=3, n_init=5, encoding="ordinal").fit(blobs)
    np.testing.assert_array_equal(ordinal.transform(blobs)[:, 2], ordinal.assign(blobs))
    assert list(ordinal.get_feature_names_out(["x", "y"])) == ["x", "y", "cluster"]


def test_fit_rows_bounds_the_kmeans_fit_and_wrong_columns_are_refused(blobs):
    cluster = ClusterFeature(n_clusters=3, n_init=2, fit_rows=30).fit(blobs)
    assert cluster.kmeans_.labels_.shape == (30,)
    with pytest.raises(ValueError, match="features"):
        cluster.transform(blobs[:, :1])
    with pytest.raises(ValueError, match="encoding"):
        ClusterFeature(encoding="binary").fit(blobs)
