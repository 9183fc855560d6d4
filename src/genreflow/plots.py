"""Report figures as PNG bytes (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import io
import logging
import math
import warnings

import numpy as np

log = logging.getLogger(__name__)

UMAP_MAX_ROWS = 2000
PCA_DIMS = 50
UMAP_EPOCHS = 200


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_png(matrix, labels, title: str = "Confusion matrix") -> bytes:
    """Counts per (true, predicted) genre, each cell labelled."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    size = 2 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    high = matrix.max(initial=0) / 2
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if n > high else "black", fontsize=8)
    return _png(fig)


def embed_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP to 2-D with a fixed random_state (deterministic, single-threaded), after PCA
    to at most PCA_DIMS columns and with UMAP_EPOCHS epochs: both cut its time, not the
    picture (the neighbour graph of 50 components is that of the full matrix, nearly).

    The exact k-nearest neighbours come from scikit-learn (umap computes the same exact
    graph below 4,096 rows, but through numba kernels compiled on every call), and
    umap's remaining kernels are cached on disk (:func:`cache_umap_kernels`): the first
    figure on a machine costs ~9 s of compilation, later ones ~1 s for 2,000 rows.
    """
    import umap
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    cache_umap_kernels()
    if X.shape[1] > PCA_DIMS and len(X) > PCA_DIMS:
        X = PCA(PCA_DIMS, random_state=seed).fit_transform(X)
    n_neighbors = max(2, min(15, len(X) - 1))
    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(X).kneighbors(X)
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, n_epochs=UMAP_EPOCHS,
                        random_state=seed, n_jobs=1, precomputed_knn=(indices, distances))
    with warnings.catch_warnings():
        # umap says transform() needs its own search index: the figure never calls it
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return reducer.fit_transform(X)


def cache_umap_kernels() -> int:
    """Turn on numba's on-disk cache for umap's jitted functions; how many were turned on.

    umap declares most of its kernels without ``cache=True``, so each process compiled
    them again: 57 s of the old validate step (108 s on busy cores). numba writes the
    cache where it can (``NUMBA_CACHE_DIR``, else beside umap's sources, else the user's
    cache folder); where it cannot, the function simply compiles as before.
    """
    import umap.layouts
    import umap.umap_
    from numba.core.dispatcher import Dispatcher

    enabled = 0
    for module in (umap.umap_, umap.layouts):
        for function in vars(module).values():
            if isinstance(function, Dispatcher):
                try:
                    function.enable_caching()
                except RuntimeError:  # no writable cache location
                    continue
                enabled += 1
    return enabled


def umap_png(X: np.ndarray, genres: np.ndarray, clusters: np.ndarray, seed: int = 0) -> bytes:
    """UMAP of the training matrix coloured by cluster, one panel per genre (the study's
    figure); subsampled to UMAP_MAX_ROWS rows to keep it to seconds."""
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    if len(X) > UMAP_MAX_ROWS:
        rows = np.sort(rng.choice(len(X), UMAP_MAX_ROWS, replace=False))
        X, genres, clusters = X[rows], genres[rows], clusters[rows]
    points = embed_2d(X, seed)
    names = sorted(set(genres))
    cols = min(5, len(names))
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, squeeze=False,
                             figsize=(3 * cols, 3 * math.ceil(len(names) / cols)),
                             sharex=True, sharey=True, layout="constrained")
    cmap = plt.get_cmap("tab10" if clusters.max(initial=0) < 10 else "tab20")
    for ax, genre in zip(axes.flat, names, strict=False):
        ax.scatter(points[:, 0], points[:, 1], s=2, c="lightgrey")
        mine = genres == genre
        ax.scatter(points[mine, 0], points[mine, 1], s=4, c=cmap(clusters[mine] % cmap.N))
        ax.set_title(genre)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.suptitle(f"UMAP of {len(X)} training segments, colour = KMeans cluster")
    log.info("UMAP figure of %d segments, %d genres", len(X), len(names))
    return _png(fig)


def umap_figure(model, table) -> bytes:
    """UMAP of the training matrix coloured by cluster.

    The matrix is the one the classifier's input is built from (generated + scaled
    columns, real segments only: samplers act in fit). A model without a cluster step
    gets clusters of the same kind (ClusterFeature defaults) fitted for the figure only.
    """
    from genreflow.cluster import ClusterFeature
    from genreflow.model import input_frame

    before_smote = [name for name, _ in model.steps].index("smote")  # then cluster
    X = model[:before_smote].transform(input_frame(model, table))
    cluster = model.named_steps["cluster"]
    if cluster == "passthrough":
        cluster = ClusterFeature().fit(X)
    return umap_png(X, table["genre"].astype(str).to_numpy(), cluster.assign(X))
