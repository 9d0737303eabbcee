"""Per-image-mean aggregation of the pixel anomaly metrics (the Hendrycks CAOS protocol).

For comparison with numbers published that way (StreetHazards, BDD-Anomaly in
``hendrycks/anomaly-seg: eval_ood.py``): AP, AUROC and FPR95 are computed on each frame on its
own and averaged over the frames that have both anomaly and inlier pixels (frames without
anomalies are skipped, as there). owsbench's default stays pooled over the whole split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .pixel import AnomalyMetric


class PerImageAnomalyMetric:
    """Mean over frames of per-frame AP / AUROC / FPR95 (frames lacking either class skipped)."""

    def __init__(self, fpr_rule: str = "first", bits: int = 24) -> None:
        self.fpr_rule = fpr_rule
        self.bits = bits
        self.values: list[dict[str, float]] = []

    def update(self, scores: Any, labels: Any) -> None:
        frame = AnomalyMetric(self.bits)
        frame.update(scores, labels)
        if frame.num_positives and frame.num_negatives:
            self.values.append(frame.compute(fpr_rule=self.fpr_rule))

    def merge(self, other: PerImageAnomalyMetric) -> PerImageAnomalyMetric:
        self.values.extend(other.values)
        return self

    def compute(self) -> dict[str, float]:
        """``{"AP", "AUROC", "FPR95"}`` means over the counted frames (NaN when none counted)."""
        if not self.values:
            return {"AP": float("nan"), "AUROC": float("nan"), "FPR95": float("nan")}
        return {k: float(np.mean([v[k] for v in self.values])) for k in ("AP", "AUROC", "FPR95")}
