"""Every registered id: methods, segmenters, datasets and metrics (lazy targets, no torch here)."""

from __future__ import annotations

from owsbench.registry import Registry

METHODS = Registry("method")
METHODS.register("msp", "owsbench.methods.posthoc:MSP", "maximum softmax probability: 1 - max p")
METHODS.register("maxlogit", "owsbench.methods.posthoc:MaxLogit", "negated maximum logit")
METHODS.register("entropy", "owsbench.methods.posthoc:Entropy", "softmax entropy / log K")
METHODS.register("energy", "owsbench.methods.posthoc:Energy", "free energy -T logsumexp(z/T)")
METHODS.register(
    "sml", "owsbench.methods.sml:SML", "standardized max logits + boundary suppression, smoothing"
)

SEGMENTERS = Registry("segmenter")
SEGMENTERS.register(
    "deeplabv3plus",
    "owsbench.methods.nn.smp_segmenter:SmpSegmenter",
    "DeepLabV3+ with a ResNet-18 encoder (segmentation-models-pytorch, random init)",
)
DEFAULT_SEGMENTER = "deeplabv3plus"

DATASETS = Registry("dataset")
DATASETS.register(
    "synthstreets",
    "owsbench.datasets.synthstreets:SynthStreets",
    "procedural road scenes (Cityscapes classes) with unseen-family anomalies; no download",
)

METRICS = Registry("metric")
METRICS.register("AP", "owsbench.metrics.pixel:AnomalyMetric", "average precision, step sum (↑)")
METRICS.register("AUROC", "owsbench.metrics.pixel:AnomalyMetric", "area under ROC, trapezoid (↑)")
METRICS.register(
    "FPR95",
    "owsbench.metrics.pixel:AnomalyMetric",
    "FPR at the first threshold with TPR >= 0.95 (↓)",
)
METRICS.register(
    "mIoU", "owsbench.metrics.semantic:SemanticMetric", "mean IoU over known classes present (↑)"
)
