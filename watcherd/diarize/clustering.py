"""From per-window speaker embeddings to global speakers (SciPy's hierarchy and Hungarian):
average linkage on cosine distance, cut at a threshold or into a hinted count."""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from watcherd.diarize import SpeakerHint

MIN_CLUSTER_SIZE = 2  # embeddings: a smaller cluster joins its nearest


def cluster(
    vectors: np.ndarray, hint: SpeakerHint, threshold: float, min_share: float
) -> np.ndarray:
    """A cluster number (0, 1, ...) per embedding."""
    n = len(vectors)
    if n == 1:
        return np.zeros(1, dtype=int)
    # Average linkage: a centroid-linked cluster's centroid drifts towards the mean voice as
    # it grows and then absorbs everyone (15 min of ~35 people came out as one speaker).
    tree = linkage(vectors, method="average", metric="cosine")
    min_size = max(MIN_CLUSTER_SIZE, min_share * n)
    if hint.exactly:
        return _cut_into(tree, vectors, hint.exactly, min_size)
    labels = fcluster(tree, threshold, "distance") - 1
    labels = _absorb_small(vectors, _renumber(labels), min_size)
    count = labels.max() + 1
    if hint.maximum and count > hint.maximum:
        labels = _cut_into(tree, vectors, hint.maximum, min_size)
    elif hint.minimum and count < hint.minimum:
        labels = _cut_into(tree, vectors, hint.minimum, min_size)
    return labels


def _cut_into(tree, vectors: np.ndarray, k: int, min_size: float) -> np.ndarray:
    """k clusters: the tree cut lower and lower until k of them are large, the small ones
    joining their nearest (cutting straight into k would spend clusters on outliers, a
    cough or two voices at once, and merge real speakers); where absorbing the small ones
    jumps from fewer than k to more, the two closest clusters merge until k are left."""
    n = len(vectors)
    for m in range(min(k, n), min(n, 4 * k + 50) + 1):
        labels = _absorb_small(vectors, _renumber(fcluster(tree, m, "maxclust") - 1), min_size)
        if labels.max() + 1 >= k:
            break
    else:  # fewer than k large clusters: small ones count too
        labels = _renumber(fcluster(tree, min(n, 4 * k + 50), "maxclust") - 1)
    while labels.max() + 1 > k:
        centroids = np.stack([vectors[labels == c].mean(0) for c in range(labels.max() + 1)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        similarity = centroids @ centroids.T - 2 * np.eye(len(centroids))
        a, b = np.unravel_index(similarity.argmax(), similarity.shape)
        labels = _renumber(np.where(labels == b, a, labels))
    return labels


def _renumber(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1]


def _absorb_small(vectors: np.ndarray, labels: np.ndarray, min_size: float) -> np.ndarray:
    sizes = np.bincount(labels)
    large = np.flatnonzero(sizes >= min_size)
    if len(large) == 0:
        large = np.array([int(sizes.argmax())])
    if len(large) == len(sizes):
        return labels
    centroids = np.stack([vectors[labels == c].mean(0) for c in large])
    small = ~np.isin(labels, large)
    nearest = (vectors[small] @ centroids.T).argmax(1)
    labels = labels.copy()
    labels[small] = large[nearest]
    return _renumber(labels)


def assign(
    windows: int, vectors: np.ndarray, owners: list[tuple[int, int]], centroids: np.ndarray
) -> np.ndarray:
    """(windows, 3) global speaker of each window's local speaker, -1 where none: the
    local speakers of one window go to different speakers, the most similar overall
    (unless the window has more local speakers than there are speakers)."""
    mapping = np.full((windows, 3), -1, dtype=int)
    similarity = vectors @ centroids.T
    by_window: dict[int, list[int]] = {}
    for row, (window, _) in enumerate(owners):
        by_window.setdefault(window, []).append(row)
    for window, rows in by_window.items():
        chosen, speakers = linear_sum_assignment(similarity[rows], maximize=True)
        for r, s in zip(chosen, speakers, strict=True):
            mapping[window, owners[rows[r]][1]] = s
        # More local speakers than speakers found: the rest join their nearest one.
        for r in set(range(len(rows))) - set(chosen):
            mapping[window, owners[rows[r]][1]] = int(similarity[rows[r]].argmax())
    return mapping
