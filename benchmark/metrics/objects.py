"""Object completeness: how much of each ground-truth object a segmenter predicts as its class.

For every object ``o`` of a frame (an instance id, ``Frame.instances``) with class ``c_o`` (the
most frequent non-void ground-truth class of its pixels) and non-void pixels ``P_o``:

    completeness_o = |{p in P_o : pred_p = c_o}| / |P_o|

``object_completeness`` is the mean over all objects of a split; ``per_class_completeness`` the
mean over the objects of each class (NaN for a class with no object). It tells apart a
segmenter that finds objects only partially (typical of point- or CAM-supervised models, which
fire on the most discriminative part; Bearman et al., ECCV 2016 discuss object extent) from one
that misses them altogether, which IoU alone conflates. Streaming and mergeable like the other
metric states.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .pixel import as_numpy


class ObjectCompleteness:
    """Per-class sums of object completeness and object counts over a split."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.sums = np.zeros(num_classes, np.float64)
        self.counts = np.zeros(num_classes, np.int64)

    def update(self, pred: Any, label: Any, instances: Any) -> None:
        """Add the objects of one frame: ``pred`` and ``label`` class maps, ``instances`` ids
        (0 = no object), all of one shape."""
        p, g, ids = as_numpy(pred), as_numpy(label), as_numpy(instances)
        if not p.shape == g.shape == ids.shape:
            raise ValueError(f"shapes differ: pred {p.shape}, label {g.shape}, ids {ids.shape}")
        valid = (ids != 0) & (g != self.ignore_index) & (g < self.num_classes)
        for instance in np.unique(ids[valid]):
            mask = valid & (ids == instance)
            classes = g[mask].astype(np.int64)
            c = int(np.bincount(classes, minlength=self.num_classes).argmax())
            self.sums[c] += float(np.mean(p[mask] == c))
            self.counts[c] += 1

    def merge(self, other: ObjectCompleteness) -> None:
        """Add another state's objects (same class count)."""
        self.sums += other.sums
        self.counts += other.counts

    def compute(self) -> dict[str, Any]:
        """``object_completeness`` (None without objects) and ``per_class_completeness``."""
        total = int(self.counts.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(self.counts > 0, self.sums / self.counts, np.nan)
        return {
            "object_completeness": float(self.sums.sum() / total) if total else None,
            "per_class_completeness": per_class,
        }
