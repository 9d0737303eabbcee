"""Novel-class discovery metrics for binary anomaly labels.

A discovery method (ContMAV's ``test_ow`` post-processing, ``owsbench.methods.nn.discovery``)
gives every pixel it flags as unknown a discovered class id ``>= 0`` (``-1`` = not flagged); ids
are shared across the frames of a split. The anomaly labels of the benchmark are binary (0 inlier,
1 anomaly, 255 void) and carry no object-class identity, so the discovered classes cannot be
matched to true novel classes. What can be measured, per frame, with the ground-truth anomaly
*objects* defined as the 8-connected components (``scipy.ndimage.label``, 3x3 structure of ones)
of the anomaly mask ``label == 1``, void pixels excluded everywhere:

    discovery_precision      = #{flagged pixels on GT anomaly} / #{flagged pixels}
                               pooled over the split: how much of what was "discovered" is
                               really anomalous (a flagged pixel has an id >= 0).
    discovery_object_coverage = mean over GT objects k of |k ∩ flagged| / |k|
                               (objects of all frames pooled; an object with no flagged pixel
                               counts 0): how much of each novel object is discovered at all.
    discovery_object_purity  = mean over GT objects k with |k ∩ flagged| > 0 of
                               max_c |k ∩ {id = c}| / |k ∩ flagged|:
                               the largest share of the object's flagged pixels held by one
                               discovered id, i.e. whether one object is kept as one novel
                               class (1 = a single id, 1/n = split evenly over n ids).
    discovery_novel_classes  = the number of distinct ids discovered over the split, void
                               pixels included (it describes the output, not its agreement
                               with the labels).
    discovery_objects        = the number of GT objects (the support of the two means).
    discovery_flagged_pixels = the number of flagged pixels, void excluded (the support of the
                               precision).

Undefined values are NaN: precision without flagged pixels, coverage without GT objects, purity
without an object that has a flagged pixel (``discovery_novel_classes`` is 0 then).

What is *not* measured: whether an id is consistent across frames (the same id given to the
same kind of object in different frames, different ids to different kinds) or whether two
objects of one frame with one id are really of one class. That needs object-class identities
of the anomalies, which binary anomaly labels do not have. Purity also does not penalise one id
spreading over several objects or over the inlier background (the latter lowers precision).

State: two pixel counts, one coverage value per GT object, one purity value per GT object that
has flagged pixels and the set of ids seen, so ``merge`` in any order equals one pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .pixel import as_numpy

_STRUCTURE = np.ones((3, 3), dtype=bool)  # 8-connectivity

KEYS = (
    "discovery_precision",
    "discovery_object_coverage",
    "discovery_object_purity",
    "discovery_novel_classes",
    "discovery_objects",
    "discovery_flagged_pixels",
)


class DiscoveryMetric:
    """Discovery precision, object coverage and purity, and the discovered-class count
    (definitions in the module docstring).

    ``update`` once per frame (a batch is split along its first axis), ``merge`` states from
    other workers, ``compute``.
    """

    def __init__(self) -> None:
        self.reset()

    # ----------------------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget everything."""
        self.flagged = 0  # flagged pixels, void excluded
        self.flagged_anomaly = 0  # flagged pixels with label 1
        self._coverage: list[np.ndarray] = []
        self._purity: list[np.ndarray] = []
        self._ids = np.zeros(0, np.int64)

    @property
    def coverage(self) -> np.ndarray:
        """Coverage of every GT object counted so far, frame by frame."""
        return np.concatenate([np.zeros(0), *self._coverage])

    @property
    def purity(self) -> np.ndarray:
        """Purity of every GT object with flagged pixels counted so far, frame by frame."""
        return np.concatenate([np.zeros(0), *self._purity])

    @property
    def ids(self) -> np.ndarray:
        """The distinct discovered ids seen so far, ascending."""
        return self._ids.copy()

    def state_dict(self) -> dict[str, np.ndarray]:
        """``np.savez``-friendly state."""
        return {
            "flagged": np.asarray(self.flagged, np.int64),
            "flagged_anomaly": np.asarray(self.flagged_anomaly, np.int64),
            "coverage": self.coverage,
            "purity": self.purity,
            "ids": self.ids,
        }

    def load_state_dict(self, state: dict[str, Any]) -> DiscoveryMetric:
        """Replace the state with ``state`` (from :meth:`state_dict`)."""
        self.reset()
        self.flagged = int(state["flagged"])
        self.flagged_anomaly = int(state["flagged_anomaly"])
        self._coverage = [np.asarray(state["coverage"], np.float64).reshape(-1)]
        self._purity = [np.asarray(state["purity"], np.float64).reshape(-1)]
        self._ids = np.unique(np.asarray(state["ids"], np.int64))
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DiscoveryMetric:
        """A new metric holding ``state``."""
        return cls().load_state_dict(state)

    def merge(self, other: DiscoveryMetric) -> DiscoveryMetric:
        """Add the counts, objects and ids of ``other``; returns ``self``."""
        if not isinstance(other, DiscoveryMetric):
            raise ValueError("merge needs a DiscoveryMetric")
        self.flagged += other.flagged
        self.flagged_anomaly += other.flagged_anomaly
        self._coverage.append(other.coverage)
        self._purity.append(other.purity)
        self._ids = np.union1d(self._ids, other._ids)
        return self

    # ---------------------------------------------------------------------------- update

    def update(self, novel_class: Any, labels: Any) -> None:
        """Add one frame ``(H, W)`` or a batch ``(N, H, W)``: discovered ids (integers, -1 = not
        flagged) and anomaly labels (0, 1, 255); numpy arrays or torch tensors. Raises
        ValueError on a shape mismatch, non-integer ids, ids below -1 or labels other than 0,
        1 and 255 (nothing is added then)."""
        ids, y = as_numpy(novel_class), as_numpy(labels)
        if ids.shape != y.shape or ids.ndim not in (2, 3):
            raise ValueError(
                f"novel_class {ids.shape} and labels {y.shape} must be equal (H, W) or "
                "(N, H, W) shapes"
            )
        if ids.dtype.kind not in "iu":
            raise ValueError(f"novel_class must be integers, got dtype {ids.dtype}")
        if ids.size and ids.min() < -1:
            raise ValueError("novel_class ids must be >= 0, or -1 for pixels not flagged")
        if y.dtype.kind not in "biu" or not np.isin(y, (0, 1, 255)).all():
            raise ValueError("labels must be integers 0 (inlier), 1 (anomaly) or 255 (void)")
        if ids.ndim == 2:
            ids, y = ids[None], y[None]
        for i in range(len(ids)):
            self._frame(ids[i].astype(np.int64), y[i])

    def _frame(self, ids: np.ndarray, labels: np.ndarray) -> None:
        from scipy.ndimage import label  # ~0.2 s to import: only when frames are counted

        flagged = (ids >= 0) & (labels != 255)
        anomaly = labels == 1
        self.flagged += int(flagged.sum())
        self.flagged_anomaly += int((flagged & anomaly).sum())
        self._ids = np.union1d(self._ids, np.unique(ids[ids >= 0]))
        gt, n_gt = label(anomaly, structure=_STRUCTURE)
        if not n_gt:
            return
        size = np.bincount(gt.ravel(), minlength=n_gt + 1)[1:]
        on_object = flagged & (gt > 0)
        g, c = gt[on_object].astype(np.int64), ids[on_object]
        hit = np.bincount(g, minlength=n_gt + 1)[1:]  # |k ∩ flagged|
        self._coverage.append(hit / size)
        # largest |k ∩ {id = c}| per object: count (object, id) pairs, then a max per object
        base = int(c.max(initial=0)) + 1
        pairs, counts = np.unique(g * base + c, return_counts=True)
        largest = np.zeros(n_gt + 1, np.int64)
        np.maximum.at(largest, pairs // base, counts)
        kept = hit > 0
        self._purity.append(largest[1:][kept] / hit[kept])

    # --------------------------------------------------------------------------- compute

    def compute(self) -> dict[str, float | int]:
        """The keys of ``KEYS``: three fractions (NaN where undefined) and three counts."""
        nan = float("nan")
        coverage, purity = self.coverage, self.purity
        return {
            "discovery_precision": self.flagged_anomaly / self.flagged if self.flagged else nan,
            "discovery_object_coverage": float(coverage.mean()) if coverage.size else nan,
            "discovery_object_purity": float(purity.mean()) if purity.size else nan,
            "discovery_novel_classes": int(self._ids.size),
            "discovery_objects": int(coverage.size),
            "discovery_flagged_pixels": int(self.flagged),
        }

    def __repr__(self) -> str:
        return (
            f"DiscoveryMetric(flagged={self.flagged}, objects={self.coverage.size}, "
            f"novel_classes={self._ids.size})"
        )
