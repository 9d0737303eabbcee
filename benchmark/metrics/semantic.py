"""Streaming closed-set segmentation metrics from one dataset-level confusion matrix.

``C[g, p]`` counts the non-void pixels with ground-truth class ``g`` and predicted class ``p``
(labels equal to ``ignore_index`` are skipped). Predictions outside ``0..K-1`` (a "void" or
"unknown" prediction) land in an extra column ``C[g, K]``: they are wrong for their ground-truth
class (a false negative) but a false positive for no class. With ``K`` classes:

    TP_c = C[c, c]
    FN_c = sum_p C[c, p] - TP_c            (the row, extra column included)
    FP_c = sum_g C[g, c] - TP_c            (the column, over non-void pixels only)
    IoU_c = TP_c / (TP_c + FP_c + FN_c)
    mIoU = mean of IoU_c over the classes with TP_c + FP_c + FN_c > 0
    pixel_accuracy = sum_c TP_c / sum_{g,p} C[g, p]

Classes absent from both labels and predictions are skipped (NaN in ``per_class_iou``), as in the
Cityscapes evaluator (``cityscapesScripts: evalPixelLevelSemanticLabeling.py``, ``getScoreAverage``
skips NaN) and PEBAL's ``hist_info`` + ``nanmean`` (``tianyu0207/PEBAL: code/utils/metric.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .device_counts import confusion_counts, is_device_tensor
from .pixel import as_numpy

_CHUNK = 1 << 16


class SemanticMetric:
    """Confusion-matrix mIoU, per-class IoU and pixel accuracy over a whole split."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class id (0..{num_classes - 1})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget all counts."""
        self._hist = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    @property
    def confusion(self) -> np.ndarray:
        """``K x K`` counts, rows = ground truth, columns = prediction (a copy)."""
        return self._hist[:, : self.num_classes].copy()

    def update(self, pred: Any, label: Any) -> None:
        """Count one batch: integer class maps of equal shape (numpy arrays or torch tensors).

        Raises ValueError (counts unchanged) on a shape mismatch, non-integer inputs, or labels
        other than ``0..K-1`` and ``ignore_index``.
        """
        if is_device_tensor(pred):
            self.update_tensor(pred, label)
            return
        p, g = as_numpy(pred), as_numpy(label)
        if p.shape != g.shape:
            raise ValueError(f"pred shape {p.shape} != label shape {g.shape}")
        if p.dtype.kind not in "biu" or g.dtype.kind not in "biu":
            raise ValueError(f"pred and label must be integers, got {p.dtype} and {g.dtype}")
        p, g = p.reshape(-1), g.reshape(-1)
        hist = np.zeros(self._hist.size + 1, np.int64)  # + one trash cell for void pixels
        cells = np.empty(min(p.size, _CHUNK), np.int64)
        for start in range(0, p.size, _CHUNK):
            stop = start + _CHUNK
            hist += self._count_chunk(p[start:stop], g[start:stop], cells[: p[start:stop].size])
        self._hist += hist[:-1].reshape(self._hist.shape)

    def update_tensor(self, pred: Any, label: Any) -> None:
        """Count a torch class map with torch kernels on its own device (``label``: a tensor or
        array, copied there; :mod:`owsbench.metrics.device_counts`); the counts equal
        :meth:`update`'s exactly, with the same errors."""
        import torch

        g = torch.as_tensor(label).to(pred.device)
        if tuple(pred.shape) != tuple(g.shape):
            raise ValueError(f"pred shape {tuple(pred.shape)} != label shape {tuple(g.shape)}")
        if pred.dtype.is_floating_point or g.dtype.is_floating_point:
            raise ValueError(f"pred and label must be integers, got {pred.dtype} and {g.dtype}")
        hist = confusion_counts(pred, g, self.num_classes, self.ignore_index)
        self._hist += hist[:-1].reshape(self._hist.shape)

    def _count_chunk(self, p: np.ndarray, g: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """``bincount`` of ``(K + 1) * label + pred`` over one chunk; void goes to the last cell."""
        k = self.num_classes
        void = self._check_labels(g)
        np.multiply(g, np.int64(k + 1), out=cells, casting="unsafe")
        if p.min() < 0 or p.max() >= k:
            p = np.where((p < 0) | (p >= k), k, p)
        np.add(cells, p, out=cells, casting="unsafe")
        if void is not None:
            np.putmask(cells, void, k * (k + 1))
        return np.bincount(cells, minlength=k * (k + 1) + 1)

    def _check_labels(self, g: np.ndarray) -> np.ndarray | None:
        """Raise on labels outside ``0..K-1`` other than ``ignore_index``; return the void mask."""
        if g.min() >= 0 and g.max() < self.num_classes:
            return None
        void = g == self.ignore_index
        if ((g < 0) | (g >= self.num_classes))[~void].any():
            raise ValueError(
                f"labels must be 0..{self.num_classes - 1} or {self.ignore_index} (void)"
            )
        return void

    def merge(self, other: SemanticMetric) -> SemanticMetric:
        """Add the counts of ``other`` (same classes and ignore_index); returns ``self``."""
        if not isinstance(other, SemanticMetric) or (other.num_classes, other.ignore_index) != (
            self.num_classes,
            self.ignore_index,
        ):
            raise ValueError("merge needs a SemanticMetric with the same num_classes/ignore_index")
        self._hist += other._hist
        return self

    def compute(self) -> dict[str, Any]:
        """``{"mIoU", "per_class_iou", "pixel_accuracy"}``; NaN where nothing was counted."""
        k = self.num_classes
        tp = np.diag(self._hist).astype(np.float64)
        union = self._hist.sum(axis=1) + self._hist[:, :k].sum(axis=0) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        total = self._hist.sum()
        return {
            "mIoU": float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
            "per_class_iou": [float(v) for v in iou],
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """``np.savez``-friendly state: class count, ignore index and the ``K x (K+1)`` matrix."""
        return {
            "num_classes": np.asarray(self.num_classes),
            "ignore_index": np.asarray(self.ignore_index),
            "confusion": self._hist.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> SemanticMetric:
        """Replace the counts with ``state`` (from :meth:`state_dict`); settings must match."""
        settings = (int(state["num_classes"]), int(state["ignore_index"]))
        if settings != (self.num_classes, self.ignore_index):
            raise ValueError(f"state has (num_classes, ignore_index) = {settings}")
        self._hist = np.array(state["confusion"], np.int64).reshape(self._hist.shape)
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SemanticMetric:
        """A new metric holding ``state``."""
        return cls(int(state["num_classes"]), int(state["ignore_index"])).load_state_dict(state)

    def __repr__(self) -> str:
        return f"SemanticMetric(num_classes={self.num_classes}, pixels={int(self._hist.sum())})"
