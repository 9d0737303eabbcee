"""Novel-class discovery: ContMAV's post-processing that groups unknown pixels into new classes.

Source: ``PRBonn/ContMAV`` ``train.py::test_ow`` (HEAD ``0960cb3``), read for its intent only
(with the paper, Sodano et al., CVPR 2024): the official code is broken (it selects the
*known* pixels, ``ows_binary_pred == 0``; ``pickle``, ``F`` and ``ac`` are not imported; it
iterates over an int), so this is implemented from the description, not ported.

For each image, in the order the images arrive, with ``x_1..x_N`` the logit vectors of the
image's unknown pixels (``s_unk > delta``, selected by the caller) and ``m_1..m_M`` the new-class
MAVs found so far (ids ``0..M-1``):

1. Match: pixel ``i`` joins the nearest existing MAV ``j = argmin_j ||x_i - m_j||_2`` when that
   distance is ``<= distance`` (official 0.5; ties go to the lowest id).
2. Update: every MAV ``j`` that received pixels ``P_j`` moves half-way to their mean,
   ``m_j <- (m_j + mean_{i in P_j} x_i) / 2`` (one update per image, after the matching).
3. Discover: the unmatched pixels are clustered with scikit-learn's
   ``AgglomerativeClustering(n_clusters=None, distance_threshold=distance)`` and its other
   defaults as in the official call (Euclidean metric, ``linkage="ward"``); each cluster gets
   the next free id and its mean becomes a new MAV. With Ward linkage the merge height of two
   clusters ``s, t`` is ``sqrt(2 |s| |t| / (|s| + |t|)) ||c_s - c_t||`` (scikit-learn's
   ``ward_tree``), i.e. the plain Euclidean distance only for two single pixels: clusters stop
   growing once their means are ``0.5 / sqrt(size)`` apart, so a dense set of pixels splits into
   many small clusters. This is the official behaviour; ``linkage`` can be changed here.

Deviations (bounded memory and time; agglomerative clustering is O(N^2) in memory and at least
O(N^2) in time):

- At most ``max_pixels`` of the unmatched pixels are clustered (a uniform sample without
  replacement, seeded by ``(seed, image index in the split)``, so a run is deterministic and an
  image's sample does not depend on how many draws earlier images made). Sampled pixels keep
  their cluster; every other unmatched pixel joins the cluster with the nearest mean (computed
  on the sample), and a new MAV is the mean of *all* the pixels its cluster ends with. With
  ``N <= max_pixels`` nothing is sampled and step 3 is exactly the official one. Because Ward
  merge heights grow with cluster size, sampling fewer pixels tends to give fewer, larger
  clusters than clustering all of them would.
- A single unmatched pixel is its own cluster (scikit-learn needs two samples).
- The nearest MAV / cluster mean is found in float32 (chunks of pixels, so memory stays bounded
  whatever the number of pixels and MAVs), its distance then in float64; a pixel whose two
  nearest MAVs are within float32 rounding of each other may go to either. The number of MAVs
  itself is not capped (official).
"""

from __future__ import annotations

import warnings

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # pixel x MAV affinities held at once (16 MiB of float32)


def nearest(vectors: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre (Euclidean) of each vector and that distance;
    ``(N, D)`` x ``(M, D)`` -> ``(N,)`` int64, ``(N,)`` float64; ``M >= 1``.

    The nearest centre maximises ``x.c - ||c||^2 / 2`` (one float32 matrix product per chunk of
    pixels; ties to the lowest index); its distance is then computed exactly in float64.
    """
    x64 = np.asarray(vectors, np.float64)
    c64 = np.asarray(centres, np.float64)
    c32 = c64.astype(np.float32)
    half_sq = (0.5 * np.einsum("md,md->m", c64, c64)).astype(np.float32)
    index = np.empty(len(x64), np.int64)
    step = max(1, _CHUNK_ELEMENTS // len(c32))
    for start in range(0, len(x64), step):
        affinity = x64[start : start + step].astype(np.float32) @ c32.T
        affinity -= half_sq
        index[start : start + step] = affinity.argmax(axis=1)
    return index, np.linalg.norm(x64 - c64[index], axis=1)


class NovelClassDiscovery:
    """Streaming novel-class discovery over the images of one split (see the module docstring).

    ``reset()`` before a split, then ``assign(vectors)`` once per image, in order. ``mavs``
    holds the new-class MAVs ``(M, D)`` (row ``j`` is id ``j``); ``num_classes`` is ``M``.
    """

    def __init__(
        self,
        distance: float = 0.5,
        max_pixels: int = 2000,
        seed: int = 0,
        linkage: str = "ward",
    ) -> None:
        """``distance``: the matching radius and the clustering's ``distance_threshold``
        (official 0.5). ``max_pixels``: most pixels clustered per image (>= 2). ``seed``: of
        the subsample. ``linkage``: scikit-learn's (official: its default, ``"ward"``)."""
        if not distance > 0:
            raise ValueError(f"distance must be > 0, got {distance}")
        if max_pixels < 2:
            raise ValueError(f"max_pixels must be >= 2, got {max_pixels}")
        if linkage not in ("ward", "complete", "average", "single"):
            raise ValueError(f"unknown linkage {linkage!r}")
        self.distance = float(distance)
        self.max_pixels = int(max_pixels)
        self.seed = int(seed)
        self.linkage = linkage
        self.reset()

    def reset(self) -> None:
        """Forget every discovered class (start of a split)."""
        self.mavs: np.ndarray | None = None  # (M, D) float64
        self.images = 0  # images seen since the reset (seeds each image's subsample)

    @property
    def num_classes(self) -> int:
        """Novel classes discovered since the last reset."""
        return 0 if self.mavs is None else len(self.mavs)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """Discovered class id (>= 0) of each of one image's unknown pixels ``(N, D)``; updates
        and extends the MAVs. Accepts numpy arrays or torch tensors."""
        if hasattr(vectors, "detach"):
            vectors = vectors.detach().cpu().numpy()
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2:
            raise ValueError(f"vectors must be (N, D), got shape {x.shape}")
        if self.mavs is not None and x.shape[1] != self.mavs.shape[1]:
            raise ValueError(f"vectors have {x.shape[1]} dims, the MAVs {self.mavs.shape[1]}")
        image = self.images
        self.images += 1
        ids = np.full(len(x), -1, np.int64)
        if not len(x):
            return ids
        if self.mavs is not None:
            j, d = nearest(x, self.mavs)
            matched = d <= self.distance
            ids[matched] = j[matched]
            if matched.any():
                hit = np.unique(j[matched])
                sums = np.zeros((len(self.mavs), x.shape[1]))
                np.add.at(sums, j[matched], x[matched])
                counts = np.bincount(j[matched], minlength=len(self.mavs))
                self.mavs[hit] = (self.mavs[hit] + sums[hit] / counts[hit, None]) / 2.0
        rest = np.flatnonzero(ids < 0)
        if rest.size:
            clusters = self._cluster(x[rest], image)
            first = self.num_classes
            ids[rest] = first + clusters
            count = int(clusters.max()) + 1
            sums = np.zeros((count, x.shape[1]))
            np.add.at(sums, clusters, x[rest])
            means = sums / np.bincount(clusters, minlength=count)[:, None]
            self.mavs = means if self.mavs is None else np.concatenate([self.mavs, means])
        return ids

    def _cluster(self, x: np.ndarray, image: int) -> np.ndarray:
        """Cluster labels ``0..C-1`` (every label used) of the unmatched pixels ``x``."""
        n = len(x)
        if n == 1:
            return np.zeros(1, np.int64)
        sample = None
        if n > self.max_pixels:
            rng = np.random.default_rng((self.seed, image))
            sample = np.sort(rng.choice(n, self.max_pixels, replace=False))
        points = x if sample is None else x[sample]
        from scipy.cluster.hierarchy import ClusterWarning
        from sklearn.cluster import AgglomerativeClustering  # ~0.5 s import: only when used

        with warnings.catch_warnings():
            # scipy warns when an (n, n) observation matrix happens to be symmetric and hollow
            # ("looks suspiciously like an uncondensed distance matrix"); it is not one here
            warnings.simplefilter("ignore", ClusterWarning)
            labels = AgglomerativeClustering(
                n_clusters=None,
                metric="euclidean",
                linkage=self.linkage,
                distance_threshold=self.distance,
            ).fit_predict(points)
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)  # 0..C-1, all used
        if sample is None:
            return labels
        count = int(labels.max()) + 1
        sums = np.zeros((count, x.shape[1]))
        np.add.at(sums, labels, points)
        means = sums / np.bincount(labels, minlength=count)[:, None]
        out = nearest(x, means)[0]
        out[sample] = labels
        # a cluster keeps at least its sampled pixels, so every label 0..C-1 is still used
        return out
