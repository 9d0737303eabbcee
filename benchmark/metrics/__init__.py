"""Streaming, mergeable metrics: pixel anomaly (AP, AUROC, FPR95), SMIYC component (sIoU, PPV,
component F1), closed-set (mIoU) and novel-class discovery.

Importing this package loads numpy only (scipy is imported on the first component update); torch
tensors are accepted by duck typing.
"""

from .components import ComponentMetric
from .discovery import DiscoveryMetric
from .objects import ObjectCompleteness
from .pixel import AnomalyMetric
from .semantic import SemanticMetric

# Recorded in every result row. Change it whenever a metric definition (formula, binning,
# void handling, default bits) changes, so that rows computed differently never get compared.
METRIC_VERSION = "pixel-v1"

__all__ = [
    "METRIC_VERSION",
    "AnomalyMetric",
    "ComponentMetric",
    "DiscoveryMetric",
    "ObjectCompleteness",
    "SemanticMetric",
]
