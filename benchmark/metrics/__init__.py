"""Streaming, mergeable pixel metrics: anomaly (AP, AUROC, FPR95) and closed-set (mIoU).

Importing this package loads numpy only; torch tensors are accepted by duck typing.
"""

from .pixel import AnomalyMetric
from .semantic import SemanticMetric

# Recorded in every result row. Change it whenever a metric definition (formula, binning,
# void handling, default bits) changes, so that rows computed differently never get compared.
METRIC_VERSION = "pixel-v1"

__all__ = ["METRIC_VERSION", "AnomalyMetric", "SemanticMetric"]
