"""SegmentMeIfYouCan component-level anomaly metrics: sIoU, PPV and component F1.

Source: ``SegmentMeIfYouCan/road-anomaly-benchmark: road_anomaly_benchmark/metrics/
instance_segmentation.py`` (``default_instancer``, ``segment_metrics``, ``MetricSegment``),
checked at commit 1c7804e (2023-08). Per frame, with labels 0 (inlier), 1 (anomaly), 255 (void):

1. Prediction ``score >= threshold`` (``threshold`` is normally the best-F1 threshold of the
   pixel curve, :meth:`owsbench.metrics.AnomalyMetric.best_f1`), with void pixels set to 0.
2. Connected components with 8-connectivity (``scipy.ndimage.label``, 3x3 structure of ones) of
   the GT anomaly mask (label == 1) and of the prediction. Predicted components with fewer than
   ``min_pred_size`` pixels are removed; GT components with fewer than ``min_gt_size`` pixels
   become void. Both are then restricted to the region of interest ROI (label < 255, after the
   GT filter), so a predicted component keeps its label but loses its pixels on void.
3. For each GT component ``k``, with ``K̂(k)`` the union of predicted components meeting ``k``
   and ``A(k)`` the pixels of ``K̂(k)`` on other GT components:

       sIoU(k) = |k ∩ K̂(k)| / |(k ∪ K̂(k)) \\ A(k)|
               = |k ∩ K̂(k)| / (|k| + |K̂(k) ∩ background|)

   (the official code evaluates ``|K̂| + |k| - |k ∩ K̂| - |A|``, the same integer). 0 when no
   predicted component meets ``k``.
4. For each predicted component ``k̂`` (its ROI pixels): ``PPV(k̂) = |k̂ ∩ GT anomaly| / |k̂|``.
5. For each ``tau`` in ``taus`` (default ``np.linspace(0.25, 0.75, 11)``, the official values,
   e.g. ``0.6000000000000001``): ``TP_tau = #{k : sIoU(k) >= tau}``,
   ``FN_tau = #{k : sIoU(k) < tau}``, ``FP_tau = #{k̂ : PPV(k̂) < tau}``, summed over frames, and
   ``F1_tau = 2 TP_tau / (2 TP_tau + FN_tau + FP_tau)``.

Reported over a split (``MetricSegment.aggregate``): ``sIoU`` = mean sIoU over all GT components
of all frames (pooled, not per frame), ``PPV`` = mean PPV over all predicted components,
``mean_F1`` = mean of ``F1_tau`` over ``taus``, and ``F1_25``, ``F1_50``, ``F1_75`` at
tau = 0.25, 0.5, 0.75. Only the per-component sIoU and PPV values are stored (8 bytes each); the
counts are derived from them, so frames can be merged in any order.

Deviations from the official code, all deliberate:

- Comparison: the official instancer predicts ``anomaly_p > thresh_p`` although its best-F1
  threshold is the lower edge of a bin counted with ``>=``; here ``>=`` is used, consistent with
  :meth:`~owsbench.metrics.AnomalyMetric.best_f1`. Pass ``np.nextafter(threshold, np.inf)`` for
  the strict rule. Scores are first rounded to float32 as :class:`~owsbench.metrics.AnomalyMetric`
  does (no change for float16 or float32 scores), then compared in float64.
- The official GT size filter also loops over label 0 (everything that is not anomaly): a frame
  with fewer than ``thresh_instsize`` non-anomaly pixels would become void entirely. Label 0 is
  not filtered here.
- Undefined means (no GT or no predicted components; ``2 TP + FN + FP = 0``) are NaN instead of a
  ``ZeroDivisionError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .pixel import as_numpy

SMIYC_TAUS = np.linspace(0.25, 0.75, 11)

# ``MetricSegment.configs`` in ``road_anomaly_benchmark/metrics/instance_segmentation.py``
# (commit 1c7804e): thresh_segsize (smallest predicted component kept) and thresh_instsize
# (smallest GT component kept). The README evaluates AnomalyTrack-validation and
# FishyLAFAnomaly-val with SegEval-AnomalyTrack, and ObstacleTrack-validation and
# LostAndFound-testNoKnown with SegEval-ObstacleTrack. The plain "SegEval" config equals
# SegEval-AnomalyTrack.
SMIYC_SIZE_FILTERS: dict[str, dict[str, int]] = {
    "anomaly": {"min_pred_size": 500, "min_gt_size": 100},  # RoadAnomaly21, Fishyscapes LaF
    "obstacle": {"min_pred_size": 50, "min_gt_size": 10},  # RoadObstacle21, LostAndFound
}
# The same as ``(min_pred_size, min_gt_size)`` pairs: a dataset's ``component_size_filters``.
SMIYC_TRACK_FILTERS: dict[str, tuple[int, int]] = {
    track: (sizes["min_pred_size"], sizes["min_gt_size"])
    for track, sizes in SMIYC_SIZE_FILTERS.items()
}

_STRUCTURE = np.ones((3, 3), dtype=bool)  # 8-connectivity


class ComponentMetric:
    """SMIYC component metrics (sIoU, PPV, component F1) pooled over the frames of a split.

    ``update`` once per frame (a batch of frames is split along its first axis), ``merge``
    states from other workers, ``compute``. Formulas, source and deviations are in the module
    docstring; ``ComponentMetric(t, **SMIYC_SIZE_FILTERS["obstacle"])`` sets the official size
    filters of a track.
    """

    def __init__(
        self,
        threshold: float,
        min_pred_size: int = 0,
        min_gt_size: int = 0,
        taus: Any = SMIYC_TAUS,
    ) -> None:
        """``threshold``: a pixel is predicted anomalous if ``score >= threshold``.
        ``min_pred_size`` / ``min_gt_size``: smallest predicted / GT component kept (pixels).
        ``taus``: sIoU and PPV thresholds of the component F1.
        """
        if np.isnan(threshold):
            raise ValueError("threshold must not be NaN")
        if min_pred_size < 0 or min_gt_size < 0:
            raise ValueError("size filters must be >= 0")
        self.threshold = float(threshold)
        self.min_pred_size = int(min_pred_size)
        self.min_gt_size = int(min_gt_size)
        self.taus = np.array(taus, np.float64).reshape(-1)
        if not self.taus.size:
            raise ValueError("taus must not be empty")
        self.reset()

    # ----------------------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget all components."""
        self._siou: list[np.ndarray] = []
        self._ppv: list[np.ndarray] = []

    @property
    def siou(self) -> np.ndarray:
        """sIoU of every GT component counted so far, frame by frame."""
        return np.concatenate([np.zeros(0), *self._siou])

    @property
    def ppv(self) -> np.ndarray:
        """PPV of every predicted component counted so far, frame by frame."""
        return np.concatenate([np.zeros(0), *self._ppv])

    def _config(self) -> dict[str, np.ndarray]:
        return {
            "threshold": np.asarray(self.threshold),
            "min_pred_size": np.asarray(self.min_pred_size),
            "min_gt_size": np.asarray(self.min_gt_size),
            "taus": self.taus,
        }

    def _same_config(self, config: dict[str, Any]) -> bool:
        return all(np.array_equal(np.asarray(config[k]), v) for k, v in self._config().items())

    def state_dict(self) -> dict[str, np.ndarray]:
        """``np.savez``-friendly state: the configuration and the per-component values."""
        return {**self._config(), "siou": self.siou, "ppv": self.ppv}

    def load_state_dict(self, state: dict[str, Any]) -> ComponentMetric:
        """Replace the values with ``state`` (from :meth:`state_dict`); the configuration
        (threshold, size filters, taus) must match."""
        if not self._same_config(state):
            raise ValueError("state has a different threshold, size filters or taus")
        self._siou = [np.asarray(state["siou"], np.float64).reshape(-1)]
        self._ppv = [np.asarray(state["ppv"], np.float64).reshape(-1)]
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ComponentMetric:
        """A new metric holding ``state``."""
        metric = cls(
            float(state["threshold"]),
            int(state["min_pred_size"]),
            int(state["min_gt_size"]),
            np.asarray(state["taus"]),
        )
        return metric.load_state_dict(state)

    def merge(self, other: ComponentMetric) -> ComponentMetric:
        """Add the components of ``other`` (same configuration); returns ``self``."""
        if not isinstance(other, ComponentMetric) or not self._same_config(other._config()):
            raise ValueError("merge needs a ComponentMetric with the same configuration")
        self._siou.append(other.siou)
        self._ppv.append(other.ppv)
        return self

    # ---------------------------------------------------------------------------- update

    def update(self, scores: Any, labels: Any) -> None:
        """Add the components of one frame ``(H, W)`` or of a batch of frames ``(N, H, W)``;
        numpy arrays or torch tensors. Raises ValueError on a shape mismatch, NaN scores or
        labels other than 0, 1 and 255 (nothing is added then)."""
        s, y = as_numpy(scores), as_numpy(labels)
        if s.shape != y.shape or s.ndim not in (2, 3):
            raise ValueError(
                f"scores {s.shape} and labels {y.shape} must be equal (H, W) or (N, H, W) shapes"
            )
        if s.dtype.kind not in "biuf":
            raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
        if y.dtype.kind not in "biu" or not np.isin(y, (0, 1, 255)).all():
            raise ValueError("labels must be integers 0 (inlier), 1 (anomaly) or 255 (void)")
        with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes +-inf
            s = np.asarray(s, np.float32)  # the rounding AnomalyMetric applies
        if np.isnan(s).any():
            raise ValueError("scores contain NaN")
        if s.ndim == 2:
            s, y = s[None], y[None]
        results = [self._frame(s[i], y[i]) for i in range(len(s))]
        for siou, ppv in results:
            self._siou.append(siou)
            self._ppv.append(ppv)

    def _frame(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sIoU of each GT component and PPV of each predicted component of one frame."""
        from scipy.ndimage import label  # ~0.2 s to import: only when components are counted

        void = labels == 255
        pred = (scores >= np.float64(self.threshold)) & ~void
        gt, n_gt = label(labels == 1, structure=_STRUCTURE)
        comp, n_pred = label(pred, structure=_STRUCTURE)
        if self.min_pred_size > 1:
            small = np.bincount(comp.ravel(), minlength=n_pred + 1) < self.min_pred_size
            small[0] = False
            comp[small[comp]] = 0
        roi = ~void
        if self.min_gt_size > 1:
            small = np.bincount(gt.ravel(), minlength=n_gt + 1) < self.min_gt_size
            small[0] = False
            roi &= ~small[gt]
        g, p = gt[roi], comp[roi]

        gt_size = np.bincount(g, minlength=n_gt + 1)
        pred_size = np.bincount(p, minlength=n_pred + 1)
        pred_on_gt = np.bincount(p[g > 0], minlength=n_pred + 1)
        background = pred_size - pred_on_gt  # |k̂ ∩ background| per predicted component
        both = (g > 0) & (p > 0)
        pairs = np.unique(g[both].astype(np.int64) * (n_pred + 1) + p[both])
        pair_gt, pair_pred = np.divmod(pairs, n_pred + 1)
        intersection = np.bincount(g[both], minlength=n_gt + 1)  # |k ∩ K̂(k)|
        k_hat_background = np.zeros(n_gt + 1, np.int64)  # |K̂(k) ∩ background|
        np.add.at(k_hat_background, pair_gt, background[pair_pred])

        gt_kept, pred_kept = gt_size > 0, pred_size > 0
        gt_kept[0] = pred_kept[0] = False
        siou = intersection[gt_kept] / (gt_size[gt_kept] + k_hat_background[gt_kept])
        ppv = pred_on_gt[pred_kept] / pred_size[pred_kept]
        return siou, ppv

    # --------------------------------------------------------------------------- compute

    def counts(self, taus: Any = None) -> dict[str, np.ndarray]:
        """``{"TP", "FN", "FP"}`` component counts per tau (default ``self.taus``):
        ``TP = #{sIoU >= tau}``, ``FN = #{sIoU < tau}``, ``FP = #{PPV < tau}``."""
        t = self.taus if taus is None else np.asarray(taus, np.float64).reshape(-1)
        siou, ppv = self.siou, self.ppv
        tp = (siou[None, :] >= t[:, None]).sum(axis=1)
        return {"TP": tp, "FN": siou.size - tp, "FP": (ppv[None, :] < t[:, None]).sum(axis=1)}

    def _f1(self, taus: Any = None) -> np.ndarray:
        """``F1_tau = 2 TP / (2 TP + FN + FP)`` per tau; NaN where the denominator is 0."""
        c = self.counts(taus)
        denominator = 2 * c["TP"] + c["FN"] + c["FP"]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denominator > 0, 2 * c["TP"] / denominator, np.nan)

    def compute(self) -> dict[str, float]:
        """``{"sIoU", "PPV", "mean_F1", "F1_25", "F1_50", "F1_75", "threshold"}``; NaN where
        undefined (sIoU without GT components, PPV without predicted components, F1 without
        either). ``F1_25/50/75`` are at tau = 0.25, 0.5, 0.75 whatever ``taus`` is."""
        siou, ppv = self.siou, self.ppv
        f1 = self._f1()
        f1_25, f1_50, f1_75 = self._f1([0.25, 0.5, 0.75])
        nan = float("nan")
        return {
            "sIoU": float(siou.mean()) if siou.size else nan,
            "PPV": float(ppv.mean()) if ppv.size else nan,
            "mean_F1": float(f1.mean()),
            "F1_25": float(f1_25),
            "F1_50": float(f1_50),
            "F1_75": float(f1_75),
            "threshold": self.threshold,
        }

    def __repr__(self) -> str:
        return (
            f"ComponentMetric(threshold={self.threshold}, min_pred_size={self.min_pred_size}, "
            f"min_gt_size={self.min_gt_size}, gt_components={self.siou.size}, "
            f"pred_components={self.ppv.size})"
        )
